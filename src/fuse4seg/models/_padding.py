"""Pad ``(B, C, H, W)`` maps to a multiple of a factor and crop back.

* :func:`pad_to_multiple` (replicate padding): inside FusionNet / SegNet;
* :func:`zero_pad_to_multiple` + :func:`crop_to` (zero padding): around networks that
  down-sample (the MONAI backbones, whole-image inference, pair fusion).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cpu_chunks", "crop_to", "pad_to_multiple", "zero_pad_to_multiple"]

#: slices per forward pass in CPU inference: a few 240x240 slices keep the feature maps in
#: the CPU caches; 16 at once is ~1.5-2x slower per slice (memory-bound element-wise ops)
CPU_INFERENCE_CHUNK = 4


def cpu_chunks(x: torch.Tensor, chunk: int = CPU_INFERENCE_CHUNK) -> list[torch.Tensor] | None:
    """``x (B, ...)`` split into batches of ``chunk`` for CPU inference (no autograd), or
    None when it should run whole (GPU, gradients enabled, or ``B <= chunk``). The networks
    treat every sample independently, so chunked results equal the whole-batch ones."""
    if x.device.type != "cpu" or torch.is_grad_enabled() or x.shape[0] <= chunk or chunk < 1:
        return None
    return list(x.split(chunk))


def pad_to_multiple(x: torch.Tensor, factor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad the bottom/right of ``(B, C, H, W)`` so H and W are multiples of
    ``factor``; returns the padded map and the original ``(H, W)`` for cropping."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % factor, (-w) % factor
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def zero_pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
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
