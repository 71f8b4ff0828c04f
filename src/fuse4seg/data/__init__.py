"""BraTS data layer: discovery and checked loading, label conventions, phantom, prepare store.

Public API::

    discover_cases(path) -> list[BratsCase]
    load_case(case, modalities=None) -> LoadedCase
    to_canonical_labels(seg, et_label) / from_canonical_labels(seg, et_label)
    generate_phantom_case(shape, rng) / write_phantom_dataset(out_dir, cases, shape, seed)
    prepare_dataset(input_dir, output_dir, PrepareOptions(...)) -> PrepareResult
    PreparedStore(prep_dir), SliceDataset(store, split), PatchDataset(store, split, patch_size)
    make_split(case_ids, fractions, seed), assert_patient_level_split(manifest)
    make_folds(case_ids, k, seed) / write_folds(prep_dir, k): K-fold CV (splits_final.json);
    PreparedStore(prep_dir).fold(i): a view with fold i's train / val cases
    VolumeStore, InMemoryVolumeStore, phantom_store, PatchSampler: volume stores and the
    random 3D patch sampler of RMR-Fusion (``fuse4seg.data.volume_store``)

See docs/data.md.
"""

from __future__ import annotations

from fuse4seg.data.discovery import (
    MODALITIES,
    NAMING_SUFFIXES,
    BratsCase,
    discover_cases,
    expected_filename,
    match_brats_file,
)
from fuse4seg.data.labels import (
    CANONICAL_LABELS,
    EDITION_LABELS,
    LABEL_NAMES,
    NAMINGS,
    NUM_CLASSES,
    REGIONS,
    et_label_for,
    from_canonical_labels,
    region_mask,
    to_canonical_labels,
)
from fuse4seg.data.loading import (
    AFFINE_TOLERANCE,
    LoadedCase,
    load_case,
    read_nifti,
    save_segmentation,
    save_volume,
)
from fuse4seg.data.normalise import normalise_for_model
from fuse4seg.data.phantom import (
    TISSUE_CONTRAST,
    TISSUES,
    generate_phantom_case,
    phantom_case_id,
    write_phantom_case,
    write_phantom_dataset,
)
from fuse4seg.data.prepare import (
    PrepareOptions,
    PrepareResult,
    prepare_case,
    prepare_dataset,
    write_folds,
)
from fuse4seg.data.splits import (
    FOLDS_NAME,
    SPLITS,
    assert_patient_level_split,
    check_folds,
    make_folds,
    make_split,
)
from fuse4seg.data.store import PreparedStore

#: torch-dependent names, imported on first use so that ``import fuse4seg.data`` (and the
#: ``phantom`` / ``prepare`` commands) do not pay for importing torch
_LAZY = {
    "augment": "fuse4seg.data.augmentation",
    "PatchDataset": "fuse4seg.data.datasets",
    "SliceDataset": "fuse4seg.data.datasets",
    "open_store": "fuse4seg.data.datasets",
    "tumour_oversampling_weights": "fuse4seg.data.datasets",
    "VolumeStore": "fuse4seg.data.volume_store",
    "InMemoryVolumeStore": "fuse4seg.data.volume_store",
    "PatchSampler": "fuse4seg.data.volume_store",
    "phantom_store": "fuse4seg.data.volume_store",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fuse4seg.data' has no attribute {name!r}")


__all__ = [
    "AFFINE_TOLERANCE",
    "BratsCase",
    "CANONICAL_LABELS",
    "EDITION_LABELS",
    "FOLDS_NAME",
    "InMemoryVolumeStore",
    "LABEL_NAMES",
    "LoadedCase",
    "MODALITIES",
    "NAMINGS",
    "NAMING_SUFFIXES",
    "NUM_CLASSES",
    "PatchDataset",
    "PatchSampler",
    "PrepareOptions",
    "PrepareResult",
    "PreparedStore",
    "REGIONS",
    "SPLITS",
    "SliceDataset",
    "TISSUES",
    "TISSUE_CONTRAST",
    "VolumeStore",
    "assert_patient_level_split",
    "augment",
    "check_folds",
    "discover_cases",
    "et_label_for",
    "expected_filename",
    "from_canonical_labels",
    "generate_phantom_case",
    "load_case",
    "make_folds",
    "make_split",
    "normalise_for_model",
    "match_brats_file",
    "open_store",
    "phantom_case_id",
    "phantom_store",
    "prepare_case",
    "prepare_dataset",
    "read_nifti",
    "region_mask",
    "save_segmentation",
    "save_volume",
    "to_canonical_labels",
    "tumour_oversampling_weights",
    "write_phantom_case",
    "write_folds",
    "write_phantom_dataset",
]
