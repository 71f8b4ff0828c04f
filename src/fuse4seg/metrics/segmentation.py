"""BraTS segmentation metrics: Dice, IoU, HD95, sensitivity, specificity, volumes.

Label maps use the canonical labels 0 background, 1 NCR, 2 ED, 3 ET (convert a file's labels
with ``fuse4seg.data.to_canonical_labels``). Scores are reported for the labels NCR, ED, ET
and the regions WT = {1, 2, 3} and TC = {1, 3} (the ET region equals the ET label). Works on
2D ``(H, W)`` and 3D ``(X, Y, Z)`` maps given as NumPy arrays or torch tensors.

Empty-mask conventions (BraTS practice): both empty -> Dice 1, IoU 1, HD95 0; one empty ->
Dice 0, IoU 0, HD95 = the diagonal of the volume in mm (373.13 on 240 x 240 x 155 at 1 mm).
Sensitivity is NaN when the reference is empty, specificity NaN when it fills the image.

This module is the package's one Dice implementation (:func:`dice`); the trainer's
validation, the predictor, ``benchmark seg``, the robustness benchmark and ``evaluate-seg``
all score with it. Two levels (:data:`DICE_LEVELS`, :func:`dice_scores`):

* ``case``: one Dice per class over the whole volume (3D Dice, the BraTS challenge's);
* ``slice``: 2D slice Dice, as 2D BraTS papers report it: Dice of each class on every axial
  slice, averaged over the slices where the ground truth **or** the prediction has any
  tumour label (label map non-empty); on such a slice a class absent from both scores 1.
  Slices empty in both are skipped (they would add a 1 for every class); a volume with no
  such slice scores 1. Note: this is not the mean over the slices that contain *that class*.

Tables use the column names ``<metric>_<class>`` (``Dice_WT``, ``HD95_ET``, ``Dice_mean``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "BRATS_CLASSES",
    "DICE_LEVELS",
    "LABEL_CLASSES",
    "SEG_METRICS",
    "binary_metrics",
    "column",
    "dice",
    "dice_scores",
    "slice_dice",
    "hd95",
    "compute_segmentation_metrics",
    "SegmentationMetrics",
]

#: name -> canonical labels forming the class/region, in report order.
BRATS_CLASSES: dict[str, tuple[int, ...]] = {
    "NCR": (1,),
    "ED": (2,),
    "ET": (3,),
    "WT": (1, 2, 3),
    "TC": (1, 3),
}
#: the three labels (no regions): the classes the paper scores and averages as ``Dice_mean``
LABEL_CLASSES: dict[str, tuple[int, ...]] = {
    name: BRATS_CLASSES[name] for name in ("NCR", "ED", "ET")
}
#: ``case``: 3D Dice per volume; ``slice``: 2D Dice per axial slice, averaged (see above)
DICE_LEVELS: tuple[str, ...] = ("case", "slice")
#: Per-class metric names returned by :func:`binary_metrics`.
SEG_METRICS: tuple[str, ...] = (
    "Dice", "IoU", "HD95", "Sensitivity", "Specificity", "VolPred_ml", "VolRef_ml",
)  # fmt: skip


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def column(metric: str, cls: str) -> str:
    """Table column of ``metric`` for class ``cls``: ``<metric>_<class>`` (``Dice_WT``)."""
    return f"{metric}_{cls}"


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice ``2 |P & R| / (|P| + |R|)`` of two boolean masks of any shape; 1.0 when both
    are empty (BraTS convention)."""
    pred = _to_numpy(pred).astype(bool)
    ref = _to_numpy(ref).astype(bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    denom = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    return 1.0 if denom == 0 else 2.0 * int(np.count_nonzero(pred & ref)) / denom


def slice_dice(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int], axis: int = -1) -> float:
    """2D slice Dice of the class ``labels`` of two label maps (3D, same shape).

    Dice of the class on each slice along ``axis`` (the axial axis: ``-1`` for NIfTI
    ``(X, Y, Z)``, ``0`` for stored ``(D, H, W)``), averaged over the slices where ``pred``
    or ``ref`` is non-empty (any label > 0); a kept slice where the class is absent from both
    scores 1; 1.0 when no slice is kept.
    """
    pred = np.moveaxis(_to_numpy(pred), axis, 0)
    ref = np.moveaxis(_to_numpy(ref), axis, 0)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    if pred.ndim != 3:
        raise ValueError(f"slice Dice needs 3D label maps, got shape {pred.shape}")
    kept = [z for z in range(pred.shape[0]) if pred[z].any() or ref[z].any()]
    if not kept:
        return 1.0
    return float(np.mean([dice(np.isin(pred[z], labels), np.isin(ref[z], labels)) for z in kept]))


