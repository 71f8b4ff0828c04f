"""Fuse4Seg networks: the fusion leader (:class:`FusionNet`) and the segmentation follower
(:class:`SegNet`), their presets, factory and cost summary; the MONAI followers
(:mod:`.backbones`); the trained model file ``model.pt`` and its registries
(:mod:`.model_file`)."""

from __future__ import annotations

from ._padding import crop_to, zero_pad_to_multiple
from .backbones import EXTERNAL_BACKBONES, PaddedBackbone, create_backbone
from .fusion_net import FusionNet, FusionOutput, minmax_normalize
from .model_file import (
    FusionSegModel,
    load_model_file,
    register_fusion_arch,
    register_model_loader,
    register_seg_arch,
    save_model_file,
)
from .presets import (
    FUSION_PRESETS,
    PRESET_NAMES,
    SEG_PRESETS,
    FusionNetConfig,
    SegNetConfig,
    build_fusion_config,
    build_seg_config,
)
from .registry import available_presets, create_fusion_net, create_seg_net
from .seg_net import SegNet
from .summary import count_flops, count_parameters, model_summary

__all__ = [
    "EXTERNAL_BACKBONES",
    "FUSION_PRESETS",
    "PRESET_NAMES",
    "SEG_PRESETS",
    "FusionNet",
    "FusionNetConfig",
    "FusionOutput",
    "FusionSegModel",
    "PaddedBackbone",
    "SegNet",
    "SegNetConfig",
    "available_presets",
    "build_fusion_config",
    "build_seg_config",
    "count_flops",
    "count_parameters",
    "create_backbone",
    "create_fusion_net",
    "create_seg_net",
    "crop_to",
    "load_model_file",
    "minmax_normalize",
    "model_summary",
    "register_fusion_arch",
    "register_model_loader",
    "register_seg_arch",
    "save_model_file",
    "zero_pad_to_multiple",
]
