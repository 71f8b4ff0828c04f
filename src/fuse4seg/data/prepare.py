"""``prepare``: turn BraTS cases into a :class:`~fuse4seg.data.store.PreparedStore`.

Per case: load and check the requested modalities and seg, normalise each modality to [0, 1]
(clip to the 0.5 / 99.5 percentiles of the non-zero brain voxels; brain = any modality
non-zero; background stays 0), keep the brain's contiguous axial z-range, scale in-plane
(``scale``), centre crop/pad to ``size`` around the brain, and write ``image.npy`` /
``label.npy`` atomically. The manifest is written last. A bad case is reported and skipped.

With ``folds`` (``--folds K``), ``splits_final.json`` (nnU-Net's K-fold format, see
:func:`fuse4seg.data.splits.make_folds`) is written over all prepared cases, just before the
manifest; :func:`write_folds` adds or replaces the folds of an existing store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fuse4seg import __version__
from fuse4seg.data.discovery import MODALITIES, BratsCase, discover_cases
from fuse4seg.data.loading import load_case
from fuse4seg.data.preprocess import (
    PERCENTILES,
    brain_centre,
    brain_mask,
    brain_z_range,
    centre_crop_or_pad,
    normalise_volume,
    resample_slices,
)
from fuse4seg.data.splits import (
    FOLDS_NAME,
    MIN_TRAIN_CASES,
    assert_patient_level_split,
    make_folds,
    make_split,
)
from fuse4seg.data.store import MANIFEST_NAME, STORE_FORMAT, STORE_VERSION, case_dir
from fuse4seg.errors import ConfigError, Fuse4SegError, InputError, OutputError
from fuse4seg.io.atomic import atomic_path, save_json_atomic
from fuse4seg.io.output_policy import check_output_location, claim_output_folder

__all__ = [
    "IMAGE_DTYPE",
    "PrepareOptions",
    "PrepareResult",
    "prepare_case",
    "prepare_dataset",
    "default_size",
    "write_folds",
]

#: on-disk dtype of the stored intensities (ample precision for [0, 1], half the I/O)
IMAGE_DTYPE = np.float16
#: in-plane side of BraTS volumes, the reference for the default ``size``
BRATS_SIDE = 240


def default_size(cases: list[BratsCase], scale: float) -> int:
    """Default in-plane size: the largest ``round(max(X, Y) * scale)`` over the cases' headers.

    Reads headers only (cheap); 240 * scale when no header is readable (BraTS volumes).
    """
    import nibabel as nib

    sides = []
    for case in cases:
        path = next(iter(case.files.values()), None)
        try:
            shape = nib.load(str(path)).shape if path is not None else None
        except Exception:  # unreadable: reported when the case is prepared
            shape = None
        if shape is not None and len(shape) >= 2:
            sides.append(int(round(max(shape[0], shape[1]) * scale)))
    return max(sides) if sides else int(round(BRATS_SIDE * scale))


@dataclass(frozen=True)
class PrepareOptions:
    """Options of one prepare run (recorded in the manifest)."""

    modalities: tuple[str, ...] = ("t1ce", "flair")
    size: int | None = None  # None: the largest scaled in-plane side of the input cases
    scale: float = 1.0
    seed: int = 0
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    folds: int | None = None  # K-fold CV over all cases (splits_final.json); None: no folds

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "split", tuple(float(f) for f in self.split))

    def validate(self) -> None:
        """Raise :class:`ConfigError` on an invalid option."""
        if not self.modalities:
            raise ConfigError("--modalities must name at least one modality")
        for m in self.modalities:
            if m not in MODALITIES:
                raise ConfigError(f"unknown modality {m!r}; choose from {' '.join(MODALITIES)}")
        if len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"--modalities repeats a modality: {list(self.modalities)}")
        if self.size is not None and self.size < 8:
            raise ConfigError(f"--size must be >= 8, got {self.size}")
        if not 0.05 <= self.scale <= 4.0:
            raise ConfigError(f"--scale must be in [0.05, 4], got {self.scale}")
        make_split([], self.split)  # checks the fractions
        if self.folds is not None and (
            isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2
        ):
            raise ConfigError(f"--folds must be an integer >= 2, got {self.folds!r}")


@dataclass
class PrepareResult:
    """Outcome of :func:`prepare_dataset`."""

    output: Path
    manifest: dict[str, Any] | None
    prepared: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every case was prepared."""
        return not self.failed and self.manifest is not None