def dice_scores(
    pred: np.ndarray,
    ref: np.ndarray,
    classes: Mapping[str, Sequence[int]] | None = None,
    level: str = "case",
    axis: int = -1,
) -> dict[str, float]:
    """Dice per class of two canonical label maps: ``{"Dice_<class>": value}``.

    Args:
        pred, ref: canonical label maps of the same shape.
        classes: ``{name: labels}``; default :data:`BRATS_CLASSES`.
        level: ``"case"`` (one Dice over the whole map) or ``"slice"`` (:func:`slice_dice`
            along ``axis``, 3D maps only).
        axis: the axial axis for ``level="slice"``.

    Raises:
        ValueError: unknown level, shapes differ.
    """
    if level not in DICE_LEVELS:
        raise ValueError(f"dice level must be one of {DICE_LEVELS}, got {level!r}")
    pred = _to_numpy(pred)
    ref = _to_numpy(ref)
    classes = BRATS_CLASSES if classes is None else classes
    if level == "slice":
        return {
            column("Dice", name): slice_dice(pred, ref, labels, axis)
            for name, labels in classes.items()
        }
    return {
        column("Dice", name): dice(np.isin(pred, labels), np.isin(ref, labels))
        for name, labels in classes.items()
    }


def _check_spacing(spacing: Sequence[float] | float, ndim: int) -> tuple[float, ...]:
    sp = (float(spacing),) * ndim if np.isscalar(spacing) else tuple(float(s) for s in spacing)
    if len(sp) == 3 and ndim == 2:
        sp = sp[:2]
    if len(sp) != ndim or any(not s > 0 for s in sp):
        raise ValueError(f"spacing must be {ndim} positive numbers, got {spacing}")
    return sp


def _edges(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: ``mask XOR erode(mask)`` (outside the array counts as background)."""
    return mask ^ ndimage.binary_erosion(mask, border_value=0)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float = 1.0) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm) between two binary masks.

    As MONAI's ``HausdorffDistanceMetric(percentile=95)``: boundary voxels by erosion, the
    Euclidean distance (with ``spacing``) from each boundary voxel of one mask to the nearest
    boundary voxel of the other (SciPy distance transform on the bounding box of both masks),
    the 95th percentile (linear interpolation) of each direction, and their maximum.

    Args:
        pred, ref: boolean masks of the same shape, 2D or 3D.
        spacing: voxel size in mm per axis (or one number).

    Returns:
        HD95 in mm; 0 if both are empty, the volume diagonal if exactly one is empty.
    """
    pred = _to_numpy(pred).astype(bool)
    ref = _to_numpy(ref).astype(bool)
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    sp = _check_spacing(spacing, pred.ndim)
    has_p, has_r = bool(pred.any()), bool(ref.any())
    if not has_p and not has_r:
        return 0.0
    if has_p != has_r:
        return math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, sp, strict=True)))
    union = pred | ref
    box = []
    for axis in range(pred.ndim):
        other = tuple(a for a in range(pred.ndim) if a != axis)
        idx = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(int(idx[0]) - 1, 0), int(idx[-1]) + 2))
    box_t = tuple(box)
    ep, er = _edges(pred[box_t]), _edges(ref[box_t])
    d_pr = ndimage.distance_transform_edt(~er, sampling=sp)[ep]
    d_rp = ndimage.distance_transform_edt(~ep, sampling=sp)[er]
    return float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)))


