"""Whole-volume access for the exports: a BraTS folder or a prepared store, case by case.

Both sources are presented as :class:`VolumeCase` with images ``(M, X, Y, Z)`` (axial slices
``images[:, :, :, z]``) so the exports do not care where the data comes from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fuse4seg.data import MODALITIES, discover_cases, load_case
from fuse4seg.errors import Fuse4SegError, InputError

__all__ = ["VolumeCase", "is_prepared_store", "iter_volume_cases", "store_affine"]


@dataclass
class VolumeCase:
    """One case as whole volumes.

    Attributes:
        case_id: the case id.
        modalities: canonical names of the ``M`` channels.
        images: float32 ``(M, X, Y, Z)``; raw scanner intensities for a BraTS folder, the
            store's normalised values for a prepared store (``normalised`` True).
        seg: uint8 canonical labels ``(X, Y, Z)`` or None.
        affine: ``(4, 4)`` voxel-to-world matrix.
        split: the store split (``"train"``, ``"val"``, ``"test"``) or None for a folder.
        normalised: True when ``images`` are already normalised by ``fuse4seg prepare``.
        et_label: ET value of the source files (4 BraTS 2018-2022, 3 BraTS 2023).
    """

    case_id: str
    modalities: tuple[str, ...]
    images: np.ndarray
    seg: np.ndarray | None
    affine: np.ndarray
    split: str | None = None
    normalised: bool = False
    et_label: int = 4


def is_prepared_store(path: str | Path) -> bool:
    """True when ``path`` is a ``fuse4seg prepare`` output (has ``manifest.json``)."""
    return (Path(path) / "manifest.json").is_file()


def _check_modalities(modalities: Sequence[str] | None, available: Sequence[str], where: Path):
    if modalities is None:
        return tuple(available)
    mods = tuple(modalities)
    if not mods:
        raise InputError(where, "no modalities requested")
    bad = [m for m in mods if m not in available]
    if bad:
        raise InputError(where, f"modalities {bad} not available (has {list(available)})")
    return mods


def _iter_folder(root: Path, modalities: Sequence[str] | None):
    mods = _check_modalities(modalities, MODALITIES, root)
    for case in discover_cases(root):
        try:
            loaded = load_case(case, mods)
        except Fuse4SegError as exc:
            yield case.case_id, str(exc)
            continue
        images = np.stack([loaded.images[m] for m in mods])  # (M, X, Y, Z)
        yield VolumeCase(
            case_id=case.case_id,
            modalities=mods,
            images=images,
            seg=loaded.seg,
            affine=np.asarray(loaded.affine, dtype=np.float64),
            split=None,
            normalised=False,
            et_label=case.et_label,
        )


def store_affine(store, case_id: str) -> np.ndarray:
    """Voxel-to-world matrix of a store volume laid out ``(H, W, D)`` (= scaled X, Y, and z).

    Store voxel ``(i, j, d)`` is the block of source voxels centred at
    ``x = k (i + oh) + (k - 1) / 2``, ``y = k (j + ow) + (k - 1) / 2``, ``z = z0 + d`` with
    ``k = 1 / scale`` and ``(oh, ow)`` the crop offset, so the affine is the source affine
    times that index map (identity when the manifest lacks the source affine).
    """
    info = store.case_info(case_id)
    source = np.asarray(info.get("affine", np.eye(4)), dtype=np.float64)
    k = 1.0 / float(store.manifest.get("scale", 1.0) or 1.0)
    oh, ow = (float(o) for o in info.get("crop_offset", (0, 0)))
    z0 = float(info.get("z_range", (0, 0))[0])
    index_map = np.array(
        [
            [k, 0.0, 0.0, k * oh + (k - 1.0) / 2.0],
            [0.0, k, 0.0, k * ow + (k - 1.0) / 2.0],
            [0.0, 0.0, 1.0, z0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    return source @ index_map


def _iter_store(root: Path, modalities: Sequence[str] | None):
    from fuse4seg.data import PreparedStore

    store = PreparedStore(root)
    available = tuple(store.modalities)
    mods = _check_modalities(modalities, available, root)
    idx = [available.index(m) for m in mods]
    for split in ("train", "val", "test"):
        try:
            ids = list(store.case_ids(split))
        except (KeyError, ValueError):
            ids = []
        for cid in ids:
            try:
                image = np.asarray(store.image(cid), dtype=np.float32)[:, idx]  # (D, M, H, W)
                label = np.asarray(store.label(cid), dtype=np.uint8)  # (D, H, W)
            except Fuse4SegError as exc:
                yield cid, str(exc)
                continue
            yield VolumeCase(
                case_id=cid,
                modalities=mods,
                images=np.ascontiguousarray(image.transpose(1, 2, 3, 0)),  # (M, H, W, D)
                seg=np.ascontiguousarray(label.transpose(1, 2, 0)),  # (H, W, D)
                affine=store_affine(store, cid),
                split=split,
                normalised=True,
                et_label=int(store.case_info(cid).get("et_label", 4)),
            )


def iter_volume_cases(
    source: str | Path, modalities: Sequence[str] | None = None
) -> Iterator[VolumeCase | tuple[str, str]]:
    """Yield the cases of ``source`` one at a time (a folder of cases or a prepared store).

    Yields :class:`VolumeCase`, or ``(case_id, error message)`` for a case whose files cannot
    be read (so batch exports can continue and report it).

    Raises:
        InputError: ``source`` missing, holding no case, or lacking a requested modality.
    """
    root = Path(source)
    if not root.exists():
        raise InputError(root, "does not exist")
    if is_prepared_store(root):
        yield from _iter_store(root, modalities)
    else:
        yield from _iter_folder(root, modalities)
