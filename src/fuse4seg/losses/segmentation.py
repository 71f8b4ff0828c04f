"""Segmentation-follower loss of Fuse4Seg (spec sec. 3.5.1): weighted soft Dice + CE.

``L_Dice = 1 - (1/C) sum_c w_c (2 sum_i p_ci y_ci + eps) / (sum_i p_ci + sum_i y_ci + eps)``
with ``p = softmax(logits)``, ``y`` one-hot, sums over every pixel of the batch (batch Dice),
``c`` running over the included classes (background excluded by default). The weights ``w_c``
are rescaled so that they average to 1 over the included classes, so ``L_Dice`` stays in
[0, 1]. ``L_CE`` is the (optionally class-weighted) cross-entropy. The total is
``dice_weight * L_Dice + ce_weight * L_CE``.

With ``dice_over="regions"`` the Dice term is taken over the BraTS evaluation regions instead
of the classes (nnU-Net's region-based training for BraTS): ``p_R = sum_{c in R} p_c`` for
WT = {NCR, ED, ET}, TC = {NCR, ET} and ET, each region weighted equally. Whole tumour against
healthy tissue then carries a third of the Dice term, where the class Dice spreads that
boundary over three classes. ``dice_over="both"`` takes the mean of the two Dice losses. The
cross-entropy stays over the classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from fuse4seg.data.labels import REGIONS

__all__ = ["DICE_OVER", "DiceCELoss", "soft_dice_loss", "region_dice_loss"]

#: what the Dice term averages over
DICE_OVER: tuple[str, ...] = ("classes", "regions", "both")


def soft_dice_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    include_background: bool = False,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Weighted multi-class soft Dice loss.

    Args:
        probs: class probabilities ``(B, C, *S)``.
        target: integer labels ``(B, *S)`` in ``[0, C)``.
        class_weights: ``(C,)`` weights (for all classes, background included); ``None`` = 1.
        include_background: whether class 0 enters the Dice average.
        eps: smoothing term in numerator and denominator.

    Returns:
        Scalar tensor.
    """
    num_classes = probs.shape[1]
    onehot = F.one_hot(target, num_classes).movedim(-1, 1).to(probs.dtype)  # (B, C, *S)
    dims = [0] + list(range(2, probs.ndim))
    inter = (probs * onehot).sum(dim=dims)  # (C,)
    denom = probs.sum(dim=dims) + onehot.sum(dim=dims)  # (C,)
    dice = (2.0 * inter + eps) / (denom + eps)  # (C,)
    w = torch.ones(num_classes, dtype=probs.dtype, device=probs.device)
    if class_weights is not None:
        w = class_weights.to(probs)
    start = 0 if include_background else 1
    dice, w = dice[start:], w[start:]
    w = w * (w.numel() / w.sum())
    return 1.0 - (w * dice).mean()


def region_dice_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    regions: Sequence[Sequence[int]] = tuple(REGIONS.values()),
    eps: float = 1e-5,
) -> torch.Tensor:
    """Soft Dice loss over label regions (batch Dice, regions weighted equally).

    Args:
        probs: class probabilities ``(B, C, *S)``.
        target: integer labels ``(B, *S)`` in ``[0, C)``.
        regions: each region as the class indices it joins (default WT, TC, ET of the
            canonical BraTS labels).
        eps: smoothing term in numerator and denominator.

    Returns:
        Scalar tensor, ``1 - mean_R Dice(p_R, [y in R])``.
    """
    num_classes = probs.shape[1]
    dims = [0] + list(range(1, probs.ndim - 1))
    dice = []
    for region in regions:
        if not region or any(not 0 <= c < num_classes for c in region):
            raise ValueError(
                f"region {tuple(region)} is not a set of classes in [0, {num_classes})"
            )
        idx = torch.as_tensor(list(region), device=probs.device)
        p = probs.index_select(1, idx).sum(dim=1)  # (B, *S)
        t = torch.isin(target, idx).to(probs.dtype)  # (B, *S)
        inter = (p * t).sum(dim=dims)
        denom = p.sum(dim=dims) + t.sum(dim=dims)
        dice.append((2.0 * inter + eps) / (denom + eps))
    return 1.0 - torch.stack(dice).mean()


class DiceCELoss(nn.Module):
    """Weighted soft Dice + cross-entropy on logits.

    Args:
        num_classes: number of classes ``C`` (4 for background, NCR, ED, ET).
        class_weights: ``C`` non-negative weights used by both Dice (foreground part) and CE;
            ``None`` = all 1.
        include_background: include class 0 in the Dice average (default False).
        dice_weight, ce_weight: weights of the two terms.
        eps: Dice smoothing term.
        dice_over: ``"classes"`` (the weighted class Dice above) or ``"regions"`` (Dice over
            WT, TC, ET, equal weights; :func:`region_dice_loss`; needs the 4 canonical
            classes; the class weights then act on the cross-entropy only) or ``"both"``
            (the mean of the two).

    Forward: ``logits (B, C, *S)``, ``target int64 (B, *S)`` -> scalar.
    """

    def __init__(
        self,
        num_classes: int = 4,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        include_background: bool = False,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        eps: float = 1e-5,
        dice_over: str = "classes",
    ) -> None:
        super().__init__()
        if dice_over not in DICE_OVER:
            raise ValueError(f"dice_over must be one of {DICE_OVER}, got {dice_over!r}")
        if dice_over != "classes" and num_classes != 4:
            raise ValueError(
                f"dice_over={dice_over!r} needs the 4 BraTS classes, got num_classes={num_classes}"
            )
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        weights = None
        if class_weights is not None:
            weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
            if weights.numel() != num_classes:
                raise ValueError(
                    f"class_weights must have {num_classes} entries, got {weights.numel()}"
                )
            if (weights < 0).any() or weights[0 if include_background else 1 :].sum() <= 0:
                raise ValueError(
                    "class_weights must be non-negative with a positive sum, "
                    f"got {weights.tolist()}"
                )
        self.register_buffer("class_weights", weights, persistent=False)
        self.num_classes = num_classes
        self.include_background = include_background
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.eps = eps
        self.dice_over = dice_over

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits ``(B, C, *S)``, target ``(B, *S)`` int64 -> scalar loss."""
        if logits.ndim < 3 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits must be (B, {self.num_classes}, *S), got {tuple(logits.shape)}"
            )
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(
                f"target must be {tuple(logits.shape[:1] + logits.shape[2:])}, "
                f"got {tuple(target.shape)}"
            )
        target = target.long()
        probs = logits.float().softmax(dim=1)
        dice = probs.new_zeros(())
        if self.dice_over in ("classes", "both"):
            dice = dice + soft_dice_loss(
                probs, target, self.class_weights, self.include_background, self.eps
            )
        if self.dice_over in ("regions", "both"):
            dice = dice + region_dice_loss(probs, target, eps=self.eps)
        if self.dice_over == "both":
            dice = dice / 2.0
        ce = F.cross_entropy(logits.float(), target, weight=self.class_weights)
        return self.dice_weight * dice + self.ce_weight * ce