def binary_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float = 1.0
) -> dict[str, float]:
    """All metrics of one binary class: ``{name: value}`` for ``SEG_METRICS``.

    Volumes are voxel counts times the voxel volume, in ml (cm^3) for 3D masks in mm (for 2D
    masks: mm^2 / 1000).
    """
    pred = _to_numpy(pred).astype(bool)
    ref = _to_numpy(ref).astype(bool)
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    sp = _check_spacing(spacing, pred.ndim)
    tp = float(np.count_nonzero(pred & ref))
    n_p, n_r = float(np.count_nonzero(pred)), float(np.count_nonzero(ref))
    fp, fn = n_p - tp, n_r - tp
    tn = float(pred.size) - tp - fp - fn
    empty = n_p + n_r == 0
    voxel_ml = float(np.prod(sp)) / 1000.0
    return {
        "Dice": dice(pred, ref),
        "IoU": 1.0 if empty else tp / (tp + fp + fn),
        "HD95": hd95(pred, ref, sp),
        "Sensitivity": tp / n_r if n_r > 0 else float("nan"),
        "Specificity": tn / (tn + fp) if tn + fp > 0 else float("nan"),
        "VolPred_ml": n_p * voxel_ml,
        "VolRef_ml": n_r * voxel_ml,
    }


def compute_segmentation_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | float = (1.0, 1.0, 1.0),
    classes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of one case for each BraTS label / region.

    Args:
        pred, ref: canonical label maps (2D or 3D, same shape), values 0..3.
        spacing: voxel size in mm (the NIfTI header's zooms).
        classes: ``{name: labels}``; default :data:`BRATS_CLASSES` (NCR, ED, ET, WT, TC).

    Returns:
        ``{class: {metric: value}}``.

    Raises:
        ValueError: shapes differ or spacing is invalid.
    """
    pred = _to_numpy(pred)
    ref = _to_numpy(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    if pred.ndim not in (2, 3):
        raise ValueError(f"label maps must be 2D or 3D, got shape {pred.shape}")
    sp = _check_spacing(spacing, pred.ndim)
    classes = BRATS_CLASSES if classes is None else classes
    return {
        name: binary_metrics(np.isin(pred, labels), np.isin(ref, labels), sp)
        for name, labels in classes.items()
    }


class SegmentationMetrics:
    """Accumulate per-case segmentation metrics and aggregate them (mean and std).

    Example::

        sm = SegmentationMetrics()
        sm.update("case1", pred, ref, spacing=(1, 1, 1))
        sm.rows()        # [{"case": "case1", "Dice_WT": ..., ...}]
        sm.aggregate()   # {"Dice_WT": {"mean": ..., "std": ..., "n": ...}, ...}
    """

    def __init__(self, classes: Mapping[str, Sequence[int]] | None = None) -> None:
        self.classes = dict(BRATS_CLASSES if classes is None else classes)
        self.reset()

    def reset(self) -> None:
        """Forget all cases."""
        self._rows: list[dict[str, float | str]] = []

    def update(
        self,
        case_id: str,
        pred: np.ndarray,
        ref: np.ndarray,
        spacing: Sequence[float] | float = (1.0, 1.0, 1.0),
    ) -> dict[str, dict[str, float]]:
        """Score one case, remember it and return ``{class: {metric: value}}``."""
        res = compute_segmentation_metrics(pred, ref, spacing, self.classes)
        row: dict[str, float | str] = {"case": case_id}
        for cls, vals in res.items():
            for metric, v in vals.items():
                row[column(metric, cls)] = v
        self._rows.append(row)
        return res

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict[str, float | str]]:
        """One flat dict per case: ``case`` and ``<metric>_<class>`` columns."""
        return [dict(r) for r in self._rows]

    def aggregate(self) -> dict[str, dict[str, float]]:
        """``{column: {"mean", "std" (population), "n"}}`` over cases, ignoring NaN values."""
        if not self._rows:
            raise ValueError("SegmentationMetrics.aggregate() called before any update()")
        out = {}
        for key in self._rows[0]:
            if key == "case":
                continue
            v = np.array([r[key] for r in self._rows], dtype=np.float64)
            v = v[~np.isnan(v)]
            out[key] = {
                "mean": float(v.mean()) if v.size else float("nan"),
                "std": float(v.std()) if v.size else float("nan"),
                "n": int(v.size),
            }
        return out
