"""Fuse4Seg networks: the fusion leader (:class:`FusionNet`) and the segmentation follower
(:class:`SegNet`), their presets, factory and cost summary."""

from __future__ import annotations

from .fusion_net import FusionNet, FusionOutput, minmax_normalize
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
    "FUSION_PRESETS",
    "PRESET_NAMES",
    "SEG_PRESETS",
    "FusionNet",
    "FusionNetConfig",
    "FusionOutput",
    "SegNet",
    "SegNetConfig",
    "available_presets",
    "build_fusion_config",
    "build_seg_config",
    "count_flops",
    "count_parameters",
    "create_fusion_net",
    "create_seg_net",
    "minmax_normalize",
    "model_summary",
]
