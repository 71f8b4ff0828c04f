"""Reusable layers: Restormer, attention, invertible coupling, Haar, ConvNeXt, transfer."""

from __future__ import annotations

from .attention import SpatialSelfAttention, TransformerBlock, sinusoidal_position_2d
from .convnext import ConvNeXtBlock
from .haar import HaarSqueeze, haar_squeeze, haar_unsqueeze
from .invertible import AffineCoupling, InvertedResidual, InvertibleSequence
from .norm import InstanceNorm2d, LayerNorm2d, make_norm2d
from .restormer import GDFN, MDTA, RestormerBlock
from .transfer import TransferFunction

__all__ = [
    "GDFN",
    "MDTA",
    "AffineCoupling",
    "ConvNeXtBlock",
    "HaarSqueeze",
    "InstanceNorm2d",
    "InvertedResidual",
    "InvertibleSequence",
    "LayerNorm2d",
    "RestormerBlock",
    "SpatialSelfAttention",
    "TransferFunction",
    "TransformerBlock",
    "haar_squeeze",
    "haar_unsqueeze",
    "make_norm2d",
    "sinusoidal_position_2d",
]
