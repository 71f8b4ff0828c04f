"""External segmentation backbones for the benchmark's direct multi-channel rows (MONAI).

* ``dynunet`` — MONAI ``DynUNet`` in 2D, configured like nnU-Net's 2D U-Net: 3x3 kernels,
  a stride-1 first stage then stride-2 stages, instance norm, leaky ReLU, transposed-conv
  upsampling, no deep supervision.
* ``swinunetr`` — MONAI ``SwinUNETR`` with ``spatial_dims=2`` (window 7, patch 2).

Both are wrapped in :class:`PaddedBackbone`, which zero-pads ``(B, C, H, W)`` inputs at the
bottom/right to the network's size multiple (SwinUNETR: 32, and at least 64 px; DynUNet:
``2^(stages-1)``) and crops the logits back, so any slice size works. Widths follow the seg
preset (``tiny`` for tests and CPU demos, ``base``, ``paper``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fuse4seg.errors import ConfigError
from fuse4seg.inference.padding import crop_to, pad_to_multiple

__all__ = ["EXTERNAL_BACKBONES", "PaddedBackbone", "create_backbone"]

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
        config: plain dict describing the backbone (stored in ``model.pt`` by the trainer;
            such a model file is for the record, ``fuse4seg predict`` only loads SegNet
            followers).
    """

    def __init__(self, net: nn.Module, multiple: int, config: dict, min_size: int = 0) -> None:
        super().__init__()
        self.net = net
        self.multiple = int(multiple)
        self.min_size = int(min_size)
        self.config = dict(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        xp = pad_to_multiple(x, self.multiple)
        ph, pw = max(0, self.min_size - xp.shape[-2]), max(0, self.min_size - xp.shape[-1])
        if ph or pw:
            xp = F.pad(xp, (0, pw, 0, ph))
        out = self.net(xp)
        if isinstance(out, (list, tuple)):  # deep supervision off, but be safe
            out = out[0]
        return crop_to(out, size)


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
    cfg = {
        "backbone": name,
        "preset": preset,
        "in_channels": in_channels,
        "num_classes": num_classes,
    }
    if name == "dynunet":
        from monai.networks.nets import DynUNet

        filters = _DYNUNET_FILTERS[preset]
        n = len(filters)
        strides = [1] + [2] * (n - 1)
        net = DynUNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            kernel_size=[3] * n,
            strides=strides,
            upsample_kernel_size=strides[1:],
            filters=list(filters),
            norm_name=("INSTANCE", {"affine": True}),
            deep_supervision=False,
            res_block=False,
        )
        cfg["filters"] = list(filters)
        return PaddedBackbone(net, 2 ** (n - 1), cfg)
    from monai.networks.nets import SwinUNETR

    feature_size, depths, heads = _SWIN[preset]
    net = SwinUNETR(
        in_channels=in_channels,
        out_channels=num_classes,
        feature_size=feature_size,
        depths=depths,
        num_heads=heads,
        spatial_dims=2,
    )
    cfg.update(feature_size=feature_size, depths=list(depths), num_heads=list(heads))
    # >= 64: the 1/32 bottleneck must keep > 1 pixel for SwinUNETR's instance norms
    return PaddedBackbone(net, 32, cfg, min_size=64)
