"""ConvNeXt block (Liu et al. 2022; Woo et al. 2023) for ``(B, C, H, W)`` maps."""

from __future__ import annotations

import torch
import torch.nn as nn

from .norm import make_norm2d, pointwise

__all__ = ["ConvNeXtBlock"]


class ConvNeXtBlock(nn.Module):
    """DwConv 7x7 -> LayerNorm (channels-first) or InstanceNorm -> 1x1 Conv (x4) -> GELU ->
    1x1 Conv -> layer scale ``gamma`` -> ``+ x``. ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        dim: channels.
        expansion: inverted-bottleneck width factor (4 in ConvNeXt).
        layer_scale_init: initial per-channel residual scale (``None`` disables it).
        norm: ``"layer"`` (ConvNeXt's per-pixel LayerNorm) or ``"instance"`` (per channel,
            over the pixels; see :func:`~fuse4seg.models.layers.norm.make_norm2d`).
    """

    def __init__(
        self,
        dim: int,
        expansion: int = 4,
        layer_scale_init: float | None = 0.1,
        norm: str = "layer",
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = make_norm2d(norm, dim)
        self.pwconv1 = nn.Conv2d(dim, dim * expansion, 1)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv2d(dim * expansion, dim, 1)
        self.gamma = (
            nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init)))
            if layer_scale_init is not None
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        y = self.act(pointwise(self.pwconv1, self.norm(self.dwconv(x))))  # (B, 4C, H, W)
        return x + pointwise(self.pwconv2, y, self.gamma)  # layer scale folded into pwconv2
