"""Normalising a raw modality volume the way ``fuse4seg prepare`` did for a trained model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fuse4seg.data.preprocess import PERCENTILES, normalise_volume

__all__ = ["normalise_for_model"]


def normalise_for_model(
    volume: np.ndarray,
    preprocessing: Mapping[str, Any] | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Normalise one raw modality volume ``(X, Y, Z)`` to [0, 1] as ``prepare`` does.

    Args:
        volume: raw intensities (any real dtype), background 0.
        preprocessing: a model's recorded preprocessing, i.e. a store manifest's
            ``"normalisation"`` dict; its ``"percentiles"`` (default (0.5, 99.5)) are used.
        mask: brain mask; default ``volume != 0``. Because voxels equal to 0 map to 0 either
            way, this gives exactly the result of prepare's any-modality mask.

    Returns:
        float32 ``(X, Y, Z)`` in [0, 1].
    """
    vol = np.asarray(volume, dtype=np.float32)
    percentiles = tuple((preprocessing or {}).get("percentiles") or PERCENTILES)
    if len(percentiles) != 2:
        raise ValueError(f"percentiles must be (low, high), got {percentiles}")
    return normalise_volume(vol, vol != 0 if mask is None else mask, percentiles)[0]  # type: ignore[arg-type]
