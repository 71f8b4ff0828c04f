"""A learned per-pixel intensity mapping ("transfer function") of M co-registered images."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TransferFunction"]


class TransferFunction(nn.Module):
    """``t: [0, 1]^M -> R`` applied at every pixel, with ``t(0, ..., 0) = 0``.

    1x1 conv -> GELU -> 1x1 conv -> GELU -> 1x1 conv: ``(B, M, H, W) -> (B, 1, H, W)``.
    The pixel's modality vector alone decides the value (no spatial context), so the
    mapping can be drawn as a curve (M = 1) or a 2D lookup image (M = 2) and reads as a
    transfer function. The last layer starts at zero (``t = 0`` at init) and the value at the
    all-zero vector is subtracted, so the background (zero in every source) stays zero.

    Args:
        num_modalities: ``M``.
        hidden: width of the two hidden layers.
    """

    def __init__(self, num_modalities: int, hidden: int = 16):
        super().__init__()
        if num_modalities < 1 or hidden < 1:
            raise ValueError(
                f"num_modalities and hidden must be >= 1, got {num_modalities}, {hidden}"
            )
        self.net = nn.Sequential(
            nn.Conv2d(num_modalities, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, 1, 1, bias=False),  # a bias would cancel in t(x) - t(0)
        )
        nn.init.zeros_(self.net[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, M, H, W)`` -> ``t(x) (B, 1, H, W)``."""
        zero = x.new_zeros(1, x.shape[1], 1, 1)
        return self.net(x) - self.net(zero)

    @torch.no_grad()
    def lookup(self, steps: int = 64) -> torch.Tensor:
        """``t`` on a regular grid of ``[0, 1]^M`` for ``M <= 2``: ``(steps,)`` or
        ``(steps, steps)`` (axis 0: modality 1, axis 1: modality 2)."""
        m = self.net[0].in_channels
        if m > 2:
            raise ValueError(f"lookup() draws M <= 2 modalities, got {m}")
        p = next(self.parameters())
        g = torch.linspace(0.0, 1.0, steps, device=p.device, dtype=p.dtype)
        if m == 1:
            return self(g.view(1, 1, 1, steps))[0, 0, 0]
        a, b = torch.meshgrid(g, g, indexing="ij")  # (steps, steps)
        return self(torch.stack([a, b])[None])[0, 0]  # (steps, steps)
