"""Losses of Fuse4Seg and RMR-Fusion: Dice+CE, L_decomp, L_grad, L_recon, SSIM, TV, Sobel.

All accept 2D ``(B, C, H, W)`` and, where meaningful, 3D ``(B, C, D, H, W)`` tensors.
"""

from __future__ import annotations

from .fusion import (
    CONTRAST_SPREADS,
    class_contrasts,
    class_separation_loss,
    contrast_floor_loss,
    correlation_coefficient,
    decomposition_loss,
    gradient_loss,
    information_loss,
    rarity_weights,
    reconstruction_loss,
)
from .gradients import (
    GRAD_CONVENTIONS,
    TV_CONVENTIONS,
    gradient_magnitude,
    sobel_gradients,
    sobel_magnitude,
    total_variation,
)
from .segmentation import DICE_OVER, DiceCELoss, region_dice_loss, soft_dice_loss
from .ssim import SSIMLoss, ssim

__all__ = [
    "CONTRAST_SPREADS",
    "DICE_OVER",
    "GRAD_CONVENTIONS",
    "TV_CONVENTIONS",
    "DiceCELoss",
    "SSIMLoss",
    "class_contrasts",
    "class_separation_loss",
    "contrast_floor_loss",
    "correlation_coefficient",
    "decomposition_loss",
    "gradient_loss",
    "gradient_magnitude",
    "information_loss",
    "rarity_weights",
    "region_dice_loss",
    "reconstruction_loss",
    "sobel_gradients",
    "sobel_magnitude",
    "soft_dice_loss",
    "ssim",
    "total_variation",
]
