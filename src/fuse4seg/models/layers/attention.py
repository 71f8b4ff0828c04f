"""Spatial multi-head self-attention blocks (tokens = pixels) for ``(B, C, H, W)`` maps.

Full spatial attention costs ``O(N^2)`` for ``N = H * W`` tokens, unaffordable at image
resolution on a CPU. :class:`SpatialSelfAttention` therefore optionally computes keys and
values from an average-pooled copy of the map (at most ``kv_size x kv_size`` tokens, as in
PVT's spatial-reduction attention): every pixel still attends to the whole image, at cost
``O(N * kv_size^2)``. ``kv_size=None`` gives exact full attention.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels:
the ``N x N_kv`` attention matrix is not kept for the backward pass, which matters at full
resolution); :func:`fuse4seg.models.count_flops` counts it on every backend.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .norm import LayerNorm2d, match_memory_format, pointwise

__all__ = ["SpatialSelfAttention", "TransformerBlock", "sinusoidal_position_2d"]


def sinusoidal_position_2d(channels: int, h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed 2D sine/cosine position encoding ``(1, C, H, W)``: the first half of the channels
    encodes the row, the second half the column (``C`` must be a multiple of 4)."""
    if channels % 4 != 0:
        raise ValueError(
            f"channels must be a multiple of 4 for 2D sinusoidal encoding, got {channels}"
        )
    quarter = channels // 4
    freq = torch.exp(
        torch.arange(quarter, device=device, dtype=torch.float32) * (-math.log(10000.0) / quarter)
    )
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freq  # (H, C/4)
    xs = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freq  # (W, C/4)
    row = torch.cat([ys.sin(), ys.cos()], dim=1).T[:, :, None].expand(-1, h, w)  # (C/2, H, W)
    col = torch.cat([xs.sin(), xs.cos()], dim=1).T[:, None, :].expand(-1, h, w)  # (C/2, H, W)
    return torch.cat([row, col], dim=0).unsqueeze(0).to(dtype=dtype)  # (1, C, H, W)


class SpatialSelfAttention(nn.Module):
    """Multi-head self-attention over pixels, ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        dim: channels ``C``.
        heads: attention heads (``C % heads == 0``).
        kv_size: keys/values come from the map average-pooled to at most
            ``kv_size x kv_size`` tokens; ``None`` = full attention.
    """

    def __init__(self, dim: int, heads: int, kv_size: int | None = None) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if kv_size is not None and kv_size < 1:
            raise ValueError(f"kv_size must be >= 1 or None, got {kv_size}")
        self.heads = heads
        self.kv_size = kv_size
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Conv2d(dim, dim, 1)
        self.kv = nn.Conv2d(dim, dim * 2, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hd = c // self.heads
        src = x
        if self.kv_size is not None and (h > self.kv_size or w > self.kv_size):
            src = F.adaptive_avg_pool2d(x, (min(h, self.kv_size), min(w, self.kv_size)))
        # contiguous (B, nh, tokens, hd) inputs let SDPA use its fused kernel (else: math path)
        q = pointwise(self.q, x).reshape(b, self.heads, hd, h * w).transpose(-2, -1).contiguous()
        k, v = pointwise(self.kv, src).chunk(2, dim=1)
        n_kv = src.shape[-2] * src.shape[-1]
        k = k.reshape(b, self.heads, hd, n_kv).transpose(-2, -1).contiguous()  # (B, nh, Nkv, hd)
        v = v.reshape(b, self.heads, hd, n_kv).transpose(-2, -1).contiguous()  # (B, nh, Nkv, hd)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, nh, N, hd)
        out = out.transpose(-2, -1).reshape(b, c, h, w)  # (B, C, H, W)
        out = match_memory_format(out, x)
        return pointwise(self.proj, out)


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block on maps: ``x + MSA(LN(x))``, ``x + MLP(LN(x))`` with
    MLP = 1x1 conv (``mlp_ratio`` expansion) -> GELU -> 1x1 conv. ``(B, C, H, W)``."""

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float = 2.0, kv_size: int | None = None
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = LayerNorm2d(dim)
        self.attn = SpatialSelfAttention(dim, heads, kv_size)
        self.norm2 = LayerNorm2d(dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        x = x + self.attn(self.norm1(x))
        fc1, act, fc2 = self.mlp  # 1x1 convs, run as GEMMs on channels-last maps
        return x + pointwise(fc2, act(pointwise(fc1, self.norm2(x))))
