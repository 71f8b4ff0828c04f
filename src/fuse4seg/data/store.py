"""The prepared store written by ``fuse4seg prepare`` and its reader :class:`PreparedStore`.

Layout::

    PREP_DIR/manifest.json                      written last (its presence = store complete)
    PREP_DIR/splits_final.json                  optional K-fold cross-validation folds
    PREP_DIR/cases/<case_id>/image.npy          (D, M, H, W) float16, intensities in [0, 1]
    PREP_DIR/cases/<case_id>/label.npy          (D, H, W) uint8 canonical labels 0..3

``D`` runs over the kept axial slices ``z0 .. z1-1`` (the brain's contiguous z-range), ``M``
over the store's modalities, and ``(H, W)`` are the NIfTI ``(X, Y)`` axes after in-plane
scaling and centre crop/pad: ``image[d, m, i, j] = norm(vol_m)[s(i + oh), s(j + ow), z0 + d]``
with ``(oh, ow)`` the recorded ``crop_offset`` (negative = zero padding) and ``s`` the
in-plane scaling. Arrays are opened with ``np.load(mmap_mode="r")``.

``splits_final.json`` (``fuse4seg prepare --folds K``) holds nnU-Net-style folds over all the
store's cases, ``[{"train": [...], "val": [...]}, ...]``; :meth:`PreparedStore.fold` gives a
view of the store whose ``train`` / ``val`` splits are one fold's (``test`` empty), so every
consumer of splits (datasets, trainer, benchmarks) works on a fold unchanged.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from fuse4seg.data.splits import FOLDS_NAME, SPLITS, check_folds
from fuse4seg.errors import InputError

__all__ = ["STORE_FORMAT", "STORE_VERSION", "MANIFEST_NAME", "PreparedStore", "case_dir"]

STORE_FORMAT = "fuse4seg-store"
STORE_VERSION = 1
MANIFEST_NAME = "manifest.json"


def case_dir(prep_dir: str | Path, case_id: str) -> Path:
    """Folder of ``case_id``'s arrays in a store."""
    return Path(prep_dir) / "cases" / case_id


