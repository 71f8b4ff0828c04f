"""Volume preprocessing for the store: normalisation, brain z-range, in-plane resampling, crop.

All functions are pure numpy on ``(X, Y, Z)`` volumes or ``(D, ..., H, W)`` slice stacks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = [
    "PERCENTILES",
    "brain_mask",
    "normalise_volume",
    "brain_z_range",
    "resample_slices",
    "centre_crop_or_pad",
    "brain_centre",
]

#: robust normalisation percentiles (of the non-zero brain voxels)
PERCENTILES: tuple[float, float] = (0.5, 99.5)


def brain_mask(volumes: list[np.ndarray] | tuple[np.ndarray, ...]) -> np.ndarray:
    """Boolean brain mask ``(X, Y, Z)``: any modality non-zero."""
    mask = volumes[0] != 0
    for v in volumes[1:]:
        mask |= v != 0
    return mask


def normalise_volume(
    volume: np.ndarray, mask: np.ndarray, percentiles: tuple[float, float] = PERCENTILES
) -> tuple[np.ndarray, tuple[float, float]]:
    """Clip to the ``percentiles`` of ``volume[mask & volume != 0]``, scale to [0, 1].

    Voxels outside ``mask`` are 0. Returns ``(float32 volume, (low, high))``; a constant
    brain gives 1 inside the mask.
    """
    values = volume[mask & (volume != 0)]
    if values.size == 0:
        return np.zeros(volume.shape, np.float32), (0.0, 0.0)
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    out = np.clip(volume, lo, hi, dtype=np.float32) if hi > lo else np.ones_like(volume)
    if hi > lo:
        out -= lo
        out *= 1.0 / (hi - lo)
    out[~mask] = 0.0
    return out.astype(np.float32, copy=False), (lo, hi)


def brain_z_range(mask: np.ndarray) -> tuple[int, int]:
    """Half-open axial range ``[z0, z1)`` of the brain's bounding box in ``mask (X, Y, Z)``."""
    zs = np.flatnonzero(mask.any(axis=(0, 1)))
    if zs.size == 0:
        raise ValueError("empty brain mask")
    return int(zs[0]), int(zs[-1]) + 1


def _mode_pool(labels: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """Majority label in k x k blocks of ``labels (D, H, W)``; ties go to the higher label."""
    D, H, W = labels.shape
    blocks = labels.reshape(D, H // k, k, W // k, k)
    counts = np.stack([(blocks == c).sum(axis=(2, 4)) for c in range(num_classes)], axis=0)
    # argmax takes the first maximum: reverse so ties prefer tumour (higher) labels
    return (num_classes - 1 - np.argmax(counts[::-1], axis=0)).astype(labels.dtype)


def resample_slices(
    images: np.ndarray, labels: np.ndarray | None, scale: float, num_classes: int = 4
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample the in-plane axes of ``images (D, M, H, W)`` and ``labels (D, H, W)`` by ``scale``.

    ``scale = 1/k`` (integer k, e.g. 0.5): images by k x k block mean (anti-aliased),
    labels by block majority. Other scales: Gaussian anti-aliasing (when shrinking) and
    linear interpolation for images, nearest neighbour for labels. Sizes become
    ``round(H * scale)``; block pooling first crops H, W to multiples of k.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if scale == 1.0:
        return images, labels
    D, M, H, W = images.shape
    k = 1.0 / scale
    if abs(k - round(k)) < 1e-9 and round(k) >= 2:
        k = int(round(k))
        h, w = (H // k) * k, (W // k) * k
        img = images[:, :, :h, :w].reshape(D, M, h // k, k, w // k, k).mean(axis=(3, 5))
        lab = None if labels is None else _mode_pool(labels[:, :h, :w], k, num_classes)
        return img.astype(np.float32), lab
    out_h, out_w = int(round(H * scale)), int(round(W * scale))
    zoom = (1.0, 1.0, out_h / H, out_w / W)
    src = images
    if scale < 1.0:
        sigma = max(0.0, (1.0 / scale - 1.0) / 2.0)
        src = ndimage.gaussian_filter(images, (0, 0, sigma, sigma))
    img = ndimage.zoom(src, zoom, order=1, grid_mode=True, mode="nearest")
    lab = None
    if labels is not None:
        lab = ndimage.zoom(labels, zoom[1:], order=0, grid_mode=True, mode="nearest")
    return img.astype(np.float32), lab


def brain_centre(mask2d: np.ndarray) -> tuple[float, float]:
    """Centre ``(h, w)`` of the bounding box of a 2D mask (image centre when empty)."""
    hs = np.flatnonzero(mask2d.any(axis=1))
    ws = np.flatnonzero(mask2d.any(axis=0))
    if hs.size == 0:
        return (mask2d.shape[0] - 1) / 2, (mask2d.shape[1] - 1) / 2
    return (hs[0] + hs[-1]) / 2, (ws[0] + ws[-1]) / 2


def centre_crop_or_pad(
    arr: np.ndarray, size: int, centre: tuple[float, float] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Crop/zero-pad the last two axes of ``arr (..., H, W)`` to ``(size, size)``.

    The window is centred on ``centre`` (default: the array centre) and kept inside the
    array when cropping; padding is symmetric. Returns ``(array, (oh, ow))`` where
    ``out[..., i, j] = arr[..., i + oh, j + ow]`` (negative offsets mean padding).
    """
    H, W = arr.shape[-2:]
    if centre is None:
        centre = ((H - 1) / 2, (W - 1) / 2)
    offsets = []
    for n, c in zip((H, W), centre, strict=True):
        if n >= size:
            o = int(round(c - (size - 1) / 2))
            o = min(max(o, 0), n - size)
        else:
            o = -((size - n) // 2)
        offsets.append(o)
    out = np.zeros(arr.shape[:-2] + (size, size), dtype=arr.dtype)
    src, dst = [], []
    for n, o in zip((H, W), offsets, strict=True):
        s0, s1 = max(o, 0), min(o + size, n)
        src.append(slice(s0, s1))
        dst.append(slice(s0 - o, s1 - o))
    out[(..., dst[0], dst[1])] = arr[(..., src[0], src[1])]
    return out, (offsets[0], offsets[1])