def _save_npy(arr: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


def prepare_case(case: BratsCase, output: str | Path, options: PrepareOptions) -> dict[str, Any]:
    """Prepare one case into ``output/cases/<case_id>/``; returns its manifest entry.

    Raises:
        InputError: any loading problem (see :func:`fuse4seg.data.load_case`), or no seg.
    """
    if case.seg is None:
        raise InputError(case.folder, "no segmentation file (prepare needs labels)")
    loaded = load_case(case, options.modalities)
    vols = [loaded.images[m] for m in options.modalities]
    original_shape = [int(s) for s in vols[0].shape]
    mask = brain_mask(vols)
    z0, z1 = brain_z_range(mask)
    norm: dict[str, list[float]] = {}
    slabs = []
    for m, vol in zip(options.modalities, vols, strict=True):
        out, (lo, hi) = normalise_volume(vol[:, :, z0:z1], mask[:, :, z0:z1])
        norm[m] = [lo, hi]
        slabs.append(out)
        loaded.images[m] = None  # type: ignore[assignment]  # free memory early
    image = np.stack(slabs, axis=0).transpose(3, 0, 1, 2)  # (D, M, X, Y)
    del slabs
    seg = loaded.seg
    assert seg is not None
    label = np.ascontiguousarray(seg[:, :, z0:z1].transpose(2, 0, 1))  # (D, X, Y)
    image, label = resample_slices(image, label, options.scale)
    scaled_shape = [int(s) for s in image.shape[2:]]
    centre = brain_centre(image.max(axis=(0, 1)) > 0)
    size = options.size if options.size is not None else default_size([case], options.scale)
    image, offset = centre_crop_or_pad(image, size, centre)
    label, _ = centre_crop_or_pad(label, size, centre)
    folder = case_dir(output, case.case_id)
    folder.mkdir(parents=True, exist_ok=True)
    _save_npy(np.ascontiguousarray(image.astype(IMAGE_DTYPE)), folder / "image.npy")
    _save_npy(label.astype(np.uint8), folder / "label.npy")
    tumour = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
    counts = np.bincount(label.ravel(), minlength=4)
    return {
        "id": case.case_id,
        "source": str(case.folder),
        "naming": case.naming,
        "et_label": case.et_label,
        "modalities": list(options.modalities),
        "original_shape": original_shape,
        "affine": np.asarray(loaded.affine).tolist(),
        "spacing": [float(s) for s in loaded.spacing],
        "z_range": [z0, z1],
        "num_slices": int(image.shape[0]),
        "scaled_shape": scaled_shape,
        "crop_offset": [int(o) for o in offset],
        "normalisation": norm,
        "tumour_slices": [int(t) for t in tumour],
        "label_counts": [int(c) for c in counts],
        "split": None,
    }


def _prepare_one(args: tuple[BratsCase, str, PrepareOptions]) -> tuple[str, dict | None, str]:
    case, output, options = args
    try:
        return case.case_id, prepare_case(case, output, options), ""
    except OutputError:  # disk full / not writable: every later case would fail too
        raise
    except Fuse4SegError as exc:
        return case.case_id, None, str(exc)
    except MemoryError:
        return case.case_id, None, "out of memory"


def prepare_dataset(
    input_dir: str | Path,
    output_dir: str | Path,
    options: PrepareOptions | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> PrepareResult:
    """Prepare every case of ``input_dir`` into the store ``output_dir``.

    Bad cases are logged as ``FAILED <case>: <reason>`` and skipped; the manifest (cases,
    patient-level split, options) is written last and only if at least one case succeeded.

    Ambiguous case folders (see :func:`fuse4seg.data.discover_cases`) fail alone, like bad
    cases. The output follows :mod:`fuse4seg.io.output_policy`: never inside the input (nor
    holding it), and a non-empty folder only with ``overwrite``, which replaces the store's
    own files (``manifest.json``, ``cases/``, ``splits_final.json``) and nothing else.

    Raises:
        InputError: the input has no recognisable case, the output is a file, inside the
            input or holds it, or is not empty (or holds a store) and ``overwrite`` is False.
        OutputError: the disk is full or the output not writable (the store is left without
            a manifest, i.e. invalid).
        ConfigError: invalid options.
    """
    options = options or PrepareOptions()
    options.validate()
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    out = Path(output_dir)
    check_output_location(out, [input_dir], replaces_contents=True)
    if out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a folder")
    manifest_path = out / MANIFEST_NAME
    if manifest_path.exists() and not overwrite:
        raise InputError(out, "already holds a prepared store (use --overwrite to replace it)")
    problems: list[tuple[str, str]] = []  # ambiguous case folders: they fail alone
    cases = discover_cases(input_dir, problems=problems)
    if options.folds is not None:  # fail before any work when the folds cannot be made
        try:
            make_folds([c.case_id for c in cases], options.folds, options.seed)
        except ConfigError as exc:
            raise InputError(input_dir, str(exc)) from None
    if options.size is None:
        options = replace(options, size=default_size(cases, options.scale))
    claim_output_folder(out, overwrite, what="the store (manifest.json, cases/)")
    if overwrite:  # the old store stops being valid first; only the store's own files go
        manifest_path.unlink(missing_ok=True)
        (out / FOLDS_NAME).unlink(missing_ok=True)
        shutil.rmtree(out / "cases", ignore_errors=True)
    jobs = [(c, str(out), options) for c in cases]
    entries: dict[str, dict] = {}
    failed: dict[str, str] = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="prepare", unit="case")

    def record(cid: str, entry: dict | None, err: str) -> None:
        if entry is None:
            failed[cid] = err
            if log is not None:
                log(f"FAILED {cid}: {err}")
        else:
            entries[cid] = entry
        if bar is not None:
            bar.update(1)

    for name, message in problems:
        record(name, None, message)
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            record(*_prepare_one(job))
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs), os.cpu_count() or 1)) as ex:
            futures = [ex.submit(_prepare_one, job) for job in jobs]
            for fut in as_completed(futures):
                record(*fut.result())
    if bar is not None:
        bar.close()
    result = PrepareResult(output=out, manifest=None, failed=failed)
    if not entries:
        return result
    splits = make_split(sorted(entries), options.split, options.seed)
    for name, ids in splits.items():
        for cid in ids:
            entries[cid]["split"] = name
    manifest = {
        "format": STORE_FORMAT,
        "format_version": STORE_VERSION,
        "fuse4seg_version": __version__,
        "modalities": list(options.modalities),
        "size": options.size,
        "scale": options.scale,
        "seed": options.seed,
        "split_fractions": list(options.split),
        "image_dtype": np.dtype(IMAGE_DTYPE).name,
        "image_layout": "(D, M, H, W), H = NIfTI X, W = NIfTI Y, D = axial z0..z1-1",
        "label_layout": "(D, H, W) uint8 canonical: 0 bg, 1 NCR, 2 ED, 3 ET",
        "normalisation": {
            "method": "percentile clip then min-max to [0, 1], per volume and modality",
            "percentiles": list(PERCENTILES),
            "mask": "any modality non-zero; background stays 0",
        },
        "source": str(Path(input_dir)),
        "splits": splits,
        "failed": failed,
        "cases": [entries[cid] for cid in sorted(entries)],
    }
    assert_patient_level_split(manifest)
    folds_error = None
    if options.folds is not None:
        try:
            folds = make_folds(sorted(entries), options.folds, options.seed)
        except ConfigError as exc:  # failed cases left too few for K folds
            folds_error = str(exc)
            (out / FOLDS_NAME).unlink(missing_ok=True)
        else:
            save_json_atomic(folds, out / FOLDS_NAME)
    else:
        (out / FOLDS_NAME).unlink(missing_ok=True)  # no stale folds of a replaced store
    save_json_atomic(manifest, manifest_path)
    result.manifest = manifest
    result.prepared = sorted(entries)
    if folds_error is not None:
        raise InputError(out, f"store written without folds: {folds_error}")
    return result