class PreparedStore:
    """Read access to a prepared store (memory-mapped, safe to pickle into DataLoader workers).

    Args:
        prep_dir: the folder written by ``fuse4seg prepare``.

    Raises:
        InputError: no/invalid ``manifest.json`` or an unsupported store version.
    """

    def __init__(self, prep_dir: str | Path) -> None:
        self.root = Path(prep_dir)
        path = self.root / MANIFEST_NAME
        if not self.root.is_dir():
            raise InputError(self.root, "prepared store folder does not exist")
        if not path.is_file():
            raise InputError(path, "missing: not a prepared store (run `fuse4seg prepare`)")
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(path, f"invalid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
            raise InputError(path, f"not a {STORE_FORMAT} manifest")
        if manifest.get("format_version") != STORE_VERSION:
            raise InputError(
                path, f"store version {manifest.get('format_version')} (expected {STORE_VERSION})"
            )
        self.manifest: dict[str, Any] = manifest
        self._cases: dict[str, dict[str, Any]] = {c["id"]: c for c in manifest["cases"]}
        self._mmaps: dict[tuple[str, str], np.ndarray] = {}
        #: index of the cross-validation fold this view is restricted to (None: the store)
        self.fold_index: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_mmaps"] = {}  # re-open memory maps lazily in each process
        return state

    def __repr__(self) -> str:
        return f"PreparedStore({str(self.root)!r}, cases={len(self._cases)})"

    @property
    def modalities(self) -> list[str]:
        """Canonical modality names, in channel order ``M``."""
        return list(self.manifest["modalities"])

    @property
    def size(self) -> int:
        """In-plane side ``H = W`` of the stored slices."""
        return int(self.manifest["size"])

    @property
    def splits(self) -> dict[str, list[str]]:
        """``{"train": [...], "val": [...], "test": [...]}`` (patient-level)."""
        return {k: list(v) for k, v in self.manifest["splits"].items()}

    def case_ids(self, split: str | None = None) -> list[str]:
        """Case ids of ``split`` (``"train"``, ``"val"``, ``"test"``) or all (None)."""
        if split is None:
            return sorted(self._cases)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS} or None")
        return list(self.manifest["splits"].get(split, []))

    @property
    def folds_path(self) -> Path:
        """Where the store keeps its cross-validation folds (``splits_final.json``)."""
        return self.root / FOLDS_NAME

    @property
    def folds(self) -> list[dict[str, list[str]]] | None:
        """The store's K-fold cross-validation folds, or None when it has none.

        Raises:
            InputError: ``splits_final.json`` is unreadable or its folds are not a
                patient-level partition of the store's cases.
        """
        path = self.folds_path
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(path, f"invalid JSON ({exc})") from None
        try:
            return check_folds(data, sorted(self._cases))
        except ValueError as exc:
            raise InputError(path, str(exc)) from None

    def fold(self, index: int, folds: list[dict[str, list[str]]] | None = None) -> PreparedStore:
        """A view of the store restricted to fold ``index``: ``train`` = the fold's training
        cases, ``val`` = its held-out cases, ``test`` = [] (same arrays, no copy).

        Args:
            index: fold number, ``0 .. K-1``.
            folds: folds to use instead of the store's ``splits_final.json`` (checked
                against the store's cases).

        Raises:
            InputError: the store has no folds, or ``index`` is out of range.
        """
        if folds is not None:
            try:
                folds = check_folds(folds, sorted(self._cases))
            except ValueError as exc:
                raise InputError(self.root, str(exc)) from None
        else:
            folds = self.folds
        if folds is None:
            raise InputError(
                self.root,
                f"has no cross-validation folds ({FOLDS_NAME}); add them with "
                f"`fuse4seg prepare -o {self.root} --folds K`",
            )
        if isinstance(index, bool) or not 0 <= int(index) < len(folds):
            raise InputError(
                self.root,
                f"fold {index} is out of range: the store has {len(folds)} folds "
                f"(0..{len(folds) - 1})",
            )
        view = copy.copy(self)
        view.manifest = {**self.manifest, "splits": {**folds[index], "test": []}}
        view.fold_index = int(index)
        return view

    def case_info(self, case_id: str) -> dict[str, Any]:
        """The manifest entry of ``case_id``."""
        try:
            return self._cases[case_id]
        except KeyError:
            raise KeyError(f"case {case_id!r} is not in the store {self.root}") from None

    def num_slices(self, case_id: str) -> int:
        """Number of stored axial slices ``D`` of ``case_id``."""
        return int(self.case_info(case_id)["num_slices"])

    def tumour_slices(self, case_id: str) -> list[int]:
        """Store slice indices (0..D-1) of ``case_id`` that contain tumour (any label > 0)."""
        return list(self.case_info(case_id)["tumour_slices"])

    def _open(self, case_id: str, name: str) -> np.ndarray:
        key = (case_id, name)
        arr = self._mmaps.get(key)
        if arr is None:
            self.case_info(case_id)
            path = case_dir(self.root, case_id) / f"{name}.npy"
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise InputError(path, f"cannot open store array ({exc})") from None
            self._check_shape(case_id, name, arr, path)
            self._mmaps[key] = arr
        return arr

    def _check_shape(self, case_id: str, name: str, arr: np.ndarray, path: Path) -> None:
        """Refuse an array whose shape disagrees with the manifest (a replaced or corrupt
        file would otherwise fail later as a broadcast error inside training)."""
        d = self.num_slices(case_id)
        size = self.manifest.get("size")
        hw = "H, W" if not isinstance(size, int) else f"{size}, {size}"
        if name == "image":
            m = len(self.modalities)
            expected = f"({d}, {m}, {hw})"
            ok = arr.ndim == 4 and arr.shape[:2] == (d, m)
        else:
            expected = f"({d}, {hw})"
            ok = arr.ndim == 3 and arr.shape[0] == d
        if ok and isinstance(size, int):
            ok = tuple(arr.shape[-2:]) == (size, size)
        if not ok:
            raise InputError(
                path,
                f"store array has shape {tuple(arr.shape)}, the manifest gives {expected} "
                f"for case {case_id!r}; re-run `fuse4seg prepare`",
            )

    def image(self, case_id: str) -> np.ndarray:
        """Memory-mapped ``(D, M, H, W)`` float16 intensities in [0, 1]."""
        return self._open(case_id, "image")

    def label(self, case_id: str) -> np.ndarray:
        """Memory-mapped ``(D, H, W)`` uint8 canonical labels (0 bg, 1 NCR, 2 ED, 3 ET)."""
        return self._open(case_id, "label")
