"""Network sizes as data: one config dataclass per network and a dict of named presets.

Presets (both networks):

* ``tiny``  — CPU demo and tests: a forward+backward on a (8, M, 96, 96) batch takes a small
  fraction of a second on 2 CPU cores.
* ``base``  — default for real data on CPU or GPU; a 240x240 slice costs about 5 GFLOP for
  both networks (fusion features at 1/4 resolution; SegNet with a stride-2 patchify stem and
  a light full-resolution head), so a BraTS volume is predicted in seconds on a CPU.
* ``paper`` — paper / CDDFuse-scale widths (dim 64, 8 heads, 4+4 Restormer blocks, full
  resolution) for GPUs.

``build_*_config(preset, **overrides)`` returns a validated config; unknown preset names,
unknown keys and invalid values raise :class:`~fuse4seg.errors.ConfigError`.
``preset=None`` starts from the dataclass defaults (used by ``from_config``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = [
    "FusionNetConfig",
    "SegNetConfig",
    "FUSION_PRESETS",
    "SEG_PRESETS",
    "PRESET_NAMES",
    "build_fusion_config",
    "build_seg_config",
]


@dataclass
class FusionNetConfig:
    """Hyper-parameters of :class:`~fuse4seg.models.FusionNet`."""

    num_modalities: int = 2  # M input images fused into one
    dim: int = 32  # feature channels C of every branch (even, multiple of heads)
    heads: int = 4  # heads of the Restormer (channel) and spatial attention
    ffn_expansion: float = 2.0  # GDFN hidden width factor of the Restormer blocks
    encoder_blocks: int = 2  # shared Restormer blocks per modality
    decoder_blocks: int = 2  # Restormer blocks of the decoder
    low_blocks: int = 1  # MSA + MLP blocks of the low-frequency branch
    high_nodes: int = 3  # affine-coupling nodes of the high-frequency branch
    fuse_low_blocks: int = 1  # MSA + MLP blocks of the fusion unit H_low
    fuse_high_nodes: int = 1  # affine-coupling nodes of the fusion unit H_high
    mlp_ratio: float = 2.0  # MLP width factor of the MSA blocks
    kv_size: int | None = 16  # keys/values pooled to <= kv_size^2 tokens; None = full MSA
    squeeze_levels: int = 1  # Haar squeezes of the input: features at 1/2^L resolution
    inn_haar: bool = False  # Haar squeeze inside the invertible branches (spec option)
    coupling_expansion: int = 2  # width factor of the coupling functions rho, eta, phi
    eps: float = 1e-6  # min-max normalisation guard: (y - min) / (max - min + eps)
    mean_skip: bool = True  # decoder predicts a correction to the modality mean (see FusionNet)
    head_init_scale: float = 0.01  # scale of the last head conv at init (small: start near mean)
    output_mode: str = "image"  # "image": decoder predicts the image; "weights": pixel weights
    # hidden width of the per-pixel transfer function t(x_1..x_M) added to the weighted blend
    # (output_mode="weights" only; 0 = off): a learned non-linear intensity mapping
    transfer_hidden: int = 0
    # how the fused image is put into [0, 1]: "minmax" (per image, the spec) or "clamp"
    # (values kept, clipped: the sources' per-volume intensity scale survives, so the same
    # tissue has the same value in every slice)
    output_norm: str = "minmax"
    # hidden width of a per-pixel decoder fused value -> M source values, used by the
    # information anchor L_info of training (0 = none; see FusionNet.decode_sources)
    source_decoder_hidden: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, "num_modalities", "dim", "heads", "encoder_blocks")
        _check_positive(self, "decoder_blocks", "high_nodes", "fuse_high_nodes")
        _check_positive(self, "coupling_expansion")
        _check_non_negative(self, "low_blocks", "fuse_low_blocks", "squeeze_levels")
        if self.dim % self.heads or self.dim % 2:
            raise ConfigError(
                f"dim ({self.dim}) must be even and divisible by heads ({self.heads})"
            )
        if self.kv_size is not None and self.kv_size < 1:
            raise ConfigError(f"kv_size must be a positive integer or None, got {self.kv_size}")
        if self.ffn_expansion <= 0 or self.mlp_ratio <= 0 or self.eps <= 0:
            raise ConfigError("ffn_expansion, mlp_ratio and eps must be positive")
        if self.head_init_scale < 0:
            raise ConfigError(f"head_init_scale must be >= 0, got {self.head_init_scale}")
        if self.output_mode not in ("image", "weights"):
            raise ConfigError(f"output_mode must be 'image' or 'weights', got {self.output_mode!r}")
        if not isinstance(self.transfer_hidden, int) or self.transfer_hidden < 0:
            raise ConfigError(
                f"transfer_hidden must be a non-negative integer, got {self.transfer_hidden!r}"
            )
        if self.output_norm not in ("minmax", "clamp"):
            raise ConfigError(f"output_norm must be 'minmax' or 'clamp', got {self.output_norm!r}")
        if not isinstance(self.source_decoder_hidden, int) or self.source_decoder_hidden < 0:
            raise ConfigError(
                "source_decoder_hidden must be a non-negative integer, "
                f"got {self.source_decoder_hidden!r}"
            )
        if self.transfer_hidden and self.output_mode != "weights":
            raise ConfigError("transfer_hidden needs output_mode='weights'")


@dataclass
class SegNetConfig:
    """Hyper-parameters of :class:`~fuse4seg.models.SegNet`."""

    in_channels: int = 1  # 1 for the fused image, M for the direct multi-channel baseline
    num_classes: int = 4  # background, NCR, ED, ET
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels per level (len = levels)
    depths: tuple[int, ...] = (1, 1, 2, 2)  # ConvNeXt blocks per encoder level
    decoder_depth: int = 1  # ConvNeXt blocks per decoder level
    bottleneck_blocks: int = 2  # MSA Transformer blocks at the lowest resolution
    heads: int = 4  # heads of the bottleneck attention
    mlp_ratio: float = 4.0  # MLP width factor of the bottleneck blocks
    kv_size: int | None = None  # bottleneck keys/values pooled to <= kv_size^2; None = full
    expansion: int = 4  # ConvNeXt inverted-bottleneck factor
    layer_scale_init: float | None = 0.1  # ConvNeXt residual scale at init (None = off)
    stem_stride: int = 1  # 1: level 0 at full res; 2 or 4: patchify stem + light full-res head
    full_res_channels: int = 16  # channels of the full-resolution stem/head (stem_stride > 1)
    # ConvNeXt / downsampling / head normalisation: "layer" (per-pixel LayerNorm over the
    # channels, ConvNeXt) or "instance" (per channel over the pixels, nnU-Net). Default "layer"
    # keeps configs saved before this field loading as they were trained.
    norm: str = "layer"

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.depths = tuple(int(d) for d in self.depths)
        _check_positive(self, "in_channels", "heads", "expansion", "decoder_depth")
        _check_non_negative(self, "bottleneck_blocks")
        _check_positive(self, "full_res_channels")
        stride = self.stem_stride
        if not isinstance(stride, int) or isinstance(stride, bool) or stride not in (1, 2, 4):
            raise ConfigError(f"stem_stride must be 1, 2 or 4, got {self.stem_stride!r}")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {self.num_classes}")
        if len(self.widths) < 2 or len(self.depths) != len(self.widths):
            raise ConfigError(
                f"widths and depths need the same length >= 2, got {self.widths} and {self.depths}"
            )
        if min(self.widths) < 1 or min(self.depths) < 0:
            raise ConfigError(f"invalid widths {self.widths} or depths {self.depths}")
        if self.widths[-1] % self.heads or self.widths[-1] % 4:
            raise ConfigError(
                f"the last width ({self.widths[-1]}) must be divisible by heads ({self.heads}) "
                "and by 4 (2D position encoding)"
            )
        if self.kv_size is not None and self.kv_size < 1:
            raise ConfigError(f"kv_size must be a positive integer or None, got {self.kv_size}")
        if self.norm not in ("layer", "instance"):
            raise ConfigError(f"norm must be 'layer' or 'instance', got {self.norm!r}")


def _check_positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _check_non_negative(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")


FUSION_PRESETS: dict[str, dict[str, Any]] = {
    # 1/4 resolution (two Haar squezes), 16 channels, one block per stage
    # + a per-pixel transfer function, clipped (not per-slice min-max) output and the source
    # decoder of the information anchor: see docs/benchmarks.md "Task-driven fusion against
    # its baselines" for the runs behind each
    "tiny": dict(
        dim=16, heads=2, encoder_blocks=1, decoder_blocks=1, low_blocks=1, high_nodes=2,
        fuse_low_blocks=1, fuse_high_nodes=1, kv_size=8, squeeze_levels=2,
        output_mode="weights", transfer_hidden=16, output_norm="clamp", source_decoder_hidden=16,
    ),
    # 1/4 resolution (two Haar squeezes, lossless), 32 channels, two blocks per Restormer stage
    "base": dict(
        dim=32, heads=4, encoder_blocks=2, decoder_blocks=2, low_blocks=1, high_nodes=3,
        fuse_low_blocks=1, fuse_high_nodes=1, kv_size=8, squeeze_levels=2,
        output_mode="weights", transfer_hidden=16, output_norm="clamp", source_decoder_hidden=16,
    ),
    # the spec's leader at CDDFuse scale: full resolution, dim 64, 8 heads, 4 + 4 Restormer
    # blocks, INN nodes with the Haar squeeze before the affine couplings (sec. 3.3),
    # anchor-free decoder (no residual on x_avg); keys/values of the MSA pooled to 16x16
    # tokens (kv_size=None gives full attention: 57600 tokens for a 240x240 slice)
    "paper": dict(
        dim=64, heads=8, encoder_blocks=4, decoder_blocks=4, low_blocks=2, high_nodes=3,
        fuse_low_blocks=2, fuse_high_nodes=1, mlp_ratio=4.0, kv_size=16, squeeze_levels=0,
        inn_haar=True, mean_skip=False,
    ),
}  # fmt: skip

SEG_PRESETS: dict[str, dict[str, Any]] = {
    # narrow but 4 levels deep: the full-resolution level costs most on a CPU; InstanceNorm:
    # with the per-pixel LayerNorm over 8-16 channels this width learns far more slowly
    "tiny": dict(
        widths=(8, 16, 32, 64), depths=(1, 1, 1, 1), decoder_depth=1, bottleneck_blocks=1,
        heads=2, mlp_ratio=2.0, kv_size=None, norm="instance",
    ),
    # stride-2 patchify stem: levels at 1/2..1/16 resolution (full MSA on 15x15 tokens for a
    # 240x240 slice), full-resolution boundaries from a 16-channel stem feature + 3x3 head
    "base": dict(
        widths=(32, 64, 128, 256), depths=(1, 1, 2, 2), decoder_depth=1, bottleneck_blocks=2,
        heads=4, kv_size=None, stem_stride=2, full_res_channels=16,
    ),
    "paper": dict(
        widths=(64, 128, 256, 512), depths=(2, 2, 4, 2), decoder_depth=2, bottleneck_blocks=4,
        heads=8, kv_size=None,
    ),
}  # fmt: skip

PRESET_NAMES: tuple[str, ...] = ("tiny", "base", "paper")


def _build(cls: type, presets: Mapping[str, Mapping[str, Any]], preset: str | None, values):
    if preset is None:
        base: dict[str, Any] = {}
    elif preset in presets:
        base = dict(presets[preset])
    else:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s) {', '.join(unknown)}; "
            f"valid keys: {', '.join(sorted(known))}"
        )
    base.update(values)
    try:
        return cls(**base)
    except TypeError as exc:  # e.g. a tuple field given a scalar
        raise ConfigError(f"invalid {cls.__name__}: {exc}") from None


def build_fusion_config(preset: str | None = "base", **values: Any) -> FusionNetConfig:
    """Preset values updated with ``values`` -> validated :class:`FusionNetConfig`."""
    return _build(FusionNetConfig, FUSION_PRESETS, preset, values)


def build_seg_config(preset: str | None = "base", **values: Any) -> SegNetConfig:
    """Preset values updated with ``values`` -> validated :class:`SegNetConfig`."""
    return _build(SegNetConfig, SEG_PRESETS, preset, values)
