"""Cross-attention fusion of two modality embeddings (Fuse4Seg first version, eq. 8).

Queries come from modality 1's embedding Phi(M1); keys and values from modality 2's
embedding Phi(M2)::

    CroAttn(Phi(M1), Phi(M2)) = softmax(W_q Phi(M1) (W_k Phi(M2))^T / sqrt(d_k)) W_v Phi(M2)

Full-resolution attention over an ``H x W`` grid costs ``O((HW)^2)`` memory (a 240x240
slice gives 57 600 tokens, i.e. 3.3e9 attention weights per head), so the attention is
computed on a **downsampled token grid**: both embeddings are average-pooled to at most
``grid x grid`` tokens (adaptive pooling; grids smaller than that are kept as they are),
attention is computed there, and the attended features are bilinearly upsampled back to
the embedding resolution. The attention matrix ``(B, heads, N_q, N_k)`` with
``N_q = N_k = g_h * g_w`` is returned so it can be inspected and saved as images.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CrossAttentionFusion", "CrossAttentionOutput", "token_grid_size"]


class CrossAttentionOutput(NamedTuple):
    """Output of :class:`CrossAttentionFusion`.

    ``fused`` (B, C, H, W): attention-guided embedding at the input resolution;
    ``attention`` (B, heads, N_q, N_k): softmax weights, each row sums to one over keys;
    ``grid`` (g_h, g_w): the token grid, ``N_q = N_k = g_h * g_w`` (row-major tokens).
    """

    fused: torch.Tensor
    attention: torch.Tensor
    grid: tuple[int, int]


def token_grid_size(height: int, width: int, grid: int) -> tuple[int, int]:
    """Token grid ``(g_h, g_w)`` used for an ``height x width`` embedding: ``min(side, grid)``."""
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    return min(height, grid), min(width, grid)


class CrossAttentionFusion(nn.Module):
    """Multi-head cross-attention, queries from ``x1`` and keys/values from ``x2``.

    Data flow: AdaptiveAvgPool(grid) -> LayerNorm -> Linear q (from x1) / k, v (from x2)
    -> softmax(q k^T / sqrt(d_head)) v per head -> Linear out -> bilinear upsample -> (B, C, H, W).

    Args:
        dim: channels ``C`` of both embeddings (divisible by ``heads``).
        heads: number of attention heads.
        grid: maximum side of the token grid (see module docstring).
    """

    def __init__(self, dim: int, heads: int = 2, grid: int = 16) -> None:
        super().__init__()
        if dim < 1 or heads < 1 or dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        self.dim, self.heads, self.grid = dim, heads, grid
        self.head_dim = dim // heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> CrossAttentionOutput:
        """``x1``, ``x2``: (B, C, H, W) embeddings of modality 1 (queries) and 2 (keys/values)."""
        if x1.ndim != 4 or x1.shape != x2.shape or x1.shape[1] != self.dim:
            raise ValueError(
                f"expected two (B, {self.dim}, H, W) tensors of equal shape, "
                f"got {tuple(x1.shape)} and {tuple(x2.shape)}"
            )
        b, c, h, w = x1.shape
        gh, gw = token_grid_size(h, w, self.grid)
        q_in = F.adaptive_avg_pool2d(x1, (gh, gw)).flatten(2).transpose(1, 2)  # (B, N, C)
        kv_in = F.adaptive_avg_pool2d(x2, (gh, gw)).flatten(2).transpose(1, 2)  # (B, N, C)
        q_in, kv_in = self.norm_q(q_in), self.norm_kv(kv_in)
        n = gh * gw

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)

        q, k, v = split(self.to_q(q_in)), split(self.to_k(kv_in)), split(self.to_v(kv_in))
        logits = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, h, N_q, N_k)
        attn = logits.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        out = self.proj(out).transpose(1, 2).reshape(b, c, gh, gw)  # (B, C, g_h, g_w)
        if (gh, gw) != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return CrossAttentionOutput(out, attn, (gh, gw))
