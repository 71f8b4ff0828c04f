"""RMR-Fusion networks (Zhang et al., AAAI 2024): robust autoencoder + mutual-reinforcing fusion.

Data flow for ``M`` modalities, volumes ``(B, 1, D, H, W)`` in [0, 1]:

* :class:`ModalityEncoder` (one per modality, not shared):
  3x3x3 conv -> strided 2x2x2 conv (downsample) -> MONAI Swin Transformer blocks
  (``monai.networks.nets.swin_unetr.BasicLayer``) -> transposed conv (upsample) + residual from
  the shallow features -> 3x3x3 conv -> feature map ``(B, F, D, H, W)`` (``F = 16``).
* :class:`SharedDecoder` (one for all modalities): pure 3D convs, ``(B, F, *S) -> (B, 1, *S)``,
  sigmoid output.
* :class:`DenseFusion`: concat of the ``M`` feature maps -> 3D conv -> densely connected 3D
  conv layers -> 1x1x1 conv -> fused features ``(B, F, *S)``; with ``fusion_residual`` (the
  ``tiny`` / ``base`` presets) the mean of the ``M`` feature maps is added and the 1x1x1 conv
  starts at zero, so stage 2 starts from the decoder's image of the mean features.
* Visual head = the (frozen) shared decoder on the fused features -> fused volume ``(B, 1, *S)``.
* Semantic head (:func:`create_semantic_head`): MONAI SwinUNETR by default, or UNet, SegResNet,
  UNETR, DynUNet, on the fused features -> logits ``(B, K, *S)``. Inputs are padded to the
  head's required multiple and the logits cropped back.

Sizes are named presets (:data:`RMR_PRESETS`): ``tiny`` (CPU tests, patches 16x32x32),
``base`` and ``paper`` (patches 32x128x128, SwinUNETR feature size 48).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fuse4seg.errors import ConfigError

__all__ = [
    "RMRConfig",
    "RMR_PRESETS",
    "SEMANTIC_HEADS",
    "ModalityEncoder",
    "SharedDecoder",
    "DenseFusion",
    "PadToMultiple",
    "create_semantic_head",
    "RMROutput",
    "RMRNet",
    "create_rmr_net",
    "config_dict",
]

#: accepted semantic-head names
SEMANTIC_HEADS = ("swinunetr", "unet", "segresnet", "unetr", "dynunet")


@dataclass
class RMRConfig:
    """Sizes of an :class:`RMRNet`; ``dataclasses.asdict`` gives a plain dict."""

    #: number of input modalities (one encoder each)
    num_modalities: int = 2
    #: segmentation classes (canonical labels 0 bg, 1 NCR, 2 ED, 3 ET)
    num_classes: int = 4
    #: channels of the encoded feature maps (16 in the reference code)
    feature_channels: int = 16
    #: width of the shallow 3D conv features in the encoders
    encoder_channels: int = 16
    #: token width of the Swin blocks (divisible by swin_heads)
    swin_dim: int = 48
    #: number of Swin Transformer blocks (alternating regular / shifted windows)
    swin_depth: int = 2
    swin_heads: int = 3
    #: Swin attention window (d, h, w) on the downsampled grid
    swin_window: tuple[int, int, int] = (2, 4, 4)
    #: width of the shared decoder
    decoder_channels: int = 32
    #: growth rate and number of the dense fusion layers
    fusion_growth: int = 16
    fusion_layers: int = 3
    #: add the mean of the modality features to the fusion output, last conv zero-initialised.
    #: Without it a random fusion module can start where the frozen sigmoid decoder outputs 0
    #: and never leave (the fused volume of CV fold 1 in docs/benchmarks.md Run R2 stayed
    #: empty, L_VF 0.47 at stage-2 step 1 vs 0.09 with it, same stage 1). Not in the paper.
    fusion_residual: bool = False
    #: semantic head: one of SEMANTIC_HEADS
    seg_head: str = "swinunetr"
    #: feature size of the semantic head (SwinUNETR: divisible by 12)
    seg_feature_size: int = 24
    #: normalisation in the semantic head: "instance" (MONAI default) or "batch" (needed when
    #: the SwinUNETR bottleneck is 1 voxel, i.e. 32-voxel patches during training)
    seg_norm: str = "instance"
    #: SwinUNETR stage depths
    seg_depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    #: training patch (d, h, w); UNETR is built for exactly this input size
    patch_size: tuple[int, int, int] = (32, 64, 64)

    def __post_init__(self) -> None:
        self.swin_window = tuple(int(v) for v in self.swin_window)
        self.seg_depths = tuple(int(v) for v in self.seg_depths)
        self.patch_size = tuple(int(v) for v in self.patch_size)
        if self.seg_head not in SEMANTIC_HEADS:
            raise ConfigError(
                f"unknown semantic head {self.seg_head!r}; choose from {SEMANTIC_HEADS}"
            )
        if self.num_modalities < 1:
            raise ConfigError(f"num_modalities must be >= 1, got {self.num_modalities}")
        if self.swin_dim % self.swin_heads:
            raise ConfigError(
                f"swin_dim {self.swin_dim} must be divisible by swin_heads {self.swin_heads}"
            )
        if self.seg_norm not in ("instance", "batch"):
            raise ConfigError(f"seg_norm must be 'instance' or 'batch', got {self.seg_norm!r}")
        if len(self.patch_size) != 3 or len(self.swin_window) != 3:
            raise ConfigError("patch_size and swin_window need 3 values (d, h, w)")


RMR_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        feature_channels=16,
        encoder_channels=8,
        swin_dim=24,
        swin_depth=2,
        swin_heads=2,
        swin_window=(2, 4, 4),
        decoder_channels=16,
        fusion_growth=8,
        fusion_layers=2,
        fusion_residual=True,
        seg_feature_size=12,
        seg_depths=(1, 1, 1, 1),
        seg_norm="batch",
        patch_size=(16, 32, 32),
    ),
    "base": dict(
        encoder_channels=16,
        swin_dim=48,
        swin_depth=2,
        swin_heads=3,
        swin_window=(4, 4, 4),
        decoder_channels=32,
        fusion_growth=16,
        fusion_layers=3,
        fusion_residual=True,
        seg_feature_size=24,
        seg_depths=(2, 2, 2, 2),
        patch_size=(32, 64, 64),
    ),
    "paper": dict(
        encoder_channels=32,
        swin_dim=96,
        swin_depth=4,
        swin_heads=6,
        swin_window=(4, 7, 7),
        decoder_channels=64,
        fusion_growth=32,
        fusion_layers=4,
        seg_feature_size=48,
        seg_depths=(2, 2, 2, 2),
        patch_size=(32, 128, 128),
    ),
}


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, k, padding=k // 2)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class ModalityEncoder(nn.Module):
    """Conv3d -> strided downsample -> Swin blocks -> transposed-conv upsample + residual -> Conv3d.

    ``(B, 1, D, H, W) -> (B, F, D, H, W)``; odd sides are padded (replicate) and cropped back.
    """

    def __init__(self, cfg: RMRConfig) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import BasicLayer

        c = cfg.encoder_channels
        self.shallow = nn.Sequential(_conv(1, c), _act(), _conv(c, c), _act())
        self.down = nn.Conv3d(c, cfg.swin_dim, kernel_size=2, stride=2)
        self.swin = BasicLayer(
            dim=cfg.swin_dim,
            depth=cfg.swin_depth,
            num_heads=cfg.swin_heads,
            window_size=cfg.swin_window,
            drop_path=[0.0] * cfg.swin_depth,
            qkv_bias=True,
            downsample=None,
        )
        self.up = nn.ConvTranspose3d(cfg.swin_dim, c, kernel_size=2, stride=2)
        self.out = nn.Sequential(_conv(c, c), _act(), _conv(c, cfg.feature_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, 1, D, H, W) -> features (B, F, D, H, W)."""
        size = x.shape[2:]
        pad = [0, 0, 0, 0, 0, 0]
        for i, s in enumerate(size):  # F.pad lists the last axis first
            pad[2 * (2 - i) + 1] = s % 2
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        s0 = self.shallow(x)  # (B, c, D, H, W)
        t = self.swin(self.down(s0))  # (B, swin_dim, D/2, H/2, W/2)
        y = self.out(self.up(t) + s0)  # (B, F, D, H, W)
        return y[..., : size[0], : size[1], : size[2]]


