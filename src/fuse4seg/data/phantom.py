"""Synthetic BraTS-like phantom cases (the embedded default dataset).

Each case is a skull-stripped "brain" with an irregular outline, white matter, a grey-matter
cortex cut by sulci (CSF), two lateral ventricles and one or two tumours: an enhancing rim
(ET) around a necrotic core (NCR, absent in some cases), surrounded by irregular edema (ED)
that spreads through white matter. Sizes vary, small tumours included.

Modality contrasts follow real MRI (relative intensities, see :data:`TISSUE_CONTRAST`):

* T1: WM > GM > CSF; tumour hypo-intense.
* T1ce: like T1, ET strongly bright, NCR dark; **ED almost equal to WM (nearly invisible)**.
* T2: CSF and ED bright.
* FLAIR: CSF suppressed, ED very bright; **ET and NCR almost equal (hard to separate)**.

T1ce + FLAIR together carry every label, but no single modality does, and the plain average
``(T1ce + FLAIR) / 2`` maps ET and ED to nearly the same value, so it loses the ET/ED
boundary. Images get partial-volume blur, smooth multiplicative bias fields, tissue texture,
Rician noise and a random per-case intensity scale (raw scanner-like units, stored int16);
the background outside the brain is exactly 0, as in skull-stripped BraTS data.

Everything is deterministic given the ``numpy.random.Generator`` (the writer uses
``np.random.default_rng(seed + case_index)``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from fuse4seg.data.discovery import MODALITIES, expected_filename
from fuse4seg.data.loading import save_segmentation, save_volume
from fuse4seg.errors import InputError

__all__ = [
    "TISSUES",
    "TISSUE_CONTRAST",
    "PHANTOM_AFFINE",
    "generate_phantom_case",
    "write_phantom_case",
    "write_phantom_dataset",
    "phantom_case_id",
]

#: tissue classes of the phantom's tissue map (index = value)
TISSUES: tuple[str, ...] = ("background", "CSF", "GM", "WM", "ED", "NCR", "ET")
_BG, _CSF, _GM, _WM, _ED, _NCR, _ET = range(7)

#: modality -> relative intensity per tissue, in :data:`TISSUES` order
TISSUE_CONTRAST: dict[str, tuple[float, ...]] = {
    #          bg   CSF   GM    WM    ED    NCR   ET
    "t1": (0.0, 0.22, 0.52, 0.74, 0.50, 0.30, 0.48),
    "t1ce": (0.0, 0.22, 0.52, 0.74, 0.71, 0.22, 1.20),
    "t2": (0.0, 1.00, 0.62, 0.44, 0.86, 0.90, 0.66),
    "flair": (0.0, 0.12, 0.56, 0.45, 0.98, 0.72, 0.66),
}

#: 1 mm isotropic voxel-to-world matrix (BraTS orientation: x and y flipped)
PHANTOM_AFFINE = np.array(
    [[-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def phantom_case_id(index: int) -> str:
    """Case id of phantom case ``index``: ``Phantom_000``, ``Phantom_001``, ..."""
    return f"Phantom_{index:03d}"


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, cell: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random float32 field, correlation length about ``cell`` voxels.

    A separable sum of Gaussian bumps centred on a coarse grid with random weights: three small
    matrix products, much faster than interpolating a noise grid.
    """
    bases = []
    for s in shape:
        n = int(np.ceil(s / cell)) + 3
        knots = (np.arange(n, dtype=np.float32) - 1.0) * cell
        x = np.arange(s, dtype=np.float32)[:, None]
        bases.append(np.exp(-0.5 * ((x - knots[None, :]) / cell) ** 2))  # (s, n)
    coeff = rng.standard_normal(tuple(b.shape[1] for b in bases)).astype(np.float32)
    field = np.einsum("abc,xa->xbc", coeff, bases[0])
    field = np.einsum("xbc,yb->xyc", field, bases[1])
    field = field @ bases[2].T  # (X, Y, Z)
    return (field - field.mean()) / (field.std() + 1e-8)


def _grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij", sparse=True)


def _blob(
    grid: tuple[np.ndarray, ...],
    centre: np.ndarray,
    radii: np.ndarray,
    wobble: np.ndarray,
) -> np.ndarray:
    """Normalised ellipsoidal distance (< 1 inside) with an irregular outline ``wobble``."""
    d2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
    return np.sqrt(d2) - wobble