def write_folds(
    prep_dir: str | Path,
    k: int,
    seed: int | None = None,
    overwrite: bool = False,
    min_train: int = MIN_TRAIN_CASES,
) -> list[dict[str, list[str]]]:
    """Add K-fold cross-validation folds (``splits_final.json``) to an existing store.

    The folds cover every case of the store (see :func:`fuse4seg.data.splits.make_folds`);
    the arrays and the manifest are not touched. Writing the same folds again is a no-op.

    Args:
        prep_dir: a ``fuse4seg prepare`` store.
        k: number of folds (>= 2).
        seed: shuffle seed (default: the store's ``--seed``).
        overwrite: replace different folds already in the store.

    Returns:
        The folds, ``[{"train": [...], "val": [...]}, ...]``.

    Raises:
        InputError: not a store, too few cases for ``k`` folds, or different folds already
            there and ``overwrite`` is False.
    """
    from fuse4seg.data.store import PreparedStore

    store = PreparedStore(prep_dir)
    if seed is None:
        seed = int(store.manifest.get("seed", 0))
    try:
        folds = make_folds(store.case_ids(), k, seed, min_train=min_train)
    except ConfigError as exc:
        raise InputError(store.root, str(exc)) from None
    path = store.folds_path
    if path.exists():
        try:
            old = store.folds
        except InputError:
            old = None  # unreadable: replaced only with overwrite
        if old == folds:
            return folds
        if not overwrite:
            what = f"{len(old)} different folds" if old is not None else "an invalid fold file"
            raise InputError(path, f"holds {what} (use --overwrite to replace them)")
    save_json_atomic(folds, path)
    return folds
