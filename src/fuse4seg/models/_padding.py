"""Pad ``(B, C, H, W)`` maps to a multiple of a factor and crop back."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pad_to_multiple"]


def pad_to_multiple(x: torch.Tensor, factor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad the bottom/right of ``(B, C, H, W)`` so H and W are multiples of
    ``factor``; returns the padded map and the original ``(H, W)`` for cropping."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % factor, (-w) % factor
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)
