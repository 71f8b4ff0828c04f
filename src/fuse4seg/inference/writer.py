"""Writing a :class:`~fuse4seg.inference.predictor.CasePrediction` as NIfTI files.

Per case, in ``out_dir``:

* ``<case>_seg.nii.gz``: uint8 labels in the input's convention (ET = 4 for BraTS 2018-2022
  naming, 3 for 2023);
* ``<case>_fused.nii.gz``: float32 fused image in ``[0, 1]`` (only for methods with one);
* ``<case>_prob.nii.gz`` (optional): float32 ``(X, Y, Z, C)`` softmax probabilities, classes
  last in canonical order (0 background, 1 NCR, 2 ED, 3 ET).

All copy the header of the case's reference (first) modality, so shape, affine, voxel size
and qform/sform codes equal the input's; only the data type changes. Each file is written
to a hidden temporary name (``.tmp-*``) and renamed, so a killed run leaves complete files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fuse4seg.data import save_segmentation, save_volume
from fuse4seg.inference.predictor import CasePrediction

__all__ = ["output_paths", "write_prediction"]


def output_paths(case_id: str, out_dir: str | Path) -> dict[str, Path]:
    """Final output paths of a case: keys ``seg``, ``fused``, ``prob``."""
    out_dir = Path(out_dir)
    return {
        "seg": out_dir / f"{case_id}_seg.nii.gz",
        "fused": out_dir / f"{case_id}_fused.nii.gz",
        "prob": out_dir / f"{case_id}_prob.nii.gz",
    }


def write_prediction(pred: CasePrediction, out_dir: str | Path) -> list[Path]:
    """Write the outputs present in ``pred`` (atomically); returns the paths written.

    The segmentation is written last, so its presence marks a finished case.
    """
    paths = output_paths(pred.case.case_id, out_dir)
    written = []
    if pred.fused is not None:
        save_volume(pred.fused.astype(np.float32), paths["fused"], pred.affine, pred.header)
        written.append(paths["fused"])
    if pred.probabilities is not None:
        save_volume(pred.probabilities.astype(np.float32), paths["prob"], pred.affine, pred.header)
        written.append(paths["prob"])
    save_segmentation(pred.seg, paths["seg"], pred.affine, pred.case.et_label, pred.header)
    written.append(paths["seg"])
    return written
