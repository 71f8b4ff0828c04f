"""Segmentation follower of Fuse4Seg: a hybrid ConvNeXt / Transformer U-Net (spec sec. 3.4).

Data flow for ``x (B, C_in, H, W)`` with widths ``w_0..w_{L-1}`` and ``s = stem_stride``::

    pad H, W to a multiple of s * 2^(L-1)                              (replicate)
    s = 1: stem 3x3 conv                                               (B, w_0, H, W)
    s > 1: full-res stem 3x3 conv + GELU -> f                          (B, f, H, W)
           patchify s x s stride-s conv                                (B, w_0, H/s, W/s)
    level i < L-1: ConvNeXt x depths[i] -> skip_i; LN + 2x2 stride-2 conv -> (B, w_{i+1}, ...)
    level L-1:     ConvNeXt x depths[-1], + 2D sinusoidal position, MSA Transformer
                   x bottleneck_blocks                         (B, w_{L-1}, H/(s 2^(L-1)), .)
    decoder i = L-2..0: 2x2 stride-2 transposed conv -> concat skip_i -> 1x1 conv
                   -> ConvNeXt x decoder_depth                         (B, w_i, ...)
    s = 1: LN + 1x1 conv -> logits, crop                               (B, num_classes, H, W)
    s > 1: LN + 1x1 conv -> f s^2 channels -> PixelShuffle(s)          (B, f, H, W)
           + full-res stem feature -> 3x3 conv -> GELU -> 1x1 conv -> logits, crop
                                                                       (B, num_classes, H, W)

ConvNeXt block: 7x7 depthwise conv -> LayerNorm -> 1x1 (x4) -> GELU -> 1x1 -> layer scale,
residual. ``norm`` picks the normalisation of the ConvNeXt blocks, the downsampling layers and
the head ("LN" above): ``"layer"`` (ConvNeXt's per-pixel LayerNorm over the channels; ``base``,
``paper``) or ``"instance"`` (InstanceNorm, per channel over the pixels, as nnU-Net; ``tiny``).
Measured on real BraTS slices (follower alone, 450 steps): with the per-pixel LayerNorm over
only 8-16 channels the tiny network learns much more slowly than a same-size DynUNet; with
InstanceNorm everywhere it matches or beats it. The
bottleneck Transformer keeps its token LayerNorms.

With ``stem_stride = s > 1`` (``f = full_res_channels``) all ConvNeXt levels run at
1/s resolution (ConvNeXt / SegFormer-style patchify stem: s^2 times fewer FLOPs and memory
traffic); fine boundaries come from the cheap full-resolution path (a stem feature computed
from the input at full resolution, added to the upsampled decoder output, then a 3x3 conv).

On CPU the feature maps are kept channels-last (NHWC): oneDNN's depthwise and 1x1
convolutions are several times faster in that layout; results are the same up to rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ._padding import cpu_chunks, pad_to_multiple
from .layers import ConvNeXtBlock, TransformerBlock, make_norm2d, sinusoidal_position_2d
from .layers.norm import pointwise
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
        stride, f = cfg.stem_stride, cfg.full_res_channels
        self.pad_factor = stride * 2 ** (levels - 1)

        def norm(dim: int) -> nn.Module:  # before downsampling and the head
            return make_norm2d(cfg.norm, dim)

        def convnext(dim: int, n: int) -> nn.Sequential:
            return nn.Sequential(
                *(
                    ConvNeXtBlock(dim, cfg.expansion, cfg.layer_scale_init, cfg.norm)
                    for _ in range(n)
                )
            )

        # full-resolution stem feature (B, f, Hp, Wp), reused by the head; None for stride 1
        self.full_stem: nn.Module | None = None
        if stride == 1:
            self.stem = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        else:
            self.full_stem = nn.Sequential(nn.Conv2d(cfg.in_channels, f, 3, padding=1), nn.GELU())
            self.stem = nn.Conv2d(f, widths[0], stride, stride)  # patchify -> 1/stride res
        self.enc = nn.ModuleList(convnext(widths[i], cfg.depths[i]) for i in range(levels))
        self.down = nn.ModuleList(
            nn.Sequential(norm(widths[i]), nn.Conv2d(widths[i], widths[i + 1], 2, 2))
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
        # stride 1: LN + 1x1 conv; stride > 1: upsample to full res, fuse with the stem feature
        self.up_full: nn.Module | None = None
        if stride == 1:
            self.head = nn.Sequential(norm(widths[0]), nn.Conv2d(widths[0], cfg.num_classes, 1))
        else:
            self.up_full = nn.Sequential(  # = an s x s stride-s transposed conv, NHWC-friendly
                norm(widths[0]),
                nn.Conv2d(widths[0], f * stride * stride, 1),
                nn.PixelShuffle(stride),
            )
            self.head = nn.Sequential(
                nn.Conv2d(f, f, 3, padding=1), nn.GELU(), nn.Conv2d(f, cfg.num_classes, 1)
            )

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
        chunks = cpu_chunks(x)
        if chunks is not None:  # CPU inference: a few slices at a time (cache-friendly)
            return torch.cat([self._forward(c) for c in chunks])
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C_in, H, W)`` -> logits ``(B, num_classes, H, W)`` (unchecked)."""
        xp, (h, w) = pad_to_multiple(x, self.pad_factor)  # (B, C_in, Hp, Wp)
        # NHWC on CPU (set after the first conv: a 1-channel input is NCHW and NHWC at once)
        # (elsewhere the layout is left as it comes: contiguous() has no "preserve" format)
        on_cpu = xp.device.type == "cpu"

        def layout(t: torch.Tensor) -> torch.Tensor:
            return t.contiguous(memory_format=torch.channels_last) if on_cpu else t

        full = None
        if self.full_stem is not None:
            full = layout(self.full_stem(xp))  # (B, f, Hp, Wp)
            y = self.stem(full)  # (B, w0, Hp/s, Wp/s)
        else:
            y = layout(self.stem(xp))  # (B, w0, Hp, Wp)
        skips = []
        for i, blocks in enumerate(self.enc):
            y = blocks(y)
            if i < len(self.down):
                skips.append(y)
                y = self.down[i](y)  # (B, w_{i+1}, Hp/(s 2^(i+1)), Wp/(s 2^(i+1)))
        if len(self.bottleneck):
            pos = sinusoidal_position_2d(y.shape[1], y.shape[2], y.shape[3], y.device, y.dtype)
            y = self.bottleneck(y + pos)
        for i in reversed(range(len(self.up))):
            y = self.up[i](y)  # (B, w_i, ...)
            y = pointwise(self.merge[i], torch.cat([y, skips[i]], dim=1))  # (B, w_i, ...)
            y = self.dec[i](y)
        if self.up_full is not None and full is not None:
            y = self.up_full(y) + full  # (B, f, Hp, Wp)
        return self.head(y)[..., :h, :w]  # (B, num_classes, H, W)
