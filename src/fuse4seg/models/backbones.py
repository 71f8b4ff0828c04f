"""External segmentation backbones (MONAI) as followers, e.g. the benchmark's direct
multi-channel rows.

* ``dynunet`` — MONAI ``DynUNet`` in 2D, configured like nnU-Net's 2D U-Net: 3x3 kernels,
  a stride-1 first stage then stride-2 stages, instance norm, leaky ReLU, transposed-conv
  upsampling, no deep supervision.
* ``swinunetr`` — MONAI ``SwinUNETR`` with ``spatial_dims=2`` (window 7, patch 2).

Both are wrapped in :class:`PaddedBackbone`, which zero-pads ``(B, C, H, W)`` inputs at the
bottom/right to the network's size multiple (SwinUNETR: 32, and at least 64 px; DynUNet:
``2^(stages-1)``) and crops the logits back, so any slice size works. Widths follow the seg
preset (``tiny`` for tests and CPU demos, ``base``, ``paper``).

Model files: a backbone is the follower of a :class:`~fuse4seg.models.model_file.FusionSegModel`
(the benchmark rows use the ``multichannel`` input: the M modalities as channels), so the
trainer's ``save_model_file`` writes it, with ``segmentation["arch"]`` = the backbone name and
``segmentation["config"]`` = :attr:`PaddedBackbone.config` (every hyper-parameter, see
:func:`backbone_from_config`); both names are registered here
(:func:`~fuse4seg.models.model_file.register_seg_arch`), so ``load_model_file`` rebuilds it
and ``fuse4seg predict`` runs it. :func:`save_backbone_model_file` writes one directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fuse4seg.errors import ConfigError

from ._padding import crop_to, zero_pad_to_multiple
from .model_file import FusionSegModel, register_seg_arch, save_model_file

__all__ = [
    "EXTERNAL_BACKBONES",
    "PaddedBackbone",
    "backbone_from_config",
    "create_backbone",
    "save_backbone_model_file",
]

# preset -> DynUNet filters per stage (nnU-Net 2D: 32, 64, 128, 256, 512, 512, ...)
_DYNUNET_FILTERS: dict[str, tuple[int, ...]] = {
    "tiny": (8, 16, 32, 64),
    "base": (32, 64, 128, 256, 320),
    "paper": (32, 64, 128, 256, 512, 512),
}
# preset -> SwinUNETR (feature_size, depths, heads)
_SWIN: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "tiny": (12, (1, 1, 1, 1), (3, 3, 6, 12)),
    "base": (24, (2, 2, 2, 2), (3, 6, 12, 24)),
    "paper": (48, (2, 2, 2, 2), (3, 6, 12, 24)),
}
EXTERNAL_BACKBONES: tuple[str, ...] = ("dynunet", "swinunetr")


class PaddedBackbone(nn.Module):
    """``(B, C, H, W) -> logits (B, num_classes, H, W)`` for a network that needs sides
    divisible by ``multiple``: zero-pad, run, crop.

    Attributes:
        config: plain dict describing the backbone: ``backbone`` (name), ``preset``,
            ``in_channels``, ``num_classes`` and the network's hyper-parameters (DynUNet:
            ``filters``; SwinUNETR: ``feature_size``, ``depths``, ``num_heads``). Stored in
            ``model.pt`` as ``segmentation["config"]``; :func:`backbone_from_config` rebuilds
            the network from it.
    """

    def __init__(self, net: nn.Module, multiple: int, config: dict, min_size: int = 0) -> None:
        super().__init__()
        self.net = net
        self.multiple = int(multiple)
        self.min_size = int(min_size)
        self.config = dict(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        xp = zero_pad_to_multiple(x, self.multiple)
        ph, pw = max(0, self.min_size - xp.shape[-2]), max(0, self.min_size - xp.shape[-1])
        if ph or pw:
            xp = F.pad(xp, (0, pw, 0, ph))
        out = self.net(xp)
        if isinstance(out, (list, tuple)):  # deep supervision off, but be safe
            out = out[0]
        return crop_to(out, size)

    @property
    def arch(self) -> str:
        """The ``segmentation["arch"]`` of a model file (the backbone name)."""
        return str(self.config["backbone"])

    @property
    def file_record(self) -> dict:
        """Written beside the config in ``model.pt``, for the record (weight names)."""
        import monai

        return {"monai_version": str(monai.__version__)}


def create_backbone(
    name: str, in_channels: int, num_classes: int = 4, preset: str = "base"
) -> PaddedBackbone:
    """Build the external backbone ``name`` (``dynunet`` or ``swinunetr``) for 2D slices.

    Raises:
        ConfigError: unknown backbone or preset.
    """
    if name not in EXTERNAL_BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose from {EXTERNAL_BACKBONES}")
    if preset not in _DYNUNET_FILTERS:
        raise ConfigError(f"unknown preset {preset!r} for {name}; choose from tiny, base, paper")
    cfg: dict = {
        "backbone": name,
        "preset": preset,
        "in_channels": in_channels,
        "num_classes": num_classes,
    }
    if name == "dynunet":
        cfg["filters"] = list(_DYNUNET_FILTERS[preset])
    else:
        feature_size, depths, heads = _SWIN[preset]
        cfg.update(feature_size=feature_size, depths=list(depths), num_heads=list(heads))
    return backbone_from_config(cfg)


def _ints(cfg: dict, key: str) -> list[int]:
    value = cfg[key]
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, int) and v > 0 for v in value)
    ):
        raise ConfigError(f"backbone config {key!r} must be a list of positive ints, got {value!r}")
    return [int(v) for v in value]


def _int(cfg: dict, key: str) -> int:
    value = cfg[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"backbone config {key!r} must be a positive int, got {value!r}")
    return int(value)


def backbone_from_config(config: dict) -> PaddedBackbone:
    """Rebuild a backbone (untrained weights) from :attr:`PaddedBackbone.config`.

    The network is built from the stored hyper-parameters (not from the preset tables), so a
    model file stays loadable if the presets change.

    Raises:
        ConfigError: unknown backbone, missing or invalid hyper-parameter.
        KeyError: a required key is missing.
    """
    cfg = dict(config)
    name = cfg.get("backbone")
    if name not in EXTERNAL_BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose from {EXTERNAL_BACKBONES}")
    in_channels, num_classes = _int(cfg, "in_channels"), _int(cfg, "num_classes")
    if name == "dynunet":
        from monai.networks.nets import DynUNet

        filters = _ints(cfg, "filters")
        n = len(filters)
        if n < 2:
            raise ConfigError(f"DynUNet needs at least 2 stages, got filters {filters}")
        strides = [1] + [2] * (n - 1)
        net = DynUNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            kernel_size=[3] * n,
            strides=strides,
            upsample_kernel_size=strides[1:],
            filters=filters,
            norm_name=("INSTANCE", {"affine": True}),
            deep_supervision=False,
            res_block=False,
        )
        return PaddedBackbone(net, 2 ** (n - 1), cfg)
    from monai.networks.nets import SwinUNETR

    feature_size = _int(cfg, "feature_size")
    depths, heads = _ints(cfg, "depths"), _ints(cfg, "num_heads")
    net = SwinUNETR(
        in_channels=in_channels,
        out_channels=num_classes,
        feature_size=feature_size,
        depths=tuple(depths),
        num_heads=tuple(heads),
        spatial_dims=2,
    )
    # >= 64: the 1/32 bottleneck must keep > 1 pixel for SwinUNETR's instance norms
    return PaddedBackbone(net, 32, cfg, min_size=64)


def save_backbone_model_file(
    backbone: PaddedBackbone,
    path: str | Path,
    modalities: Sequence[str],
    *,
    fusion_rule: str | None = None,
    method: str | None = None,
    preprocessing: dict | None = None,
    input_size: int | None = None,
    train_config: dict | None = None,
) -> None:
    """Write a trained ``backbone`` as a ``model.pt`` that ``fuse4seg predict`` loads.

    The input is fixed, as in the benchmark: ``fusion_rule=None`` feeds the M ``modalities``
    as channels (the ``dynunet`` / ``swinunetr`` rows, method ``multichannel``); a rule name
    (``average`` = the modality mean, ``max``, ``laplacian``, ``dwt``, ``pca``) feeds the
    rule's one-channel fused image. The file is the standard model file (see
    :func:`fuse4seg.models.model_file.save_model_file`) with ``segmentation["arch"]`` = the
    backbone name; the trainer writes the same file for the benchmark's backbone rows.

    Raises:
        ConfigError: the backbone's ``in_channels`` does not match the input, or an unknown
            rule.
    """
    modalities = list(modalities)
    if fusion_rule is not None:
        from fuse4seg.fusion_rules import get_fusion_rule

        get_fusion_rule(fusion_rule)  # ConfigError for an unknown rule
    need = 1 if fusion_rule is not None else len(modalities)
    if int(backbone.config["in_channels"]) != need:
        raise ConfigError(
            f"{backbone.arch} has {backbone.config['in_channels']} input channels; the "
            f"{'rule ' + repr(fusion_rule) if fusion_rule else 'multichannel'} input of "
            f"{modalities} has {need}"
        )
    if method is None:
        method = (
            "multichannel"
            if fusion_rule is None
            else ("average" if fusion_rule == "average" else f"rule-{fusion_rule}")
        )
    model = FusionSegModel(
        method=method,
        modalities=modalities,
        seg_net=backbone,
        fusion_rule=fusion_rule,
        num_classes=int(backbone.config["num_classes"]),
        preprocessing=preprocessing,
        input_size=input_size,
        seg_preset=str(backbone.config.get("preset") or ""),
        train_config=train_config,
    )
    save_model_file(model, path)


for _name in EXTERNAL_BACKBONES:
    register_seg_arch(_name, backbone_from_config)
