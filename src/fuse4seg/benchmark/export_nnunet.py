"""Export a BraTS folder or a prepared store as an nnU-Net v2 raw dataset.

Layout written (nnU-Net v2 "raw" format)::

    DatasetXXX_Name/
      dataset.json
      imagesTr/<case>_0000.nii.gz ... <case>_000{C-1}.nii.gz    (labelled cases)
      labelsTr/<case>.nii.gz
      imagesTs/<case>_0000.nii.gz ...                           (unlabelled / test cases)
      labelsTs/<case>.nii.gz                                    (test cases that have labels;
                                                                 not read by nnU-Net, for scoring)
      fuse4seg_export.json                                      (the export's arguments)

Images are either the ``M`` stacked modalities (``C = M`` channels, named after the
modalities) or, with a fusion model or rule, the single fused channel (``C = 1``, named
``fused``), fusion applied slice-wise (axial slices ``vol[:, :, z]``) to the volume.

Labels (``label_mode``):

* ``"regions"`` (default; nnU-Net's own BraTS conversion, ``Dataset137_BraTS2021``): label
  files hold ED = 1, NCR = 2, ET = 3 and ``dataset.json`` declares the overlapping BraTS regions
  ``whole tumor = [1, 2, 3]``, ``tumor core = [2, 3]``, ``enhancing tumor = [3]`` with
  ``regions_class_order = [1, 2, 3]``; nnU-Net then trains sigmoid region outputs and its
  exported predictions come back in the ED/NCR/ET = 1/2/3 convention
  (:func:`nnunet_to_canonical_labels` converts them to fuse4seg's canonical labels).
* ``"labels"``: plain mutually exclusive labels in fuse4seg's canonical convention
  (0 background, 1 NCR, 2 ED, 3 ET), softmax training.

Where cases go: from a BraTS folder, every case with a segmentation goes to ``imagesTr``,
cases without one to ``imagesTs``. From a prepared store, the ``train`` and ``val`` splits go
to ``imagesTr`` (nnU-Net makes its own 5-fold split of them) and the ``test`` split to
``imagesTs`` with its labels in ``labelsTs``, so the store's patient-level test set stays
unseen by nnU-Net.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fuse4seg.benchmark.volumes import VolumeCase, iter_volume_cases
from fuse4seg.data.loading import save_volume
from fuse4seg.errors import ConfigError, Fuse4SegError, InputError
from fuse4seg.io.atomic import save_json_atomic

__all__ = [
    "LABEL_MODES",
    "DATASET_NAME_PATTERN",
    "NnunetExportResult",
    "canonical_to_nnunet_labels",
    "nnunet_to_canonical_labels",
    "build_dataset_json",
    "check_dataset_folder",
    "export_nnunet",
]

LABEL_MODES = ("regions", "labels")
#: nnU-Net requires dataset folders named ``DatasetXXX_Name`` (3-digit id)
DATASET_NAME_PATTERN = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")

# canonical (0 bg, 1 NCR, 2 ED, 3 ET) -> nnU-Net BraTS convention (0 bg, 1 ED, 2 NCR, 3 ET)
_TO_NNUNET = np.array([0, 2, 1, 3], dtype=np.uint8)
_FROM_NNUNET = np.array([0, 2, 1, 3], dtype=np.uint8)  # the swap is its own inverse

#: a fuser maps ``(M, X, Y, Z)`` float32 volumes (as read from the source) to ``(X, Y, Z)``
VolumeFuser = Callable[[VolumeCase], np.ndarray]


def _remap(seg: np.ndarray, table: np.ndarray) -> np.ndarray:
    seg = np.asarray(seg)
    if seg.size and (int(seg.min()) < 0 or int(seg.max()) > 3):
        raise ValueError(f"labels must be in 0..3, found range [{seg.min()}, {seg.max()}]")
    return table[seg.astype(np.intp)]


def canonical_to_nnunet_labels(seg: np.ndarray) -> np.ndarray:
    """Canonical labels (1 NCR, 2 ED, 3 ET) -> nnU-Net's BraTS labels (1 ED, 2 NCR, 3 ET)."""
    return _remap(seg, _TO_NNUNET)


def nnunet_to_canonical_labels(seg: np.ndarray) -> np.ndarray:
    """nnU-Net's BraTS labels (1 ED, 2 NCR, 3 ET) -> canonical labels (1 NCR, 2 ED, 3 ET)."""
    return _remap(seg, _FROM_NNUNET)


def build_dataset_json(
    channel_names: Sequence[str],
    num_training: int,
    label_mode: str = "regions",
    name: str = "",
    description: str = "",
) -> dict:
    """The ``dataset.json`` dict of nnU-Net v2 for a BraTS dataset.

    Args:
        channel_names: one name per input channel (``channel_names`` maps ``"0"``, ``"1"``...).
        num_training: number of cases in ``imagesTr``.
        label_mode: ``"regions"`` or ``"labels"`` (see the module docstring).
    """
    if label_mode not in LABEL_MODES:
        raise ConfigError(f"label mode must be one of {LABEL_MODES}, got {label_mode!r}")
    if not channel_names:
        raise ValueError("channel_names must not be empty")
    if label_mode == "regions":
        labels: dict = {
            "background": 0,
            "whole tumor": [1, 2, 3],
            "tumor core": [2, 3],
            "enhancing tumor": [3],
        }
    else:
        labels = {"background": 0, "NCR": 1, "ED": 2, "ET": 3}
    out: dict = {
        "channel_names": {str(i): str(c) for i, c in enumerate(channel_names)},
        "labels": labels,
        "numTraining": int(num_training),
        "file_ending": ".nii.gz",
    }
    if label_mode == "regions":
        out["regions_class_order"] = [1, 2, 3]
    if name:
        out["name"] = name
    if description:
        out["description"] = description
    return out


