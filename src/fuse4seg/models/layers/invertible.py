"""Invertible high-frequency blocks (affine coupling, spec eq. 5) with exact inverses.

Forward of one :class:`AffineCoupling` on ``z = [z1, z2]`` (split along channels)::

    z1' = z1 * exp(s(z2)) + eta(z2),   s = clamp * tanh(rho(z2) / clamp)
    z2' = z2 + phi(z1')

Inverse::

    z2 = z2' - phi(z1')
    z1 = (z1' - eta(z2)) * exp(-s(z2))

``rho``, ``eta``, ``phi`` are inverted-residual conv blocks (1x1 expand, depthwise 3x3, 1x1
project, ReLU6), as in CDDFuse. The soft clamp of the log-scale (``clamp=2``) keeps
``exp`` bounded (scales in ``[e^-2, e^2]``) and is still exactly invertible.
:class:`InvertibleSequence` chains nodes, optionally inside a Haar squeeze (the spec's
"Haar wavelet transformations to squeeze spatial dimensions, followed by affine coupling").
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .haar import haar_squeeze, haar_unsqueeze

__all__ = ["InvertedResidual", "AffineCoupling", "InvertibleSequence"]


class InvertedResidual(nn.Module):
    """1x1 conv (x``expansion``) -> ReLU6 -> depthwise 3x3 -> ReLU6 -> 1x1 conv;
    ``(B, C_in, H, W) -> (B, C_out, H, W)``."""

    def __init__(self, in_ch: int, out_ch: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 1, bias=False),
            nn.ReLU6(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(hidden, hidden, 3, groups=hidden, bias=False),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class AffineCoupling(nn.Module):
    """One invertible node on ``(B, C, H, W)``, ``C`` even (split ``C/2 | C/2``)."""

    def __init__(self, channels: int, expansion: int = 2, clamp: float = 2.0) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"AffineCoupling needs an even channel count, got {channels}")
        half = channels // 2
        self.clamp = clamp
        self.rho = InvertedResidual(half, half, expansion)
        self.eta = InvertedResidual(half, half, expansion)
        self.phi = InvertedResidual(half, half, expansion)

    def _log_scale(self, z2: torch.Tensor) -> torch.Tensor:
        return self.clamp * torch.tanh(self.rho(z2) / self.clamp)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z1, z2 = z.chunk(2, dim=1)
        z1 = z1 * torch.exp(self._log_scale(z2)) + self.eta(z2)
        z2 = z2 + self.phi(z1)
        return torch.cat([z1, z2], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Exact inverse of :meth:`forward`."""
        y1, y2 = y.chunk(2, dim=1)
        z2 = y2 - self.phi(y1)
        z1 = (y1 - self.eta(z2)) * torch.exp(-self._log_scale(z2))
        return torch.cat([z1, z2], dim=1)


class InvertibleSequence(nn.Module):
    """``num_nodes`` affine couplings, optionally wrapped in a Haar squeeze/unsqueeze
    (``haar=True``: couplings act on ``(B, 4C, H/2, W/2)``; H, W must then be even).
    ``(B, C, H, W) -> (B, C, H, W)``, with :meth:`inverse`."""

    def __init__(
        self, channels: int, num_nodes: int, haar: bool = False, expansion: int = 2
    ) -> None:
        super().__init__()
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        self.haar = haar
        inner = channels * 4 if haar else channels
        self.nodes = nn.ModuleList(AffineCoupling(inner, expansion) for _ in range(num_nodes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.haar:
            x = haar_squeeze(x)  # (B, 4C, H/2, W/2)
        for node in self.nodes:
            x = node(x)
        return haar_unsqueeze(x) if self.haar else x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Exact inverse of :meth:`forward`."""
        if self.haar:
            y = haar_squeeze(y)
        for node in reversed(self.nodes):
            y = node.inverse(y)
        return haar_unsqueeze(y) if self.haar else y
