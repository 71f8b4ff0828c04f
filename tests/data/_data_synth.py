"""Helpers for tests/data: tiny synthetic BraTS-like NIfTI cases (imported as a module)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from fuse4seg.data.discovery import MODALITIES, expected_filename

SHAPE = (20, 18, 10)


def tiny_volumes(shape=SHAPE, seed=0, et_label=4):
    """Four positive modality volumes with a zero border and a seg with labels 0,1,2,et."""
    rng = np.random.default_rng(seed)
    images = {}
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 1:-1] = True
    for k, m in enumerate(MODALITIES):
        vol = rng.uniform(50, 500, shape).astype(np.float32) * (k + 1)
        images[m] = np.where(brain, np.round(vol), 0).astype(np.int16)
    seg = np.zeros(shape, np.uint8)
    seg[6:12, 6:12, 3:7] = 2
    seg[7:11, 7:11, 4:6] = et_label
    seg[8:10, 8:10, 4:6] = 1
    return images, seg


def write_case(
    root: Path,
    case_id: str = "Case_001",
    naming: str = "brats2021",
    shape=SHAPE,
    seed: int = 0,
    ext: str = ".nii.gz",
    skip: tuple[str, ...] = (),
    affine=None,
) -> Path:
    """Write a tiny valid case folder ``root/case_id``; returns the folder."""
    et = 4 if naming == "brats2021" else 3
    images, seg = tiny_volumes(shape, seed, et)
    folder = Path(root) / case_id
    folder.mkdir(parents=True, exist_ok=True)
    aff = np.diag([-1.0, -1.0, 1.0, 1.0]) if affine is None else affine
    for m, vol in list(images.items()) + [("seg", seg)]:
        if m in skip:
            continue
        name = expected_filename(case_id, naming, m, ext)
        nib.save(nib.Nifti1Image(vol, aff), str(folder / name))
    return folder


def overwrite(path: Path, data: np.ndarray, affine=None) -> None:
    """Replace a NIfTI file's data (keeping its affine unless given)."""
    aff = nib.load(str(path)).affine if affine is None else affine
    nib.save(nib.Nifti1Image(data, aff), str(path))