def _tissue_map(
    shape: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue classes (values index :data:`TISSUES`) and the brain mask, both ``(X, Y, Z)``."""
    X, Y, Z = shape
    grid = _grid(shape)
    centre = np.array([X, Y, Z], dtype=np.float32) / 2 + rng.uniform(-0.02, 0.02, 3) * shape
    radii = np.array([0.37 * X, 0.44 * Y, 0.44 * Z]) * rng.uniform(0.92, 1.05, 3)
    outline = _smooth_field(shape, rng, cell=max(6.0, min(shape) / 4))
    dist = _blob(grid, centre, radii, 0.06 * outline)
    brain = dist < 1.0
    tissue = np.zeros(shape, dtype=np.uint8)
    tissue[brain] = _WM
    # cortex: a band under the surface whose depth varies (gyri), cut by sulci (CSF)
    depth_scale = float(np.mean(radii))
    cortex_depth = (3.5 + 1.2 * _smooth_field(shape, rng, cell=5.0)) / depth_scale
    cortex = brain & (dist > 1.0 - np.clip(cortex_depth, 1.2 / depth_scale, None))
    tissue[cortex] = _GM
    sulcus_field = _smooth_field(shape, rng, cell=3.0)
    sulci = brain & (dist > 1.0 - 1.6 * cortex_depth) & (np.abs(sulcus_field) < 0.22)
    surface_csf = brain & (dist > 1.0 - 0.9 / depth_scale)
    tissue[sulci | surface_csf] = _CSF
    # two lateral ventricles, mirrored about the mid-sagittal plane
    v_wobble = 0.1 * _smooth_field(shape, rng, cell=4.0)
    v_radii = np.array([0.045 * X, 0.15 * Y, 0.12 * Z]) * rng.uniform(0.7, 1.2)
    for side in (-1.0, 1.0):
        v_centre = centre + np.array([side * 0.07 * X, 0.02 * Y, 0.04 * Z])
        tissue[(_blob(grid, v_centre, v_radii, v_wobble) < 1.0) & brain] = _CSF
    return tissue, brain


def _add_tumours(
    tissue: np.ndarray, brain: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Add one or two tumours to ``tissue`` in place; returns (tissue, canonical seg)."""
    shape = tissue.shape
    grid = _grid(shape)
    seg = np.zeros(shape, dtype=np.uint8)
    n_tumours = 1 if rng.random() < 0.65 else 2
    # candidate centres: white matter well inside the brain
    inner = ndimage.binary_erosion(tissue == _WM, iterations=2)
    candidates = np.argwhere(inner)
    if len(candidates) == 0:
        candidates = np.argwhere(brain)
    smin = float(min(shape))
    for _ in range(n_tumours):
        centre = candidates[rng.integers(len(candidates))].astype(np.float32)
        small = rng.random() < 0.3
        r_core = rng.uniform(0.05, 0.08) * smin if small else rng.uniform(0.1, 0.2) * smin
        r_core = max(r_core, 2.0)
        core_radii = r_core * rng.uniform(0.8, 1.2, 3)
        core_d = _blob(grid, centre, core_radii, 0.12 * _smooth_field(shape, rng, cell=3.0))
        core = (core_d < 1.0) & brain
        # edema: larger, strongly irregular, spreading through white matter (not CSF)
        ed_radii = core_radii * rng.uniform(1.5, 2.6)
        ed_d = _blob(grid, centre, ed_radii, 0.35 * _smooth_field(shape, rng, cell=4.0))
        edema = (ed_d < 1.0) & brain & ~core & ((tissue == _WM) | (tissue == _GM) | (seg > 0))
        rim = max(1.5, rng.uniform(0.25, 0.4) * r_core)  # ET rim thickness in voxels
        has_ncr = (not small) and rng.random() < 0.8
        if has_ncr:
            inside = ndimage.distance_transform_edt(core)
            ncr = core & (inside > rim)
            et = core & ~ncr
        else:  # solid enhancing (small) or non-enhancing core with a thin enhancing part
            ncr = np.zeros_like(core)
            et = core
        ed_new = edema & (seg == 0)
        seg[ed_new] = 2
        tissue[ed_new] = _ED
        seg[et] = 3
        tissue[et] = _ET
        seg[ncr] = 1
        tissue[ncr] = _NCR
    return tissue, seg


def _render(
    tissue: np.ndarray, brain: np.ndarray, modality: str, rng: np.random.Generator
) -> np.ndarray:
    """Render one modality as float32 ``(X, Y, Z)`` in raw scanner-like units."""
    shape = tissue.shape
    table = np.asarray(TISSUE_CONTRAST[modality], dtype=np.float32)
    table = table * rng.uniform(0.96, 1.04, table.shape).astype(np.float32)
    image = table[tissue]
    texture = 1.0 + 0.04 * _smooth_field(shape, rng, cell=2.0)  # tissue heterogeneity
    image = image * texture.astype(np.float32)
    image = ndimage.gaussian_filter(image, rng.uniform(0.5, 0.8), truncate=3.0)  # partial volume
    bias = np.exp(0.10 * _smooth_field(shape, rng, cell=max(8.0, min(shape) / 2)))
    scale = rng.uniform(300.0, 3000.0)  # per-case intensity scaling
    image = image * bias.astype(np.float32) * scale
    sigma = rng.uniform(0.015, 0.03) * scale  # Rician noise
    real = image + rng.normal(0.0, sigma, shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, shape).astype(np.float32)
    image = np.sqrt(real * real + imag * imag)
    image = np.where(brain, np.maximum(np.rint(image), 1.0), 0.0)  # skull-stripped, bg = 0
    return image.astype(np.float32)


def generate_phantom_case(
    shape: Sequence[int] = (96, 96, 48),
    rng: np.random.Generator | None = None,
    return_tissues: bool = False,
) -> (
    tuple[dict[str, np.ndarray], np.ndarray] | tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]
):
    """Generate one phantom case in memory.

    Args:
        shape: ``(X, Y, Z)`` volume shape, each side >= 16; the axial axis is Z.
        rng: random generator (default ``np.random.default_rng(0)``).
        return_tissues: also return the tissue map (values index :data:`TISSUES`).

    Returns:
        ``(images, seg)`` or ``(images, seg, tissues)``: ``images`` maps each canonical
        modality (t1, t1ce, t2, flair) to a float32 ``(X, Y, Z)`` volume of non-negative
        integer values (0 outside the brain); ``seg`` is uint8 ``(X, Y, Z)`` with
        **canonical** labels 0 bg, 1 NCR, 2 ED, 3 ET (the files written by
        :func:`write_phantom_case` store ET as 4, BraTS 2021 convention).
    """
    shape_t = tuple(int(s) for s in shape)
    if len(shape_t) != 3 or min(shape_t) < 16:
        raise ValueError(f"phantom shape must be 3 sides >= 16, got {tuple(shape)}")
    rng = np.random.default_rng(0) if rng is None else rng
    tissue, brain = _tissue_map(shape_t, rng)  # type: ignore[arg-type]
    tissue, seg = _add_tumours(tissue, brain, rng)
    images = {m: _render(tissue, brain, m, rng) for m in MODALITIES}
    if return_tissues:
        return images, seg, tissue
    return images, seg


