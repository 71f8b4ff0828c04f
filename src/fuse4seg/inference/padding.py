"""Zero padding of image batches to a size multiple (for nets that down-sample)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pad_to_multiple", "crop_to"]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last two axes of ``x`` ``(B, C, H, W)`` at the bottom/right to multiples.

    Zero is the background value of skull-stripped MRI and of normalised images, so the padding
    adds no structure. Undo with :func:`crop_to`.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph))


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the last two axes of ``x`` ``(B, C, H', W')`` to ``size = (H, W)`` (top-left)."""
    return x[..., : size[0], : size[1]]
