"""Volume sources and random 3D patch sampling (RMR-Fusion's training patches).

RMR-Fusion reads the same ``prepare`` store as the 2D methods. :class:`PatchSampler` is its
patch source; it stays apart from :class:`fuse4seg.data.PatchDataset` because the two draw
differently (docs/rmr.md, "Known gaps"): merging them would change every rmr3d run. Anything
with the :class:`VolumeStore` interface works (``fuse4seg.data.PreparedStore`` or the in-memory
:class:`InMemoryVolumeStore` used for phantoms and tests):

* ``.modalities`` -- stored modality names, in channel order;
* ``.case_ids(split)`` -- case ids of a split (``"train"``, ``"val"``, ``"test"``);
* ``.image(case_id)`` -- ``(D, M, H, W)`` float volume; ``.label(case_id)`` -- ``(D, H, W)``
  canonical labels (0 bg, 1 NCR, 2 ED, 3 ET).

Stored intensities are in [0, 1] (the store's brain-percentile normalisation, reproduced for
raw NIfTI input by :func:`volumes_to_store_layout`); the RMR decoder outputs a sigmoid image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from fuse4seg.errors import ConfigError, InputError

__all__ = [
    "VolumeStore",
    "InMemoryVolumeStore",
    "NORMALISATION",
    "volumes_to_store_layout",
    "select_modalities",
    "PatchSampler",
    "phantom_store",
]

#: description of the intensity normalisation, stored in ``model.pt``
NORMALISATION: dict[str, object] = {
    "kind": "brain_percentile_unit_range",
    "percentiles": [0.5, 99.5],
}


class VolumeStore(Protocol):
    """What RMR training needs from a data store (see the module docstring)."""

    @property
    def modalities(self) -> Sequence[str]: ...

    def case_ids(self, split: str) -> list[str]: ...

    def image(self, case_id: str) -> np.ndarray: ...

    def label(self, case_id: str) -> np.ndarray: ...


class InMemoryVolumeStore:
    """A :class:`VolumeStore` over arrays held in memory.

    Args:
        images: case id -> ``(D, M, H, W)`` float array.
        labels: case id -> ``(D, H, W)`` canonical labels.
        modalities: names of the ``M`` channels.
        splits: split name -> case ids (default: every case in ``"train"``).
    """

    def __init__(
        self,
        images: dict[str, np.ndarray],
        labels: dict[str, np.ndarray],
        modalities: Sequence[str],
        splits: dict[str, list[str]] | None = None,
    ) -> None:
        self._images, self._labels = images, labels
        self._modalities = tuple(modalities)
        self._splits = splits if splits is not None else {"train": list(images)}

    @property
    def modalities(self) -> tuple[str, ...]:
        return self._modalities

    def case_ids(self, split: str) -> list[str]:
        return list(self._splits.get(split, []))

    def image(self, case_id: str) -> np.ndarray:
        return self._images[case_id]

    def label(self, case_id: str) -> np.ndarray:
        return self._labels[case_id]


def phantom_store(
    num_cases: int = 2,
    shape: Sequence[int] = (48, 48, 24),
    seed: int = 0,
    modalities: Sequence[str] = ("t1", "t1ce", "t2", "flair"),
    splits: dict[str, list[str]] | None = None,
) -> InMemoryVolumeStore:
    """Phantom cases (``fuse4seg.data.generate_phantom_case``) as an in-memory store.

    ``shape`` is the NIfTI ``(X, Y, Z)`` shape; stored volumes are ``(Z, M, X, Y)`` in [0, 1],
    normalised as ``fuse4seg prepare`` does (:func:`volumes_to_store_layout`).
    """
    from fuse4seg.data.phantom import generate_phantom_case, phantom_case_id

    images, labels = {}, {}
    for i in range(num_cases):
        imgs, seg = generate_phantom_case(shape, np.random.default_rng(seed + i))[:2]
        cid = phantom_case_id(i)
        vol = [imgs[m] for m in modalities]  # M x (X, Y, Z)
        images[cid] = volumes_to_store_layout(list(vol))  # (Z, M, X, Y) in [0, 1]
        labels[cid] = np.ascontiguousarray(seg.transpose(2, 0, 1))  # (Z, X, Y)
    return InMemoryVolumeStore(images, labels, modalities, splits)


def volumes_to_store_layout(volumes: Sequence[np.ndarray]) -> np.ndarray:
    """Normalise ``M`` NIfTI volumes ``(X, Y, Z)`` like ``fuse4seg prepare`` and stack them.

    Each modality is clipped to percentiles 0.5 / 99.5 of its non-zero brain voxels and scaled
    to [0, 1] (``fuse4seg.data.preprocess.normalise_volume``; brain = any modality non-zero,
    0 outside). Returns ``(Z, M, X, Y)`` float32, the store's ``(D, M, H, W)`` layout at the
    native in-plane resolution.
    """
    from fuse4seg.data.preprocess import brain_mask, normalise_volume

    vols = [np.asarray(v, dtype=np.float32) for v in volumes]
    mask = brain_mask([v.copy() for v in vols])
    normed = [normalise_volume(v, mask)[0] for v in vols]
    stacked = np.stack(normed, axis=0)  # (M, X, Y, Z)
    return np.ascontiguousarray(stacked.transpose(3, 0, 1, 2))  # (Z, M, X, Y)


def select_modalities(available: Sequence[str], wanted: Sequence[str], where: str) -> list[int]:
    """Channel indices of ``wanted`` in ``available``; InputError naming ``where`` if missing."""
    missing = [m for m in wanted if m not in available]
    if missing:
        raise InputError(where, f"modalities {missing} not available (have {list(available)})")
    return [list(available).index(m) for m in wanted]


class PatchSampler:
    """Random 3D training patches from a :class:`VolumeStore`.

    Each call :meth:`sample` returns ``(images (B, M, d, h, w) float32 in [0, 1],
    labels (B, d, h, w) int64)``. With probability ``tumour_fraction`` a patch is centred on
    a random tumour voxel (when the case has one), otherwise placed uniformly. Volumes
    smaller than the patch are zero-padded. Normalised volumes are cached in memory.
    """

    def __init__(
        self,
        store: VolumeStore,
        modalities: Sequence[str],
        patch_size: Sequence[int],
        split: str = "train",
        tumour_fraction: float = 0.5,
        where: str = "store",
    ) -> None:
        self.store = store
        self.channels = select_modalities(store.modalities, modalities, where)
        self.patch = tuple(int(p) for p in patch_size)
        self.case_list = list(store.case_ids(split))
        if not self.case_list:
            raise InputError(where, f"no cases in split {split!r}")
        if not 0.0 <= tumour_fraction <= 1.0:
            raise ConfigError(f"tumour_fraction must be in [0, 1], got {tumour_fraction}")
        self.tumour_fraction = tumour_fraction
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _load(self, cid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if cid not in self._cache:
            raw = np.asarray(self.store.image(cid))[:, self.channels]  # (D, M, H, W)
            img = np.clip(raw.astype(np.float32), 0.0, 1.0)
            img = np.ascontiguousarray(img.transpose(1, 0, 2, 3))  # (M, D, H, W)
            lab = np.asarray(self.store.label(cid)).astype(np.int64)  # (D, H, W)
            pad = [(0, max(0, p - s)) for p, s in zip(self.patch, lab.shape, strict=True)]
            if any(p[1] for p in pad):
                img = np.pad(img, [(0, 0), *pad])
                lab = np.pad(lab, pad)
            tumour = np.argwhere(lab > 0)
            self._cache[cid] = (img, lab, tumour)
        return self._cache[cid]

    def sample(
        self, batch_size: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        imgs, labs = [], []
        for _ in range(batch_size):
            cid = self.case_list[int(rng.integers(len(self.case_list)))]
            img, lab, tumour = self._load(cid)
            shape = lab.shape
            if len(tumour) and rng.random() < self.tumour_fraction:
                centre = tumour[int(rng.integers(len(tumour)))]
                start = [
                    int(np.clip(c - p // 2, 0, s - p))
                    for c, p, s in zip(centre, self.patch, shape, strict=True)
                ]
            else:
                start = [
                    int(rng.integers(0, s - p + 1)) for p, s in zip(self.patch, shape, strict=True)
                ]
            sl = tuple(slice(s0, s0 + p) for s0, p in zip(start, self.patch, strict=True))
            imgs.append(img[(slice(None), *sl)])
            labs.append(lab[sl])
        return torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(labs))
