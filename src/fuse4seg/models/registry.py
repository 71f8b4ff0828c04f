"""Factory functions for the Fuse4Seg networks."""

from __future__ import annotations

from typing import Any

from .fusion_net import FusionNet
from .presets import PRESET_NAMES
from .seg_net import SegNet

__all__ = ["create_fusion_net", "create_seg_net", "available_presets"]


def available_presets() -> tuple[str, ...]:
    """Names of the presets both networks provide: ``("tiny", "base", "paper")``."""
    return PRESET_NAMES


def create_fusion_net(preset: str = "base", num_modalities: int = 2, **overrides: Any) -> FusionNet:
    """A :class:`FusionNet` for ``num_modalities`` inputs from a named preset (+ overrides)."""
    return FusionNet(num_modalities, preset=preset, **overrides)


def create_seg_net(
    preset: str = "base", in_channels: int = 1, num_classes: int = 4, **overrides: Any
) -> SegNet:
    """A :class:`SegNet` from a named preset (+ overrides)."""
    return SegNet(in_channels, num_classes, preset=preset, **overrides)
