"""Writing a :class:`~fuse4seg.inference.predictor.CasePrediction` as NIfTI files.

Per case, in ``out_dir``:

* ``<case>_seg.nii.gz`` (``<case>.nii.gz`` with ``naming="nnunet"``): uint8 labels in the
  input's convention (ET = 4 for BraTS 2018-2022 naming, 3 for 2023);
* ``<case>_fused.nii.gz``: the fused image in ``[0, 1]``, float32 or uint8 with a 1/255 slope
  (only for methods with one);
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

__all__ = ["NAMINGS", "FUSED_DTYPES", "output_paths", "write_prediction"]


#: output naming schemes: segmentation file name per case
NAMINGS: tuple[str, ...] = ("fuse4seg", "nnunet")
#: data types of the fused volume: float32, or uint8 with scl_slope 1/255 (4x smaller)
FUSED_DTYPES: tuple[str, ...] = ("float32", "uint8")


def output_paths(case_id: str, out_dir: str | Path, naming: str = "fuse4seg") -> dict[str, Path]:
    """Final output paths of a case: keys ``seg``, ``fused``, ``prob``.

    ``naming="fuse4seg"``: ``<case>_seg.nii.gz``; ``"nnunet"``: ``<case>.nii.gz`` (nnU-Net's
    predictions and the BraTS submission format). Fused and probability files are
    ``<case>_fused.nii.gz`` / ``<case>_prob.nii.gz`` in both.
    """
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")
    out_dir = Path(out_dir)
    seg = f"{case_id}.nii.gz" if naming == "nnunet" else f"{case_id}_seg.nii.gz"
    return {
        "seg": out_dir / seg,
        "fused": out_dir / f"{case_id}_fused.nii.gz",
        "prob": out_dir / f"{case_id}_prob.nii.gz",
    }


def write_prediction(
    pred: CasePrediction,
    out_dir: str | Path,
    naming: str = "fuse4seg",
    fused_dtype: str = "float32",
) -> list[Path]:
    """Write the outputs present in ``pred`` (atomically); returns the paths written.

    ``fused_dtype="uint8"`` stores ``round(255 x)`` with ``scl_slope = 1/255``: NIfTI readers
    (nibabel ``get_fdata``, ITK, 3D Slicer) see [0, 1] again, to within 1/510. The
    segmentation is written last, so its presence marks a finished case.
    """
    if fused_dtype not in FUSED_DTYPES:
        raise ValueError(f"fused_dtype must be one of {FUSED_DTYPES}, got {fused_dtype!r}")
    paths = output_paths(pred.case.case_id, out_dir, naming)
    written = []
    if pred.fused is not None:
        if fused_dtype == "uint8":
            data = np.rint(np.clip(pred.fused, 0.0, 1.0) * 255.0).astype(np.uint8)
            save_volume(data, paths["fused"], pred.affine, pred.header, slope=1.0 / 255.0)
        else:
            save_volume(pred.fused.astype(np.float32), paths["fused"], pred.affine, pred.header)
        written.append(paths["fused"])
    if pred.probabilities is not None:
        save_volume(pred.probabilities.astype(np.float32), paths["prob"], pred.affine, pred.header)
        written.append(paths["prob"])
    save_segmentation(pred.seg, paths["seg"], pred.affine, pred.case.et_label, pred.header)
    written.append(paths["seg"])
    return written