class SharedDecoder(nn.Module):
    """Pure 3D conv decoder ``(B, F, *S) -> (B, 1, *S)`` with sigmoid output in [0, 1]."""

    def __init__(self, cfg: RMRConfig) -> None:
        super().__init__()
        c = cfg.decoder_channels
        self.body = nn.Sequential(
            _conv(cfg.feature_channels, c),
            _act(),
            _conv(c, c),
            _act(),
            _conv(c, c // 2),
            _act(),
            _conv(c // 2, 1),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats`` (B, F, D, H, W) -> image (B, 1, D, H, W)."""
        return torch.sigmoid(self.body(feats))


class DenseFusion(nn.Module):
    """Concat(M feature maps) -> Conv3d -> dense Conv3d layers -> 1x1x1 Conv -> (B, F, *S);
    plus the mean of the M maps when ``cfg.fusion_residual`` (the 1x1x1 conv then starts at 0)."""

    def __init__(self, cfg: RMRConfig) -> None:
        super().__init__()
        g = cfg.fusion_growth
        self.residual = bool(cfg.fusion_residual)
        self.stem = nn.Sequential(_conv(cfg.num_modalities * cfg.feature_channels, g), _act())
        self.layers = nn.ModuleList(
            nn.Sequential(_conv(g * (i + 1), g), _act()) for i in range(cfg.fusion_layers)
        )
        self.project = nn.Conv3d(g * (cfg.fusion_layers + 1), cfg.feature_channels, 1)
        if self.residual:
            nn.init.zeros_(self.project.weight)
            nn.init.zeros_(self.project.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """``feats``: M tensors (B, F, D, H, W) -> fused features (B, F, D, H, W)."""
        h = [self.stem(torch.cat(feats, dim=1))]  # (B, g, *S)
        for layer in self.layers:
            h.append(layer(torch.cat(h, dim=1)))  # dense connection
        out = self.project(torch.cat(h, dim=1))  # (B, F, *S)
        if self.residual:
            out = out + torch.stack(feats).mean(dim=0)
        return out


class PadToMultiple(nn.Module):
    """Pad ``(B, C, *S)`` inputs (replicate) to a multiple of ``multiple`` (or exactly to
    ``fixed_size``), run ``net`` and crop its output back to ``S``."""

    def __init__(
        self, net: nn.Module, multiple: int = 1, fixed_size: tuple[int, ...] | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.multiple = int(multiple)
        self.fixed_size = None if fixed_size is None else tuple(int(s) for s in fixed_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[2:])
        if self.fixed_size is not None:
            if any(s > t for s, t in zip(size, self.fixed_size, strict=True)):
                raise ValueError(
                    f"input spatial size {size} exceeds this head's fixed size {self.fixed_size}"
                )
            target = self.fixed_size
        else:
            m = self.multiple
            target = tuple(-(-s // m) * m for s in size)
        pad: list[int] = []
        for s, t in zip(reversed(size), reversed(target), strict=True):
            pad += [0, t - s]
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        y = self.net(x)
        return y[(..., *(slice(0, s) for s in size))]


def create_semantic_head(cfg: RMRConfig) -> PadToMultiple:
    """The semantic head named ``cfg.seg_head`` on ``cfg.feature_channels`` input channels.

    Returns a module ``(B, F, D, H, W) -> logits (B, num_classes, D, H, W)``:

    * ``swinunetr``: MONAI SwinUNETR (feature size ``seg_feature_size``, sides padded to 32);
    * ``unet``: MONAI UNet, channels ``f, 2f, 4f, 8f``, 2 residual units (padded to 8);
    * ``segresnet``: MONAI SegResNet, ``init_filters=f`` (padded to 8);
    * ``unetr``: MONAI UNETR for exactly ``patch_size`` (smaller inputs padded to it);
    * ``dynunet``: MONAI DynUNet, 4 levels, ``filters f..8f`` (padded to 8).
    """
    from monai.networks import nets

    cin, k, f = cfg.feature_channels, cfg.num_classes, cfg.seg_feature_size
    name, norm = cfg.seg_head, cfg.seg_norm
    if name == "swinunetr":
        net = nets.SwinUNETR(
            in_channels=cin,
            out_channels=k,
            feature_size=f,
            depths=cfg.seg_depths,
            norm_name=cfg.seg_norm,
            spatial_dims=3,
        )
        return PadToMultiple(net, 32)
    if name == "unet":
        net = nets.UNet(3, cin, k, channels=(f, 2 * f, 4 * f, 8 * f), strides=(2, 2, 2), norm=norm)
        return PadToMultiple(net, 8)
    if name == "segresnet":
        net = nets.SegResNet(3, init_filters=f, in_channels=cin, out_channels=k, norm=norm)
        return PadToMultiple(net, 8)
    if name == "unetr":
        hidden = max(48, 4 * f)
        hidden -= hidden % 12
        net = nets.UNETR(
            cin,
            k,
            img_size=cfg.patch_size,
            feature_size=f,
            hidden_size=hidden,
            mlp_dim=2 * hidden,
            num_heads=12,
            norm_name=norm,
        )
        return PadToMultiple(net, fixed_size=cfg.patch_size)
    if name == "dynunet":
        net = nets.DynUNet(
            3,
            cin,
            k,
            kernel_size=[3, 3, 3, 3],
            strides=[1, 2, 2, 2],
            upsample_kernel_size=[2, 2, 2],
            filters=[f, 2 * f, 4 * f, 8 * f],
            norm_name=norm,
        )
        return PadToMultiple(net, 8)
    raise ConfigError(f"unknown semantic head {name!r}; choose from {SEMANTIC_HEADS}")


class RMROutput(NamedTuple):
    """Output of :meth:`RMRNet.forward`."""

    fused: torch.Tensor  #: (B, 1, D, H, W) in [0, 1]
    logits: torch.Tensor  #: (B, K, D, H, W)
    features: torch.Tensor  #: fused features (B, F, D, H, W)


class RMRNet(nn.Module):
    """The whole RMR-Fusion model: encoders + shared decoder (stage 1), fusion + heads (stage 2)."""

    def __init__(self, cfg: RMRConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoders = nn.ModuleList(ModalityEncoder(cfg) for _ in range(cfg.num_modalities))
        self.decoder = SharedDecoder(cfg)
        self.fusion = DenseFusion(cfg)
        self.seg_head = create_semantic_head(cfg)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RMRNet:
        """Rebuild from ``dataclasses.asdict(net.config)``."""
        return cls(_config_from_dict(config))

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.config.num_modalities:
            raise ValueError(
                f"expected (B, {self.config.num_modalities}, D, H, W), got {tuple(x.shape)}"
            )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` (B, M, D, H, W) -> M feature maps (B, F, D, H, W)."""
        self._check(x)
        return [enc(x[:, m : m + 1]) for m, enc in enumerate(self.encoders)]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Autoencode each modality: (B, M, D, H, W) -> (B, M, D, H, W)."""
        return torch.cat([self.decoder(f) for f in self.encode(x)], dim=1)

    def forward(self, x: torch.Tensor) -> RMROutput:
        """``x`` (B, M, D, H, W) in [0, 1] -> fused volume, segmentation logits, fused features."""
        feats = self.fusion(self.encode(x))  # (B, F, D, H, W)
        return RMROutput(self.decoder(feats), self.seg_head(feats), feats)

    def stage1_modules(self) -> list[nn.Module]:
        """Modules trained in stage 1 and frozen in stage 2 (encoders, shared decoder)."""
        return [self.encoders, self.decoder]

    def stage2_modules(self) -> list[nn.Module]:
        """Modules trained in stage 2 (fusion module, semantic head)."""
        return [self.fusion, self.seg_head]

    def freeze_stage1(self) -> None:
        """Freeze encoders and decoder (``requires_grad=False``, eval mode)."""
        for mod in self.stage1_modules():
            mod.eval()
            for p in mod.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> RMRNet:
        super().train(mode)
        # frozen stage-1 modules stay in eval mode
        for mod in self.stage1_modules():
            if not any(p.requires_grad for p in mod.parameters()):
                mod.eval()
        return self


def _config_from_dict(config: dict[str, Any]) -> RMRConfig:
    names = {f.name for f in dataclasses.fields(RMRConfig)}
    bad = sorted(set(config) - names)
    if bad:
        raise ConfigError(f"unknown RMR network option(s) {bad}; valid: {sorted(names)}")
    return RMRConfig(**config)


def create_rmr_net(preset: str = "base", num_modalities: int = 2, **overrides: Any) -> RMRNet:
    """An :class:`RMRNet` from a preset name (``tiny``, ``base``, ``paper``) plus overrides."""
    if preset not in RMR_PRESETS:
        raise ConfigError(f"unknown RMR preset {preset!r}; choose from {sorted(RMR_PRESETS)}")
    values = {**RMR_PRESETS[preset], "num_modalities": num_modalities, **overrides}
    return RMRNet(_config_from_dict(values))


def config_dict(net: RMRNet) -> dict[str, Any]:
    """Plain-dict config of ``net`` (lists instead of tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(net.config).items()}
