"""Restormer building blocks (Zamir et al., CVPR 2022), as used by CDDFuse / Fuse4Seg.

* :class:`MDTA` — multi-Dconv head "transposed" attention: attention across channels
  (a ``C/h x C/h`` map per head), cost linear in the number of pixels.
* :class:`GDFN` — gated depthwise feed-forward network.
* :class:`RestormerBlock` — ``x + MDTA(LN(x))``, then ``x + GDFN(LN(x))``, ``(B, C, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .norm import LayerNorm2d, match_memory_format, pointwise

__all__ = ["MDTA", "GDFN", "RestormerBlock"]


class MDTA(nn.Module):
    """1x1 conv -> depthwise 3x3 -> q, k, v; per head, L2-normalised q and k over pixels,
    ``softmax(q k^T * temperature) v`` over channels -> 1x1 projection. ``(B, C, H, W)``."""

    def __init__(self, dim: int, heads: int, bias: bool = False) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dw = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.proj = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dw(pointwise(self.qkv, x)).chunk(3, dim=1)
        q = q.reshape(b, self.heads, c // self.heads, h * w)  # (B, nh, C/nh, N)
        k = k.reshape(b, self.heads, c // self.heads, h * w)
        v = v.reshape(b, self.heads, c // self.heads, h * w)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature  # (B, nh, C/nh, C/nh)
        out = attn.softmax(dim=-1) @ v  # (B, nh, C/nh, N)
        return pointwise(self.proj, match_memory_format(out.reshape(b, c, h, w), x))


class GDFN(nn.Module):
    """1x1 conv to ``2 * hidden`` -> depthwise 3x3 -> ``GELU(x1) * x2`` -> 1x1 conv back."""

    def __init__(self, dim: int, expansion: float = 2.0, bias: bool = False) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(pointwise(self.project_in, x)).chunk(2, dim=1)
        return pointwise(self.project_out, F.gelu(x1) * x2)


class RestormerBlock(nn.Module):
    """``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``; ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, dim: int, heads: int, ffn_expansion: float = 2.0) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = MDTA(dim, heads)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = GDFN(dim, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))
