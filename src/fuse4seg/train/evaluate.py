"""Evaluate a :class:`FusionSegModel` on the cases of a prepared store split.

Per case: predict every kept slice (batches of axial slices), stack to a 3D label volume
``(D, H, W)`` and score it with :mod:`fuse4seg.metrics.segmentation` (the one Dice).
:func:`quick_dice` (per-epoch validation) computes per-case 3D Dice of NCR / ED / ET and their
mean; :func:`evaluate_cases` (final evaluation) scores Dice / IoU / HD95 of NCR, ED, ET, WT
and TC (Dice per case or, ``dice_level="slice"``, 2D slice Dice).

A "store" is anything with ``case_ids(split)``, ``image(case_id) -> (D, M, H, W)`` and
``label(case_id) -> (D, H, W)`` (:class:`fuse4seg.data.PreparedStore`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fuse4seg.metrics.segmentation import (
    LABEL_CLASSES,
    column,
    compute_segmentation_metrics,
    dice_scores,
)

__all__ = [
    "LABEL_REGIONS",
    "predict_volume",
    "dice_per_label",
    "quick_dice",
    "evaluate_cases",
    "store_spacing",
    "summarise",
]

#: per-label regions scored by the paper (canonical labels)
LABEL_REGIONS: dict[str, int] = {"NCR": 1, "ED": 2, "ET": 3}


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module,
    image: np.ndarray | torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    return_fused: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Segment a volume slice by slice.

    Args:
        model: a :class:`FusionSegModel` (``forward(x) -> (fused | None, logits)``).
        image: ``(D, M, H, W)`` float slices (axial slices first).
        return_fused: also return the fused slices ``(D, H, W)`` float32 (``None`` when the
            model has no fused image).

    Returns:
        ``(labels (D, H, W) uint8, fused (D, H, W) float32 | None)``.
    """
    x_all = torch.from_numpy(np.array(image, dtype=np.float32))
    if x_all.ndim != 4:
        raise ValueError(f"image must be (D, M, H, W), got {tuple(x_all.shape)}")
    was_training = model.training
    model.eval()
    preds, fused_parts = [], []
    for start in range(0, x_all.shape[0], batch_size):
        x = x_all[start : start + batch_size].to(device)
        fused, logits = model(x)
        preds.append(logits.argmax(dim=1).to(torch.uint8).cpu())
        if return_fused and fused is not None:
            fused_parts.append(fused[:, 0].float().cpu())
    model.train(was_training)
    labels = torch.cat(preds).numpy()
    fused_arr = torch.cat(fused_parts).numpy() if fused_parts else None
    return labels, fused_arr


def dice_per_label(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """3D Dice of NCR / ED / ET, keyed by label name (1.0 when both prediction and truth are
    empty; :func:`fuse4seg.metrics.segmentation.dice_scores`)."""
    scores = dice_scores(pred, gt, LABEL_CLASSES)
    return {name: scores[column("Dice", name)] for name in LABEL_REGIONS}


def quick_dice(
    model: torch.nn.Module,
    store: Any,
    case_ids: Sequence[str],
    device: torch.device | str = "cpu",
    batch_size: int = 16,
) -> dict[str, float]:
    """Mean over cases of per-case 3D Dice for NCR, ED, ET, and their mean (``"mean"``)."""
    if not case_ids:
        return {}
    rows = []
    for cid in case_ids:
        pred, _ = predict_volume(model, store.image(cid), device, batch_size)
        rows.append(dice_per_label(pred, np.asarray(store.label(cid))))
    result = {k: float(np.mean([r[k] for r in rows])) for k in LABEL_REGIONS}
    result["mean"] = float(np.mean([result[k] for k in LABEL_REGIONS]))
    return result


def store_spacing(store: Any, case_id: str) -> tuple[float, float, float]:
    """Voxel size in mm of a stored case, in store axis order ``(D, H, W)``.

    The store keeps the NIfTI z spacing and divides the in-plane spacing by the prepare
    ``scale``; without that information 1 mm is assumed.
    """
    try:
        sp = [float(v) for v in store.case_info(case_id).get("spacing", (1.0, 1.0, 1.0))]
        scale = float(store.manifest.get("scale") or 1.0)
    except (AttributeError, KeyError, TypeError, ValueError):
        return (1.0, 1.0, 1.0)
    return (sp[2], sp[0] / scale, sp[1] / scale)


def evaluate_cases(
    model: torch.nn.Module,
    store: Any,
    case_ids: Sequence[str],
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    dice_level: str = "case",
) -> list[dict[str, Any]]:
    """Per-case Dice / IoU / HD95 (mm) for NCR, ED, ET, WT, TC via
    :func:`fuse4seg.metrics.compute_segmentation_metrics` (3D, stored volumes).

    Args:
        dice_level: ``"case"`` (3D Dice per case) or ``"slice"`` (2D slice Dice over the
            axial slices, see :mod:`fuse4seg.metrics.segmentation`); IoU and HD95 stay 3D.

    Returns:
        One dict per case: ``{"case_id": str, "Dice_NCR": ..., "IoU_NCR": ...,
        "HD95_NCR": ..., ...}``.
    """
    rows = []
    for cid in case_ids:
        pred, _ = predict_volume(model, store.image(cid), device, batch_size)
        gt = np.asarray(store.label(cid))
        scores = compute_segmentation_metrics(pred, gt, spacing=store_spacing(store, cid))
        row: dict[str, Any] = {"case_id": cid}
        for region, values in scores.items():
            for metric in ("Dice", "IoU", "HD95"):
                row[column(metric, region)] = float(values[metric])
        if dice_level != "case":  # store volumes are (D, H, W): axial slices on axis 0
            row.update(dice_scores(pred, gt, level=dice_level, axis=0))
        rows.append(row)
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean of every numeric column over cases (NaN-aware), plus ``Dice_mean`` / ``IoU_mean``
    over NCR, ED, ET."""
    if not rows:
        return {}
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float))]
    out = {k: float(np.nanmean([float(r[k]) for r in rows])) for k in keys}
    for metric in ("Dice", "IoU"):
        parts = [out.get(f"{metric}_{r}") for r in LABEL_REGIONS]
        if all(p is not None for p in parts):
            out[f"{metric}_mean"] = float(np.mean(parts))
    return out
