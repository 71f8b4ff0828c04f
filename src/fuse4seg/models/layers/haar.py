"""Orthonormal Haar-wavelet squeeze, an exactly invertible space-to-channel transform.

``(B, C, H, W) -> (B, 4C, H/2, W/2)``: for every 2x2 block ``[[a, b], [c, d]]`` the four
outputs are ``(a+b+c+d)/2`` (LL), ``(a-b+c-d)/2``, ``(a+b-c-d)/2`` and ``(a-b-c+d)/2``
(the detail bands), channel-grouped as ``[LL_0..LL_{C-1}, d1_0.., d2_0.., d3_0..]``. The
transform is orthonormal, so the inverse is its transpose. ``H`` and ``W`` must be even.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["HaarSqueeze", "haar_squeeze", "haar_unsqueeze"]


def haar_squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2); H, W even."""
    if x.ndim != 4 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"haar_squeeze needs (B, C, H, W) with even H, W, got {tuple(x.shape)}")
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    ll = (a + b + c + d) * 0.5
    d1 = (a - b + c - d) * 0.5
    d2 = (a + b - c - d) * 0.5
    d3 = (a - b - c + d) * 0.5
    return torch.cat([ll, d1, d2, d3], dim=1)  # (B, 4C, H/2, W/2)


def haar_unsqueeze(y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`haar_squeeze`: (B, 4C, h, w) -> (B, C, 2h, 2w)."""
    if y.ndim != 4 or y.shape[1] % 4:
        raise ValueError(f"haar_unsqueeze needs (B, 4C, h, w), got {tuple(y.shape)}")
    ll, d1, d2, d3 = y.chunk(4, dim=1)
    a = (ll + d1 + d2 + d3) * 0.5
    b = (ll - d1 + d2 - d3) * 0.5
    c = (ll + d1 - d2 - d3) * 0.5
    d = (ll - d1 - d2 + d3) * 0.5
    bsz, ch, h, w = ll.shape
    out = y.new_empty(bsz, ch, 2 * h, 2 * w)
    out[..., 0::2, 0::2] = a
    out[..., 0::2, 1::2] = b
    out[..., 1::2, 0::2] = c
    out[..., 1::2, 1::2] = d
    return out


class HaarSqueeze(nn.Module):
    """Module form of :func:`haar_squeeze` with :meth:`inverse`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return haar_squeeze(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return haar_unsqueeze(y)
