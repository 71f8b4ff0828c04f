"""Data augmentation for stored slices and patches (numpy rng: deterministic).

Spatial: random flips of each spatial axis (p = 0.5) and, for square in-plane shapes, a
random in-plane ``rot90`` (k in 0..3). Intensity: per modality, a random scale and shift
in +-``jitter`` (default 5 %) applied to voxels > 0 only (the background stays exactly 0),
clipped to [0, 1]. Labels get exactly the same spatial transform.

The draws are made in a fixed order (flips, rot90, jitter), so :func:`augment` and the
datasets' fast path (:func:`draw_spatial` + :func:`apply_spatial` on memory-mapped arrays,
then :func:`jitter_`) give identical results for the same rng.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "INTENSITY_JITTER",
    "SpatialParams",
    "augment",
    "draw_spatial",
    "apply_spatial",
    "jitter_",
]

#: default relative intensity jitter (scale and shift)
INTENSITY_JITTER = 0.05


@dataclass(frozen=True)
class SpatialParams:
    """Flipped spatial axes (0-based over the spatial dims) and in-plane rot90 count."""

    flips: tuple[int, ...]
    k: int


def draw_spatial(rng: np.random.Generator, spatial_shape: tuple[int, ...]) -> SpatialParams:
    """Draw flips (p = 0.5 per axis) and rot90 k (square in-plane shapes only)."""
    flips = tuple(a for a in range(len(spatial_shape)) if rng.random() < 0.5)
    k = int(rng.integers(4)) if spatial_shape[-1] == spatial_shape[-2] else 0
    return SpatialParams(flips, k)


def apply_spatial(arr: np.ndarray, params: SpatialParams, lead: int) -> np.ndarray:
    """Apply ``params`` to the spatial axes of ``arr`` (after ``lead`` leading axes); a view."""
    for a in params.flips:
        arr = np.flip(arr, axis=a + lead)
    if params.k:
        arr = np.rot90(arr, params.k, axes=(-2, -1))
    return arr


def jitter_(
    image: torch.Tensor, rng: np.random.Generator, jitter: float = INTENSITY_JITTER
) -> torch.Tensor:
    """In place: per-channel scale and shift in +-``jitter`` of voxels > 0, clip to [0, 1].

    ``image`` is ``(M, *S)`` float; returns it.
    """
    if jitter <= 0:
        return image
    m = image.shape[0]
    shape = (m,) + (1,) * (image.dim() - 1)
    scale = torch.from_numpy(1.0 + rng.uniform(-jitter, jitter, m)).to(image.dtype).view(shape)
    shift = torch.from_numpy(rng.uniform(-jitter, jitter, m)).to(image.dtype).view(shape)
    brain = torch.sign(image)  # 1 inside the brain, 0 in the background (image >= 0)
    image.mul_(scale).addcmul_(brain, shift).clamp_(0.0, 1.0)
    return image


def augment(
    image: torch.Tensor | np.ndarray,
    label: torch.Tensor | np.ndarray,
    rng: np.random.Generator,
    jitter: float = INTENSITY_JITTER,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment ``image (M, *S)`` and ``label (*S)``, ``S`` = ``(H, W)`` or ``(D, H, W)``.

    Args:
        image: float tensor/array ``(M, H, W)`` or ``(M, D, H, W)``, intensities in [0, 1].
        label: integer tensor/array ``(H, W)`` or ``(D, H, W)``.
        rng: source of all random draws (same rng state -> same transform).
        jitter: relative intensity scale/shift range; 0 disables intensity jitter.

    Returns:
        New ``(image float32, label int64)`` tensors; the inputs are not modified.
    """
    img = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    lab = label.numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if img.shape[1:] != lab.shape:
        raise ValueError(f"image {img.shape} and label {lab.shape} spatial shapes differ")
    params = draw_spatial(rng, lab.shape)
    out_img = torch.from_numpy(np.array(apply_spatial(img, params, 1))).float()
    out_lab = torch.from_numpy(np.array(apply_spatial(lab, params, 0))).long()
    return jitter_(out_img, rng, jitter), out_lab
