"""2D image reading/writing for pair fusion, and RGB <-> YCbCr conversion.

Supported inputs: PNG, JPEG, TIFF (Pillow) and 2D NIfTI (``.nii``/``.nii.gz``, shape
``(X, Y)`` or ``(X, Y, 1)``), 8- or 16-bit, grey or RGB. An RGB file whose three channels are
equal (a grey image stored as colour, as in the Harvard atlas PNGs) is read as grey.

Intensities are returned in ``[0, 1]``: integer images are divided by their full scale
(255 for 8-bit, 65535 for 16-bit); float images (float TIFF / NIfTI) are min-max scaled.

Colour conversion follows ITU-R BT.601 full range with OpenCV's coefficients (the
convention of ``cv2.COLOR_RGB2YCrCb`` used by the CDDFuse reference code), on floats in
``[0, 1]`` with chroma offset 0.5::

    Y  = 0.299 R + 0.587 G + 0.114 B
    Cr = 0.713 (R - Y) + 0.5            R = Y + 1.403 (Cr - 0.5)
    Cb = 0.564 (B - Y) + 0.5            G = Y - 0.714 (Cr - 0.5) - 0.344 (Cb - 0.5)
                                        B = Y + 1.773 (Cb - 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fuse4seg.errors import InputError
from fuse4seg.io.atomic import atomic_path

__all__ = [
    "IMAGE_SUFFIXES",
    "Image2D",
    "image_stem",
    "is_image_file",
    "read_image",
    "write_grey_png",
    "write_rgb_png",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "ycbcr_to_rgb_preserving_chroma",
]

#: File suffixes read by :func:`read_image` (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii", ".nii.gz")

_CHROMA_OFFSET = 0.5


@dataclass
class Image2D:
    """A 2D image in ``[0, 1]``.

    Attributes:
        pixels: float32 ``(H, W)`` for grey or ``(H, W, 3)`` RGB, values in ``[0, 1]``.
        bit_depth: 8 or 16, the depth of the file (float files count as 16).
        path: the file it was read from.
    """

    pixels: np.ndarray
    bit_depth: int
    path: Path

    @property
    def is_colour(self) -> bool:
        return self.pixels.ndim == 3

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


def image_stem(path: str | Path) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``, ``b.png`` -> ``b``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_image_file(path: str | Path) -> bool:
    """True for a visible file with one of :data:`IMAGE_SUFFIXES`."""
    p = Path(path)
    return (
        p.is_file()
        and not p.name.startswith(".")
        and p.name.lower().endswith(tuple(IMAGE_SUFFIXES))
    )


def _scale_integer(arr: np.ndarray, path: Path) -> tuple[np.ndarray, int]:
    if arr.dtype == np.bool_:
        return arr.astype(np.float32), 8
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0:
            raise InputError(path, "negative pixel values in an integer image are not supported")
        maxval = int(arr.max()) if arr.size else 0
        if arr.dtype.itemsize == 1:
            return arr.astype(np.float32) / 255.0, 8
        if maxval > 65535:
            raise InputError(path, f"pixel values up to {maxval} exceed 16 bits")
        return arr.astype(np.float32) / 65535.0, 16
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise InputError(path, "image contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            return arr, 16
        if hi == lo:
            return np.zeros_like(arr), 16
        return (arr - lo) / (hi - lo), 16
    raise InputError(path, f"unsupported pixel type {arr.dtype}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # checks the declared size before decoding
            im.load()
            mode = im.mode
            if mode in ("P", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif mode in ("1", "LA"):
                im = im.convert("L")
            elif mode == "I;16B":
                im = im.convert("I")
            arr = np.asarray(im)
    except Image.DecompressionBombError as exc:
        raise InputError(
            path,
            f"image too large ({_first_line(exc)}); PIL.Image.MAX_IMAGE_PIXELS is "
            f"{Image.MAX_IMAGE_PIXELS}",
        ) from None
    except MemoryError:
        raise InputError(path, "out of memory while decoding the image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(path, f"cannot read image ({type(exc).__name__}: {exc})") from None
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    return arr


def _read_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    from fuse4seg.data.loading import check_nifti_header

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(path, f"cannot read NIfTI ({type(exc).__name__}: {exc})") from None
    check_nifti_header(path, img)  # before allocating what the header declares
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise InputError(path, f"cannot read NIfTI ({type(exc).__name__}: {exc})") from None
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise InputError(path, f"expected a 2D NIfTI image, got shape {tuple(img.shape)}")
    # NIfTI axes are (X, Y); image rows follow Y, so transpose to (H, W) = (Y, X).
    return np.ascontiguousarray(arr.T)


def read_image(path: str | Path) -> Image2D:
    """Read a 2D grey or RGB image into ``[0, 1]``.

    Args:
        path: PNG, JPEG, TIFF or 2D NIfTI file.

    Returns:
        :class:`Image2D` with ``pixels`` ``(H, W)`` (grey, including RGB files whose channels
        are equal) or ``(H, W, 3)`` (colour).

    Raises:
        InputError: missing, unreadable or corrupt file, wrong dimensionality, NaN values,
            more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` allows (decompression bomb) or a
            NIfTI header declaring more than :data:`fuse4seg.data.loading.MAX_VOXELS`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if not path.name.lower().endswith(tuple(IMAGE_SUFFIXES)):
        raise InputError(path, f"unsupported image type (use one of {', '.join(IMAGE_SUFFIXES)})")
    is_nifti = path.name.lower().endswith((".nii", ".nii.gz"))
    arr = _read_nifti(path) if is_nifti else _read_pillow(path)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise InputError(path, f"expected a grey or RGB 2D image, got array shape {arr.shape}")
    if min(arr.shape[:2]) < 2:
        raise InputError(path, f"image too small: {arr.shape[:2]}")
    pixels, depth = _scale_integer(arr, path)
    if (
        pixels.ndim == 3
        and np.array_equal(pixels[..., 0], pixels[..., 1])
        and np.array_equal(pixels[..., 0], pixels[..., 2])
    ):
        pixels = pixels[..., 0]
    return Image2D(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32), bit_depth=depth, path=path
    )


def _quantise(x: np.ndarray, bit_depth: int) -> np.ndarray:
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    full = 255.0 if bit_depth == 8 else 65535.0
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.rint(np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * full).astype(dtype)


def write_grey_png(path: str | Path, image: np.ndarray, bit_depth: int = 8) -> None:
    """Write a grey image ``(H, W)`` in ``[0, 1]`` as an 8- or 16-bit PNG, atomically.

    Values are clipped to ``[0, 1]`` and rounded to the nearest level.
    """
    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"grey image must be (H, W), got shape {image.shape}")
    q = _quantise(image, bit_depth)
    with atomic_path(path) as tmp:
        Image.fromarray(q).save(tmp, format="PNG")


def write_rgb_png(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB image ``(H, W, 3)`` in ``[0, 1]`` as an 8-bit RGB PNG, atomically."""
    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"RGB image must be (H, W, 3), got shape {image.shape}")
    q = _quantise(image, 8)
    with atomic_path(path) as tmp:
        Image.fromarray(q, mode="RGB").save(tmp, format="PNG")


def rgb_to_ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 full-range RGB -> ``(Y, Cb, Cr)``, floats in ``[0, 1]``.

    Args:
        rgb: ``(..., 3)`` in ``[0, 1]``.

    Returns:
        ``Y, Cb, Cr`` each ``(...)``; chroma is centred on 0.5.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[-1] != 3:
        raise ValueError(f"expected (..., 3) RGB, got shape {rgb.shape}")
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cr = 0.713 * (r - y) + _CHROMA_OFFSET
    cb = 0.564 * (b - y) + _CHROMA_OFFSET
    return y, cb, cr


def _inverse_offsets(cb: np.ndarray, cr: np.ndarray) -> tuple[np.ndarray, ...]:
    dcb = np.asarray(cb, dtype=np.float32) - _CHROMA_OFFSET
    dcr = np.asarray(cr, dtype=np.float32) - _CHROMA_OFFSET
    return 1.403 * dcr, -0.714 * dcr - 0.344 * dcb, 1.773 * dcb


def ycbcr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """BT.601 full-range ``(Y, Cb, Cr)`` -> RGB ``(..., 3)`` clipped to ``[0, 1]``.

    This is OpenCV's ``COLOR_YCrCb2RGB``: out-of-gamut pixels are clipped per channel, which
    changes their chroma. See :func:`ycbcr_to_rgb_preserving_chroma`.
    """
    off_r, off_g, off_b = _inverse_offsets(cb, cr)
    y = np.asarray(y, dtype=np.float32)
    rgb = np.stack([y + off_r, y + off_g, y + off_b], axis=-1)
    return np.clip(rgb, 0.0, 1.0)


def ycbcr_to_rgb_preserving_chroma(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Like :func:`ycbcr_to_rgb`, but keeps ``Cb, Cr`` exact by limiting ``Y`` instead.

    For each pixel, ``Y`` is clamped to the interval where all of R, G, B stay in ``[0, 1]``
    for the given chroma (the interval is non-empty whenever ``Cb, Cr`` come from a valid RGB
    colour). The output chroma then equals the input chroma, up to the 8-bit rounding of the
    written file; only the luminance of saturated pixels changes.

    Args:
        y, cb, cr: ``(...)`` floats in ``[0, 1]``.

    Returns:
        RGB ``(..., 3)`` in ``[0, 1]``.
    """
    offs = _inverse_offsets(cb, cr)
    lo = np.maximum.reduce([-o for o in offs])
    hi = np.minimum.reduce([1.0 - o for o in offs])
    hi = np.maximum(hi, lo)  # empty interval (invalid chroma): fall back to per-channel clip
    y = np.clip(np.asarray(y, dtype=np.float32), lo, hi)
    rgb = np.stack([y + o for o in offs], axis=-1)
    return np.clip(rgb, 0.0, 1.0)