def check_dataset_folder(out_dir: str | Path) -> tuple[int, str]:
    """Validate ``.../DatasetXXX_Name``; returns ``(id, name)`` or raises InputError."""
    out_dir = Path(out_dir)
    m = DATASET_NAME_PATTERN.match(out_dir.name)
    if m is None:
        raise InputError(
            out_dir,
            "nnU-Net needs the output folder to be named DatasetXXX_Name "
            "(3-digit id, e.g. nnUNet_raw/Dataset501_BraTSFused)",
        )
    return int(m.group(1)), m.group(2)


@dataclass
class NnunetExportResult:
    """What :func:`export_nnunet` wrote: case ids per folder and the failed cases."""

    out_dir: Path
    training: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    dataset_json: dict = field(default_factory=dict)


def _write_case(
    case: VolumeCase,
    out_dir: Path,
    images_sub: str,
    labels_sub: str | None,
    fuser: VolumeFuser | None,
    label_mode: str,
) -> None:
    if fuser is not None:
        fused = np.asarray(fuser(case), dtype=np.float32)
        if fused.shape != case.images.shape[1:]:
            raise ValueError(f"fuser returned {fused.shape}, expected {case.images.shape[1:]}")
        channels = [fused]
    else:
        channels = [np.asarray(c, dtype=np.float32) for c in case.images]
    for i, vol in enumerate(channels):
        save_volume(vol, out_dir / images_sub / f"{case.case_id}_{i:04d}.nii.gz", case.affine)
    if labels_sub is not None and case.seg is not None:
        seg = case.seg if label_mode == "labels" else canonical_to_nnunet_labels(case.seg)
        save_volume(
            np.asarray(seg, dtype=np.uint8),
            out_dir / labels_sub / f"{case.case_id}.nii.gz",
            case.affine,
        )


def export_nnunet(
    source: str | Path,
    out_dir: str | Path,
    modalities: Sequence[str] | None = None,
    fuser: VolumeFuser | None = None,
    fused_name: str = "fused",
    label_mode: str = "regions",
    log: Callable[[str], None] | None = print,
    extra_info: dict | None = None,
) -> NnunetExportResult:
    """Write ``source`` (BraTS folder or prepared store) as an nnU-Net v2 raw dataset.

    Args:
        source: a BraTS case folder / folder of cases, or a ``fuse4seg prepare`` store.
        out_dir: ``.../DatasetXXX_Name`` (created).
        modalities: canonical modalities to export (default: a store's modalities, or
            ``("t1", "t1ce", "t2", "flair")`` for a BraTS folder).
        fuser: maps a :class:`VolumeCase` (images ``(M, X, Y, Z)``) to the fused ``(X, Y, Z)``
            volume; None writes the ``M`` stacked channels.
        fused_name: channel name of the fused channel.
        label_mode: ``"regions"`` (nnU-Net's BraTS convention) or ``"labels"``.
        log: progress/failure printer (None: silent).
        extra_info: merged into ``fuse4seg_export.json``.

    Returns:
        :class:`NnunetExportResult`. A case that fails (bad file) is recorded in ``failed``
        and the export continues; ``dataset.json`` counts the cases actually written.

    Raises:
        InputError / ConfigError: bad output folder name, unreadable source, bad label mode.
    """
    out_dir = Path(out_dir)
    check_dataset_folder(out_dir)
    if label_mode not in LABEL_MODES:
        raise ConfigError(f"label mode must be one of {LABEL_MODES}, got {label_mode!r}")
    result = NnunetExportResult(out_dir=out_dir)
    channel_names: list[str] | None = None
    for item in iter_volume_cases(source, modalities):
        if isinstance(item, tuple):  # (case_id, error) for a case that could not be read
            cid, err = item
            result.failed[cid] = err
            if log:
                log(f"FAILED {cid}: {err}")
            continue
        case = item
        if channel_names is None:
            channel_names = [fused_name] if fuser is not None else list(case.modalities)
        to_train = case.seg is not None and case.split in (None, "train", "val")
        try:
            if to_train:
                _write_case(case, out_dir, "imagesTr", "labelsTr", fuser, label_mode)
                result.training.append(case.case_id)
            else:
                _write_case(case, out_dir, "imagesTs", "labelsTs", fuser, label_mode)
                result.test.append(case.case_id)
        except Fuse4SegError as exc:
            result.failed[case.case_id] = str(exc)
            if log:
                log(f"FAILED {case.case_id}: {exc}")
            continue
        if log:
            where = "imagesTr" if to_train else "imagesTs"
            log(f"{case.case_id} -> {where} ({len(channel_names)} channel(s))")
    if channel_names is None:
        raise InputError(Path(source), "no case could be exported")
    ds_id, ds_name = check_dataset_folder(out_dir)
    result.dataset_json = build_dataset_json(
        channel_names,
        len(result.training),
        label_mode,
        name=ds_name,
        description="exported by fuse4seg "
        + ("(fused single channel)" if fuser is not None else "(stacked modalities)"),
    )
    save_json_atomic(result.dataset_json, out_dir / "dataset.json")
    info = {
        "source": str(source),
        "dataset_id": ds_id,
        "label_mode": label_mode,
        "channels": channel_names,
        "training": result.training,
        "test": result.test,
        "failed": result.failed,
    }
    info.update(extra_info or {})
    save_json_atomic(info, out_dir / "fuse4seg_export.json")
    return result
