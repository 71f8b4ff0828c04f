"""Loading a BraTS case from NIfTI with input checks, and writing segmentations back.

Arrays keep the on-disk NIfTI axes ``(X, Y, Z)``; axial slices are ``vol[:, :, z]``.
Every problem raises :class:`fuse4seg.errors.InputError` naming the offending file.
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from fuse4seg.data.discovery import MODALITIES, BratsCase
from fuse4seg.data.labels import EDITION_LABELS, from_canonical_labels, to_canonical_labels
from fuse4seg.errors import InputError, InputWarning
from fuse4seg.io.atomic import atomic_path

__all__ = [
    "AFFINE_TOLERANCE",
    "MAX_VOXELS",
    "check_nifti_header",
    "LoadedCase",
    "load_case",
    "read_nifti",
    "save_segmentation",
    "save_volume",
]

#: largest allowed absolute difference between the affines of one case's files
AFFINE_TOLERANCE = 1e-3
#: largest volume read, in voxels (512^3: 512 MiB as float32; BraTS volumes have 8.9e6). A
#: header declaring more is refused before any memory is allocated; raise it here for larger
#: volumes (read at each call).
MAX_VOXELS = 512**3

_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError)


@dataclass
class LoadedCase:
    """A loaded, checked case.

    Attributes:
        case: the discovered case.
        images: canonical modality -> float32 volume ``(X, Y, Z)``, for the loaded modalities.
        seg: uint8 canonical labels ``(X, Y, Z)`` (0 bg, 1 NCR, 2 ED, 3 ET), or None.
        affine: ``(4, 4)`` voxel-to-world matrix of the first loaded file.
        header: NIfTI header of the first loaded file (for writing outputs back).
        spacing: ``(3,)`` voxel sizes in mm.
    """

    case: BratsCase
    images: dict[str, np.ndarray]
    seg: np.ndarray | None
    affine: np.ndarray
    header: Any
    spacing: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume shape ``(X, Y, Z)``."""
        return tuple(next(iter(self.images.values())).shape)  # type: ignore[return-value]


def check_nifti_header(path: str | Path, img: nib.spatialimages.SpatialImage) -> None:
    """Refuse a NIfTI whose header promises more data than is sane or than the file holds.

    Checked before any voxel is read: the declared number of voxels against
    :data:`MAX_VOXELS`, and for an uncompressed ``.nii`` the declared data size (offset +
    voxels x bytes per voxel) against the file size.

    Raises:
        InputError: naming ``path``, the declared shape and the limit or file size.
    """
    path = Path(path)
    shape = tuple(int(s) for s in img.shape)
    n_voxels = math.prod(shape)
    dims = "x".join(map(str, shape))
    if n_voxels > MAX_VOXELS:
        raise InputError(
            path,
            f"header declares {dims} = {n_voxels} voxels, more than the limit {MAX_VOXELS} "
            "(fuse4seg.data.loading.MAX_VOXELS); not read",
        )
    if path.name.lower().endswith(".nii"):
        itemsize = np.dtype(img.get_data_dtype()).itemsize
        needed = int(getattr(img.dataobj, "offset", 0) or 0) + n_voxels * itemsize
        size = path.stat().st_size
        if size < needed:
            raise InputError(
                path,
                f"header declares {dims} voxels ({needed} bytes with the header), the file has "
                f"{size} bytes: truncated or corrupt",
            )


