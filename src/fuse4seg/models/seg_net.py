"""Segmentation follower of Fuse4Seg: a hybrid ConvNeXt / Transformer U-Net (spec sec. 3.4).

Data flow for ``x (B, C_in, H, W)`` with widths ``w_0..w_{L-1}``::

    pad H, W to a multiple of 2^(L-1)                                  (replicate)
    stem 3x3 conv                                                      (B, w_0, H, W)
    level i < L-1: ConvNeXt x depths[i] -> skip_i; LN + 2x2 stride-2 conv -> (B, w_{i+1}, ...)
    level L-1:     ConvNeXt x depths[-1], + 2D sinusoidal position, MSA Transformer
                   x bottleneck_blocks                                 (B, w_{L-1}, H/2^(L-1), .)
    decoder i = L-2..0: 2x2 stride-2 transposed conv -> concat skip_i -> 1x1 conv
                   -> ConvNeXt x decoder_depth                         (B, w_i, ...)
    LN + 1x1 conv -> logits, crop                                      (B, num_classes, H, W)

ConvNeXt block: 7x7 depthwise conv -> LayerNorm -> 1x1 (x4) -> GELU -> 1x1 -> layer scale,
residual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ._padding import pad_to_multiple
from .layers import ConvNeXtBlock, LayerNorm2d, TransformerBlock, sinusoidal_position_2d
from .presets import SegNetConfig, build_seg_config

__all__ = ["SegNet"]


class SegNet(nn.Module):
    """U-shaped ConvNeXt network with a Transformer bottleneck; outputs logits.

    Args:
        in_channels: 1 for a fused image, ``M`` for the direct multi-channel baseline.
        num_classes: output classes (4: background, NCR, ED, ET).
        preset: ``"tiny"``, ``"base"`` (default) or ``"paper"``; ``None`` = dataclass defaults.
        **overrides: any :class:`~fuse4seg.models.presets.SegNetConfig` field.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 4,
        preset: str | None = "base",
        **overrides: Any,
    ) -> None:
        super().__init__()
        cfg = build_seg_config(
            preset, in_channels=in_channels, num_classes=num_classes, **overrides
        )
        self.config = cfg
        widths, levels = cfg.widths, len(cfg.widths)
        self.pad_factor = 2 ** (levels - 1)

        def convnext(dim: int, n: int) -> nn.Sequential:
            return nn.Sequential(
                *(ConvNeXtBlock(dim, cfg.expansion, cfg.layer_scale_init) for _ in range(n))
            )

        self.stem = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        self.enc = nn.ModuleList(convnext(widths[i], cfg.depths[i]) for i in range(levels))
        self.down = nn.ModuleList(
            nn.Sequential(LayerNorm2d(widths[i]), nn.Conv2d(widths[i], widths[i + 1], 2, 2))
            for i in range(levels - 1)
        )
        self.bottleneck = nn.Sequential(
            *(
                TransformerBlock(widths[-1], cfg.heads, cfg.mlp_ratio, cfg.kv_size)
                for _ in range(cfg.bottleneck_blocks)
            )
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, 2) for i in range(levels - 1)
        )
        self.merge = nn.ModuleList(
            nn.Conv2d(2 * widths[i], widths[i], 1) for i in range(levels - 1)
        )
        self.dec = nn.ModuleList(convnext(widths[i], cfg.decoder_depth) for i in range(levels - 1))
        self.head = nn.Sequential(LayerNorm2d(widths[0]), nn.Conv2d(widths[0], cfg.num_classes, 1))

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | SegNetConfig) -> SegNet:
        """Rebuild a network from ``dataclasses.asdict(net.config)`` (or the dataclass)."""
        values = dataclasses.asdict(config) if isinstance(config, SegNetConfig) else dict(config)
        if "in_channels" not in values:
            raise ConfigError("segmentation config lacks 'in_channels'")
        in_ch = values.pop("in_channels")
        num_classes = values.pop("num_classes", 4)
        return cls(in_ch, num_classes, preset=None, **values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C_in, H, W)`` -> logits ``(B, num_classes, H, W)``."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"SegNet expects (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}"
            )
        xp, (h, w) = pad_to_multiple(x, self.pad_factor)
        y = self.stem(xp)  # (B, w0, Hp, Wp)
        skips = []
        for i, blocks in enumerate(self.enc):
            y = blocks(y)
            if i < len(self.down):
                skips.append(y)
                y = self.down[i](y)  # (B, w_{i+1}, H/2^(i+1), W/2^(i+1))
        if len(self.bottleneck):
            pos = sinusoidal_position_2d(y.shape[1], y.shape[2], y.shape[3], y.device, y.dtype)
            y = self.bottleneck(y + pos)
        for i in reversed(range(len(self.up))):
            y = self.up[i](y)  # (B, w_i, ...)
            y = self.merge[i](torch.cat([y, skips[i]], dim=1))  # (B, w_i, ...)
            y = self.dec[i](y)
        return self.head(y)[..., :h, :w]  # (B, num_classes, H, W)
