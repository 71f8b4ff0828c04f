"""Reading images the way the reference fusion evaluator does.

The evaluator reads every file with OpenCV as 8-bit BGR, converts to float32 and then to
grey with ``cv2.cvtColor(..., COLOR_BGR2GRAY)`` (``Y = 0.299 R + 0.587 G + 0.114 B`` in
float32) followed by ``np.round`` (half to even). This module does the same with Pillow,
bit-exactly (verified on the Harvard PET pseudo-colour images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fuse4seg.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "read_gray_reference", "rgb_to_gray_reference"]

#: File suffixes read by :func:`read_gray_reference` (and paired by ``evaluate-fusion``).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_CR, _CG, _CB = np.float32(0.299), np.float32(0.587), np.float32(0.114)
_WEIGHTS64 = np.array([_CR, _CG, _CB], dtype=np.float64)


def rgb_to_gray_reference(rgb: np.ndarray) -> np.ndarray:
    """8-bit RGB ``(H, W, 3)`` -> grey float32 ``(H, W)``: round(0.299 R + 0.587 G + 0.114 B).

    Bit-exact with OpenCV's vectorised float ``BGR2GRAY``, which evaluates
    ``fma(R, 0.299f, fma(B, 0.114f, G * 0.587f))`` in float32, followed by ``np.round``
    (half to even). The order matters for the pixels whose exact luminance is k + 0.5. The
    fused multiply-adds are emulated exactly in float64 (8-bit x float32 products and their
    sums are exact there; each step is rounded once to float32).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    from fuse4seg.metrics import _kernels

    if _kernels.available() and rgb.dtype == np.uint8:  # the same arithmetic, compiled
        out = np.empty(rgb.shape[:2], dtype=np.float32)
        _kernels.gray_reference(np.ascontiguousarray(rgb), _WEIGHTS64, out)
        return out
    x = rgb.astype(np.float64)
    t = (x[..., 1] * np.float64(_CG)).astype(np.float32).astype(np.float64)
    t = (x[..., 2] * np.float64(_CB) + t).astype(np.float32).astype(np.float64)
    y = (x[..., 0] * np.float64(_CR) + t).astype(np.float32)
    return np.round(y).astype(np.float32)


def read_gray_reference(path: str | Path) -> np.ndarray:
    """Read an image file as the reference evaluator does: grey float32 ``(H, W)``, 0..255.

    Colour images (PET/SPECT pseudo-colour) are scored on their luminance. 16-bit files are
    reduced to 8 bits (``>> 8``), as OpenCV's 8-bit colour read does; alpha is dropped.

    Raises:
        InputError: the file is missing or is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with Image.open(path) as im:
            im.load()
            # grey files: R = G = B = v gives exactly v (checked for all 256 levels in the
            # tests), so the colour conversion is skipped
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.uint32) >> 8
                return np.clip(arr, 0, 255).astype(np.float32)
            if im.mode == "L":
                return np.asarray(im, dtype=np.float32)
            rgb = np.asarray(im.convert("RGB"))
            if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(
                rgb[..., 1], rgb[..., 2]
            ):
                return rgb[..., 0].astype(np.float32)  # grey stored as RGB: exact, as above
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(path, f"cannot read image ({exc.__class__.__name__}: {exc})") from exc
    return rgb_to_gray_reference(rgb)