def read_nifti(path: str | Path, as_float: bool = True) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Read one 3D NIfTI file; returns ``(array (X, Y, Z), image)``.

    ``as_float`` gives float32 (scaled by the header's slope/intercept); otherwise the
    stored values as read by ``dataobj`` (scaling applied, dtype kept where possible).

    Raises:
        InputError: missing, unreadable or corrupt file, not a 3D volume, or a header that
            declares more voxels than :data:`MAX_VOXELS` or than an uncompressed file holds.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist")
    try:
        img = nib.load(str(path))
    except _READ_ERRORS as exc:
        raise InputError(path, f"cannot read NIfTI ({_short(exc)})") from None
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(path, f"expected a 3D volume, got shape {shape} ({len(shape)}D)")
    check_nifti_header(path, img)
    try:
        if as_float:
            data = img.get_fdata(dtype=np.float32, caching="unchanged")
        else:
            data = np.asanyarray(img.dataobj)
    except _READ_ERRORS as exc:
        raise InputError(
            path, f"cannot read NIfTI data, file corrupt or truncated ({_short(exc)})"
        ) from None
    return np.asarray(data).reshape(shape), img


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _check_geometry(
    path: Path, img: nib.Nifti1Image, shape: tuple, ref: tuple[Path, tuple, np.ndarray] | None
) -> None:
    if ref is None:
        return
    ref_path, ref_shape, ref_affine = ref
    if shape != ref_shape:
        raise InputError(path, f"shape {shape} differs from {ref_path.name} {ref_shape}")
    diff = float(np.max(np.abs(img.affine - ref_affine)))
    if not diff <= AFFINE_TOLERANCE:
        raise InputError(
            path,
            f"affine differs from {ref_path.name} by up to {diff:.4g} "
            f"(tolerance {AFFINE_TOLERANCE:g})",
        )


def load_case(
    case: BratsCase, modalities: tuple[str, ...] | list[str] | None = None, seg: bool = True
) -> LoadedCase:
    """Load and check the requested modalities (and seg) of ``case``.

    Args:
        case: from :func:`fuse4seg.data.discover_cases`.
        modalities: canonical modality names to load (default: all four).
        seg: load the segmentation when the case has one (a case without seg is valid).

    Returns:
        :class:`LoadedCase` with float32 ``(X, Y, Z)`` volumes and uint8 canonical labels.

    Raises:
        InputError: naming the file, for a missing modality file, an unreadable or corrupt
            file, a non-3D volume, shape or affine (tolerance 1e-3) mismatch, NaN/Inf voxels,
            an all-zero modality, or seg values that are non-integer or outside the
            edition's label set.
    """
    mods = tuple(MODALITIES if modalities is None else modalities)
    if not mods:
        raise ValueError("modalities must not be empty")
    for m in mods:
        if m not in MODALITIES:
            raise ValueError(f"unknown modality {m!r}; expected a subset of {MODALITIES}")
    for m in mods:
        if m not in case.files:
            raise InputError(
                case.folder, f"missing modality {m} (expected {case.expected_path(m).name})"
            )
    images: dict[str, np.ndarray] = {}
    ref: tuple[Path, tuple, np.ndarray] | None = None
    header = None
    for m in mods:
        path = case.files[m]
        data, img = read_nifti(path, as_float=True)
        _check_geometry(path, img, data.shape, ref)
        if not np.isfinite(data).all():
            n_bad = int(np.count_nonzero(~np.isfinite(data)))
            raise InputError(path, f"{n_bad} NaN/Inf voxels")
        if not data.any():
            raise InputError(path, "all-zero volume (empty modality)")
        if float(data.min()) == float(data.max()):
            warnings.warn(
                f"{path}: constant volume (every voxel {float(data.max()):g}); this modality "
                "carries no information",
                InputWarning,
                stacklevel=2,
            )
        if ref is None:
            ref = (path, data.shape, np.asarray(img.affine, dtype=np.float64))
            header = img.header
        images[m] = data
    assert ref is not None
    seg_arr = None
    if seg and case.seg is not None:
        raw, img = read_nifti(case.seg, as_float=False)
        _check_geometry(case.seg, img, raw.shape, ref)
        allowed = EDITION_LABELS[case.naming]
        try:
            seg_arr = to_canonical_labels(raw, case.et_label)
        except ValueError as exc:
            raise InputError(
                case.seg, f"{exc} (allowed {case.naming} labels: {list(allowed)})"
            ) from None
    spacing = np.asarray(header.get_zooms()[:3], dtype=np.float64)
    return LoadedCase(
        case=case, images=images, seg=seg_arr, affine=ref[2], header=header, spacing=spacing
    )


def save_segmentation(
    seg: np.ndarray,
    path: str | Path,
    affine: np.ndarray,
    et_label: int = 4,
    header: Any = None,
) -> Path:
    """Write canonical labels ``(X, Y, Z)`` as a uint8 NIfTI in a file convention, atomically.

    ``et_label`` 4 writes BraTS 2018-2022 labels, 3 BraTS 2023 labels. ``header`` (e.g.
    ``LoadedCase.header``) keeps the source's spatial metadata.
    """
    out = from_canonical_labels(seg, et_label, dtype=np.uint8)
    return save_volume(out, path, affine, header)


def save_volume(
    data: np.ndarray,
    path: str | Path,
    affine: np.ndarray,
    header: Any = None,
    slope: float | None = None,
) -> Path:
    """Write an array ``(X, Y, Z[, C])`` as NIfTI (``.nii``/``.nii.gz``) atomically; dtype kept.

    ``slope``: the header's ``scl_slope`` (readers see ``data * slope``), e.g. ``1/255`` for
    an image in [0, 1] stored as uint8; ``None`` writes no scaling.
    """
    path = Path(path)
    hdr = None
    if header is not None:
        hdr = header.copy()
        hdr.set_data_dtype(data.dtype)
        hdr["scl_slope"] = np.nan
        hdr["scl_inter"] = np.nan
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64), header=hdr)
    img.set_data_dtype(data.dtype)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