def write_phantom_case(
    out_dir: str | Path,
    index: int,
    shape: Sequence[int] = (96, 96, 48),
    seed: int = 0,
) -> Path:
    """Write phantom case ``index`` (rng ``default_rng(seed + index)``) in BraTS 2021 naming.

    Files ``<out_dir>/<case>/<case>_{t1,t1ce,t2,flair}.nii.gz`` (int16) and ``<case>_seg.nii.gz``
    (uint8, labels {0, 1, 2, 4}); each written atomically. Returns the case folder.
    """
    case_id = phantom_case_id(index)
    folder = Path(out_dir) / case_id
    images, seg = generate_phantom_case(shape, np.random.default_rng(seed + index))  # type: ignore[misc]
    for m in MODALITIES:
        path = folder / expected_filename(case_id, "brats2021", m)
        save_volume(images[m].astype(np.int16), path, PHANTOM_AFFINE)
    save_segmentation(seg, folder / expected_filename(case_id, "brats2021", "seg"), PHANTOM_AFFINE)
    return folder


def _is_phantom_case_folder(path: Path) -> bool:
    """A folder written by :func:`write_phantom_case` (``Phantom_NNN`` with its own files)."""
    if not path.is_dir() or re.fullmatch(r"Phantom_\d{3,}", path.name) is None:
        return False
    return all(p.is_file() and p.name.startswith(f"{path.name}_") for p in path.iterdir())


def write_phantom_dataset(
    out_dir: str | Path,
    cases: int = 16,
    shape: Sequence[int] = (96, 96, 48),
    seed: int = 0,
    progress: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``cases`` phantom cases into ``out_dir``; returns the case folders.

    ``out_dir`` must be empty or absent (old and new cases would mix otherwise); with
    ``overwrite`` its phantom case folders are removed first, and anything else in it is
    refused (only what this function writes is ever deleted).

    Raises:
        InputError: ``out_dir`` is a file, is not empty and ``overwrite`` is False, or holds
            something other than phantom cases.
        ValueError: ``cases < 1`` or a bad ``shape``.
    """
    from fuse4seg.io.output_policy import claim_output_folder

    out = Path(out_dir)
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    shape_t = tuple(int(s) for s in shape)
    if len(shape_t) != 3 or min(shape_t) < 16:
        raise ValueError(f"phantom shape must be 3 sides >= 16, got {tuple(shape)}")
    if out.is_dir() and overwrite:
        foreign = sorted(p.name for p in out.iterdir() if not _is_phantom_case_folder(p))
        if foreign:
            raise InputError(
                out,
                f"holds files that are not phantom cases ({', '.join(foreign[:3])}); "
                "not replaced, choose an empty or new folder",
            )
    claim_output_folder(out, overwrite, what="its phantom cases")
    for old in sorted(out.iterdir()):  # only phantom case folders are left here
        shutil.rmtree(old)
    indices = range(cases)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="phantom", unit="case")
    return [write_phantom_case(out, i, shape_t, seed) for i in indices]
