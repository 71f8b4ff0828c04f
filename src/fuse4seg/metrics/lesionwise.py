"""BraTS 2023 lesion-wise Dice and HD95, normalised surface Dice, bootstrap CIs of means.

Lesion-wise scoring follows the BraTS 2023 challenge's evaluation (``metrics.py`` of
github.com/rachitsaluja/BraTS-2023-Metrics; written here from its rules, not its code). Per
region (WT, TC, ET) of a 3D case ``(X, Y, Z)``:

1. The ground truth (GT) is dilated ``dilation`` times (3) with the 18-neighbourhood
   (``generate_binary_structure(3, 2)``); the 26-connected components of the dilated mask,
   restricted to the GT voxels, are the **GT lesions** (nearby components merge into one).
2. Predicted lesions are the 26-connected components of the prediction.
3. Each GT lesion is dilated again the same way; every predicted component that touches that
   dilated mask is **matched** to it (one component may match several lesions, and several
   components one lesion). The lesion's Dice and HD95 compare the lesion with the union of its
   matched components. A lesion with no match is a false negative: Dice 0, HD95
   ``hd95_penalty`` (374 mm).
4. A predicted component that matches no GT lesion (small ones included) is a false positive:
   Dice 0, HD95 ``hd95_penalty``.
5. GT lesions of at most ``min_lesion_voxels`` voxels (50) are left out of the scores (the
   official code drops lesions whose volume is ``<= 50`` mm^3, i.e. voxels at BraTS' 1 mm).
6. Lesion-wise Dice = sum of the kept lesions' Dice / (kept lesions + false positives);
   lesion-wise HD95 = (sum of their HD95 + penalty x false positives) / the same count. With
   nothing to count (no kept lesion, no false positive; e.g. both masks empty) Dice is 1 and
   HD95 0.

Per-lesion HD95 is the package's :func:`fuse4seg.metrics.segmentation.hd95` (boundary voxels
by erosion, MONAI's convention); the official code uses DeepMind's ``surface-distance``
(surface elements weighted by area), so single HD95 values can differ by a fraction of a voxel.

Normalised surface Dice (NSD, Nikolov et al. 2021, "Clinically applicable segmentation of
head and neck anatomy for radiotherapy", arXiv:1809.04430) at tolerance tau mm:
``(|{p in dP : d(p, dG) <= tau}| + |{g in dG : d(g, dP) <= tau}|) / (|dP| + |dG|)`` over the
boundary voxels dP, dG; both empty -> 1, one empty -> 0 (BraTS convention).

Bootstrap: :func:`bootstrap_mean_ci`, the percentile confidence interval of the mean over
cases, for every column at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from fuse4seg.metrics.segmentation import _check_spacing, _edges, _to_numpy, hd95

__all__ = [
    "LESION_REGIONS",
    "LESIONWISE_METRICS",
    "LesionwiseResult",
    "lesion_labels",
    "lesionwise_scores",
    "normalized_surface_dice",
    "compute_lesionwise_metrics",
    "bootstrap_mean_ci",
]

#: the regions BraTS 2023 scores lesion-wise (canonical labels 1 NCR, 2 ED, 3 ET)
LESION_REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
#: per-region metric names of :func:`compute_lesionwise_metrics`
LESIONWISE_METRICS: tuple[str, ...] = (
    "LesionDice", "LesionHD95", "NSD", "LesionTP", "LesionFP", "LesionFN",
)  # fmt: skip

_DILATION_STRUCT = ndimage.generate_binary_structure(3, 2)  # 18-neighbourhood, as BraTS
_CC_STRUCT = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


@dataclass
class LesionwiseResult:
    """Lesion-wise scores of one binary region.

    Attributes:
        dice: lesion-wise Dice.
        hd95: lesion-wise HD95 in mm (penalties included).
        tp: kept GT lesions with at least one matched prediction.
        fn: kept GT lesions with none (each scored Dice 0, HD95 = penalty).
        fp: predicted components matching no GT lesion (each Dice 0, HD95 = penalty).
        lesions: one dict per GT lesion (kept or not): ``voxels``, ``kept``, ``matched``
            (predicted component ids), ``dice``, ``hd95``.
    """

    dice: float
    hd95: float
    tp: int
    fn: int
    fp: int
    lesions: list[dict] = field(default_factory=list)


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    # scipy treats iterations < 1 as "until nothing changes"; 0 here means no dilation
    if iterations == 0:
        return mask
    return ndimage.binary_dilation(mask, structure=_DILATION_STRUCT, iterations=iterations)


def _grow(box: tuple[slice, ...], margin: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(
        slice(max(s.start - margin, 0), min(s.stop + margin, n))
        for s, n in zip(box, shape, strict=True)
    )


def _check_3d(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    if pred.ndim != 3:
        raise ValueError(f"lesion-wise scores need 3D masks (X, Y, Z), got shape {pred.shape}")


def lesion_labels(ref: np.ndarray, dilation: int = 3) -> tuple[np.ndarray, int]:
    """The GT lesions of a binary mask, nearby components merged by dilation.

    Args:
        ref: boolean mask ``(X, Y, Z)``.
        dilation: dilation iterations (18-neighbourhood) that decide which components merge.

    Returns:
        ``(labels, n)``: int32 map ``(X, Y, Z)``, lesion ``k`` (1..n) on its GT voxels, 0
        elsewhere; ``n`` the number of lesions.
    """
    ref = _to_numpy(ref).astype(bool)
    if ref.ndim != 3:
        raise ValueError(f"lesion labels need a 3D mask (X, Y, Z), got shape {ref.shape}")
    if dilation < 0:
        raise ValueError(f"dilation must be >= 0 iterations, got {dilation}")
    out = np.zeros(ref.shape, dtype=np.int32)
    if not ref.any():
        return out, 0
    # the dilation cannot leave the bounding box grown by `dilation`: work inside it
    box = _grow(ndimage.find_objects(ref.astype(np.int8))[0], dilation, ref.shape)
    merged, n = ndimage.label(_dilate(ref[box], dilation), structure=_CC_STRUCT)
    out[box] = np.where(ref[box], merged, 0)
    return out, int(n)


def lesionwise_scores(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | float = 1.0,
    min_lesion_voxels: int = 50,
    dilation: int = 3,
    hd95_penalty: float = 374.0,
) -> LesionwiseResult:
    """BraTS 2023 lesion-wise Dice and HD95 of one binary region (rules in the module doc).

    Args:
        pred, ref: boolean masks ``(X, Y, Z)`` (NumPy or torch).
        spacing: voxel size in mm per axis (HD95 only; the lesion size counts voxels).
        min_lesion_voxels: GT lesions of at most this many voxels are ignored.
        dilation: dilation iterations for merging GT components and for matching.
        hd95_penalty: HD95 (mm) of a missed or a false lesion.

    Returns:
        :class:`LesionwiseResult`.

    Raises:
        ValueError: shapes differ, not 3D, negative parameters, invalid spacing.
    """
    pred = _to_numpy(pred).astype(bool)
    ref = _to_numpy(ref).astype(bool)
    _check_3d(pred, ref)
    sp = _check_spacing(spacing, 3)
    if min_lesion_voxels < 0 or not hd95_penalty >= 0:
        raise ValueError(
            f"min_lesion_voxels and hd95_penalty must be >= 0, got {min_lesion_voxels}, "
            f"{hd95_penalty}"
        )
    union = (pred | ref).astype(np.int8)
    if not union.any():
        return LesionwiseResult(1.0, 0.0, 0, 0, 0, [])
    # nothing happens outside the masks' box grown by the dilation (+1 keeps the boundaries
    # of the full volume): work inside it
    crop = _grow(ndimage.find_objects(union)[0], dilation + 1, ref.shape)
    pred, ref = pred[crop], ref[crop]
    gt_cc, _ = lesion_labels(ref, dilation)
    pred_cc, n_pred = ndimage.label(pred, structure=_CC_STRUCT)
    pred_sizes = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)  # (n_pred + 1,)
    gt_boxes = ndimage.find_objects(gt_cc)
    pred_boxes = ndimage.find_objects(pred_cc)
    lesions: list[dict] = []
    matched_any = np.zeros(n_pred + 1, dtype=bool)
    for k, box in enumerate(gt_boxes, start=1):
        if box is None:  # a dilated component always holds GT voxels; kept for safety
            continue
        roi = _grow(box, dilation, ref.shape)  # the lesion's dilation stays inside
        gt_k = gt_cc[roi] == k
        near = _dilate(gt_k, dilation)
        matched = np.unique(pred_cc[roi][near])
        matched = matched[matched != 0]
        matched_any[matched] = True
        voxels = int(np.count_nonzero(gt_k))
        overlap = np.bincount(pred_cc[roi][gt_k], minlength=n_pred + 1)  # (n_pred + 1,)
        inter = int(overlap[matched].sum())
        dice = 2.0 * inter / (voxels + int(pred_sizes[matched].sum()))
        if matched.size == 0:
            dist = float(hd95_penalty)
        else:
            lo = [s.start for s in box]
            hi = [s.stop for s in box]
            for m in matched:
                for a, s in enumerate(pred_boxes[m - 1]):
                    lo[a], hi[a] = min(lo[a], s.start), max(hi[a], s.stop)
            # a 1-voxel margin keeps the boundaries those of the full volume
            hbox = _grow(tuple(map(slice, lo, hi)), 1, ref.shape)
            dist = hd95(np.isin(pred_cc[hbox], matched), gt_cc[hbox] == k, sp)
        lesions.append(
            {
                "voxels": voxels,
                "kept": voxels > min_lesion_voxels,
                "matched": [int(m) for m in matched],
                "dice": dice,
                "hd95": dist,
            }
        )
    kept = [les for les in lesions if les["kept"]]
    fp = int(n_pred - np.count_nonzero(matched_any[1:]))
    tp = sum(1 for les in kept if les["matched"])
    count = len(kept) + fp
    if count == 0:
        return LesionwiseResult(1.0, 0.0, 0, 0, fp, lesions)
    return LesionwiseResult(
        dice=sum(les["dice"] for les in kept) / count,
        hd95=(sum(les["hd95"] for les in kept) + fp * float(hd95_penalty)) / count,
        tp=tp,
        fn=len(kept) - tp,
        fp=fp,
        lesions=lesions,
    )


def normalized_surface_dice(
    pred: np.ndarray,
    ref: np.ndarray,
    tolerance: float = 1.0,
    spacing: Sequence[float] | float = 1.0,
) -> float:
    """Normalised surface Dice of two binary masks at ``tolerance`` mm (Nikolov et al. 2021).

    Boundary voxels by erosion (the same as :func:`~fuse4seg.metrics.segmentation.hd95`),
    Euclidean distances with ``spacing`` (SciPy distance transform on the bounding box of both
    masks plus one voxel). Equal to MONAI's ``compute_surface_dice(..., spacing=spacing,
    use_subvoxels=False)`` where both masks are non-empty.

    Args:
        pred, ref: boolean masks of the same shape, 2D ``(H, W)`` or 3D ``(X, Y, Z)``.
        tolerance: largest boundary distance (mm) that counts as agreement; >= 0.
        spacing: voxel size in mm per axis (or one number).

    Returns:
        NSD in [0, 1]; 1 when both are empty, 0 when exactly one is.
    """
    pred = _to_numpy(pred).astype(bool)
    ref = _to_numpy(ref).astype(bool)
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 mm, got {tolerance}")
    sp = _check_spacing(spacing, pred.ndim)
    has_p, has_r = bool(pred.any()), bool(ref.any())
    if not has_p and not has_r:
        return 1.0
    if has_p != has_r:
        return 0.0
    box = _grow(ndimage.find_objects((pred | ref).astype(np.int8))[0], 1, pred.shape)
    ep, er = _edges(pred[box]), _edges(ref[box])
    d_pr = ndimage.distance_transform_edt(~er, sampling=sp)[ep]  # (|dP|,)
    d_rp = ndimage.distance_transform_edt(~ep, sampling=sp)[er]  # (|dG|,)
    close = np.count_nonzero(d_pr <= tolerance) + np.count_nonzero(d_rp <= tolerance)
    return float(close / (d_pr.size + d_rp.size))


def compute_lesionwise_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | float = (1.0, 1.0, 1.0),
    min_lesion_voxels: int = 50,
    dilation: int = 3,
    hd95_penalty: float = 374.0,
    nsd_tolerance: float = 1.0,
    regions: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, dict[str, float]]:
    """Lesion-wise Dice/HD95, lesion counts and NSD per BraTS region of one case.

    Args:
        pred, ref: canonical label maps ``(X, Y, Z)`` (0 background, 1 NCR, 2 ED, 3 ET).
        spacing: voxel size in mm (the NIfTI header's zooms).
        min_lesion_voxels, dilation, hd95_penalty: see :func:`lesionwise_scores`.
        nsd_tolerance: NSD tolerance in mm (:func:`normalized_surface_dice`, on the region).
        regions: ``{name: labels}``; default :data:`LESION_REGIONS` (WT, TC, ET).

    Returns:
        ``{region: {metric: value}}`` with the metrics :data:`LESIONWISE_METRICS` (counts as
        floats).
    """
    pred = _to_numpy(pred)
    ref = _to_numpy(ref)
    _check_3d(pred, ref)
    regions = LESION_REGIONS if regions is None else regions
    out = {}
    for name, labels in regions.items():
        p, r = np.isin(pred, labels), np.isin(ref, labels)
        lw = lesionwise_scores(p, r, spacing, min_lesion_voxels, dilation, hd95_penalty)
        out[name] = {
            "LesionDice": lw.dice,
            "LesionHD95": lw.hd95,
            "NSD": normalized_surface_dice(p, r, nsd_tolerance, spacing),
            "LesionTP": float(lw.tp),
            "LesionFP": float(lw.fp),
            "LesionFN": float(lw.fn),
        }
    return out


def bootstrap_mean_ci(
    values: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap confidence interval of the mean over cases, per column.

    Cases are resampled with replacement ``n_resamples`` times (``numpy.random.default_rng
    (seed)``); each resample's mean ignores NaN values (as the reported means); the bounds are
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of those means.

    Args:
        values: ``(N,)`` or ``(N, K)``: N cases, K columns.
        n_resamples: number of resamples, >= 1.
        seed: random seed (the same seed gives the same interval).
        level: confidence level in (0, 1).

    Returns:
        ``(low, high)``, each ``(K,)`` (``()`` for 1D input); NaN for an all-NaN column.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim not in (1, 2) or v.shape[0] == 0:
        raise ValueError(f"values must be (N,) or (N, K) with N >= 1, got shape {v.shape}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    flat = v.reshape(v.shape[0], -1)  # (N, K)
    n = flat.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, (n_resamples, n))  # (R, N)
    # how often each case is drawn per resample: (R, N); means as weighted sums, no (R, N, K)
    weights = np.zeros((n_resamples, n))
    np.add.at(weights, (np.arange(n_resamples)[:, None], idx), 1.0)
    ok = ~np.isnan(flat)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (weights @ np.where(ok, flat, 0.0)) / (weights @ ok)  # (R, K); NaN if none
    q = 100.0 * np.array([(1 - level) / 2, (1 + level) / 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column -> NaN
        low, high = np.nanpercentile(means, q, axis=0)  # (K,) each
    if v.ndim == 1:
        return low.reshape(()), high.reshape(())
    return low, high
