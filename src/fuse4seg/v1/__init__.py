"""Fuse4Seg first version (paper 001): discriminator pre-training, cross-attention fusion with
attention maps, cooperative fusion/segmentation training (``--method fuse4seg-v1``).

Public API::

    FusionNetV1, FusionV1Config, CrossAttentionFusion, Discriminator, DiscriminatorPair
    V1Config, make_v1_config, V1_PRESETS
    pretrain_batch, cooperative_batch, train_v1, run_v1_training, register_v1_method
    save_attention_maps, key_importance, fuse_with_attention, attention_report_png
"""

from __future__ import annotations

from fuse4seg.models.model_file import register_fusion_arch

from .attention import CrossAttentionFusion, CrossAttentionOutput
from .attention_maps import (
    attention_report_png,
    fuse_with_attention,
    key_importance,
    save_attention_maps,
)
from .config import V1_PRESETS, V1Config, make_v1_config
from .cooperative import V1_METHOD_NAME, CooperativeState, cooperative_batch, register_v1_method
from .discriminator import Discriminator, DiscriminatorPair, lsgan_d_loss, lsgan_g_loss
from .networks import FusionNetV1, FusionV1Config, FusionV1Output, create_fusion_net_v1
from .pretrain import discriminator_step, generator_step, pretrain_batch
from .runner import run_v1_training, train_v1

# plugin registrations (fuse4seg.plugins): the method and the model-file fusion arch "v1"
register_fusion_arch("v1", FusionNetV1.from_config)
register_v1_method()

__all__ = [
    "CooperativeState",
    "CrossAttentionFusion",
    "CrossAttentionOutput",
    "Discriminator",
    "DiscriminatorPair",
    "FusionNetV1",
    "FusionV1Config",
    "FusionV1Output",
    "V1Config",
    "V1_METHOD_NAME",
    "V1_PRESETS",
    "attention_report_png",
    "cooperative_batch",
    "create_fusion_net_v1",
    "discriminator_step",
    "fuse_with_attention",
    "generator_step",
    "key_importance",
    "lsgan_d_loss",
    "lsgan_g_loss",
    "make_v1_config",
    "pretrain_batch",
    "register_v1_method",
    "run_v1_training",
    "save_attention_maps",
    "train_v1",
]
