"""BraTS label conventions: canonical labels, per-edition ET value and tumour regions.

fuse4seg works internally with the *canonical* labels

    0 background, 1 NCR (necrotic / non-enhancing core), 2 ED (edema), 3 ET (enhancing tumour)

BraTS 2018-2022 store ET as 4 (naming ``brats2021``), BraTS 2023+ as 3 (naming ``brats2023``).
:func:`to_canonical_labels` / :func:`from_canonical_labels` convert between a file's
convention and the canonical one, so outputs can be written back as the input was.
Evaluation regions (whole tumour, tumour core, enhancing tumour) are sets of canonical labels.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CANONICAL_LABELS",
    "LABEL_NAMES",
    "NUM_CLASSES",
    "NAMINGS",
    "EDITION_LABELS",
    "REGIONS",
    "et_label_for",
    "to_canonical_labels",
    "from_canonical_labels",
    "region_mask",
]

#: canonical label value -> short name
CANONICAL_LABELS: dict[int, str] = {0: "background", 1: "NCR", 2: "ED", 3: "ET"}
#: names in label order, ``LABEL_NAMES[k]`` is the name of canonical label ``k``
LABEL_NAMES: tuple[str, ...] = ("background", "NCR", "ED", "ET")
NUM_CLASSES = 4

#: the file-naming conventions fuse4seg recognises (see :mod:`fuse4seg.data.discovery`)
NAMINGS: tuple[str, ...] = ("brats2021", "brats2023")
#: naming -> label values allowed in that edition's segmentation files
EDITION_LABELS: dict[str, tuple[int, ...]] = {
    "brats2021": (0, 1, 2, 4),
    "brats2023": (0, 1, 2, 3),
}
#: evaluation regions as sets of canonical labels: WT = NCR+ED+ET, TC = NCR+ET, ET
REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


def et_label_for(naming: str) -> int:
    """ET label value of a naming: 4 for ``brats2021`` (2018-2022), 3 for ``brats2023``."""
    if naming == "brats2021":
        return 4
    if naming == "brats2023":
        return 3
    raise ValueError(f"unknown naming {naming!r}; expected one of {NAMINGS}")


def _check_et(et_label: int) -> None:
    if et_label not in (3, 4):
        raise ValueError(f"et_label must be 4 (BraTS 2018-2022) or 3 (BraTS 2023+), got {et_label}")


def _lookup(values: np.ndarray, table: np.ndarray, allowed: tuple[int, ...]) -> np.ndarray:
    """Map integer ``values`` through ``table`` (-1 marks a value outside ``allowed``)."""
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    if not np.issubdtype(arr.dtype, np.integer) and (
        not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr))
    ):
        raise ValueError("label array has non-integer values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi >= len(table):
        raise ValueError(f"label values must be in {set(allowed)}, found range [{lo:g}, {hi:g}]")
    idx = arr if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2 else arr.astype(np.intp)
    out = table[idx]
    if np.any(out < 0):
        bad = sorted(set(np.unique(arr[out < 0]).astype(int).tolist()))
        raise ValueError(f"label values {bad} not in {set(allowed)}")
    return out.astype(np.uint8)


def to_canonical_labels(seg: np.ndarray, et_label: int) -> np.ndarray:
    """Convert a segmentation in a file's convention to canonical labels.

    Args:
        seg: integer (or integer-valued float) label array of any shape, values in
            ``{0, 1, 2, et_label}``.
        et_label: 4 (BraTS 2018-2022) or 3 (BraTS 2023+).

    Returns:
        uint8 array of the same shape with values in ``{0, 1, 2, 3}``.

    Raises:
        ValueError: a value outside the convention's label set, or a non-integer value.
    """
    _check_et(et_label)
    table = np.full(et_label + 1, -1, dtype=np.int16)
    table[[0, 1, 2]] = [0, 1, 2]
    table[et_label] = 3
    return _lookup(seg, table, (0, 1, 2, et_label))


def from_canonical_labels(
    seg: np.ndarray, et_label: int, dtype: np.dtype | type = np.uint8
) -> np.ndarray:
    """Convert canonical labels ``{0, 1, 2, 3}`` to a file convention (ET -> ``et_label``).

    Returns an array of ``dtype`` (default uint8) with the same shape.
    """
    _check_et(et_label)
    table = np.array([0, 1, 2, et_label], dtype=np.int16)
    return _lookup(seg, table, (0, 1, 2, 3)).astype(dtype, copy=False)


def region_mask(seg: np.ndarray, region: str) -> np.ndarray:
    """Boolean mask of region ``"WT"``, ``"TC"`` or ``"ET"`` in canonical labels ``seg``."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {tuple(REGIONS)}")
    return np.isin(seg, REGIONS[region])
