"""PyTorch datasets over a prepared store: 2D slices and 3D patches.

``SliceDataset`` items are ``(images (M, H, W) float32, label (H, W) int64, case_id)``;
``PatchDataset`` items are ``(images (M, D, H, W) float32, label (D, H, W) int64, case_id)``.
Both are deterministic given ``seed``, the item index and the epoch (``set_epoch``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fuse4seg.data.augmentation import apply_spatial, augment, draw_spatial, jitter_
from fuse4seg.data.store import PreparedStore

__all__ = ["SliceDataset", "PatchDataset", "tumour_oversampling_weights", "open_store"]


def open_store(store: PreparedStore | str | Path) -> PreparedStore:
    """``store`` itself, or the :class:`PreparedStore` at a path."""
    return store if isinstance(store, PreparedStore) else PreparedStore(store)


def _item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


class SliceDataset(Dataset):
    """All stored axial slices of a split's cases.

    Args:
        store: a :class:`PreparedStore` or its folder.
        split: ``"train"``, ``"val"``, ``"test"`` or None (all cases).
        augment: flips, rot90 (square slices) and +-5 % intensity jitter.
        tumour_fraction: if set, the probability that a sampled item is a tumour slice, used
            by :meth:`sampler` (see :func:`tumour_oversampling_weights`).
        seed: augmentation seed; the transform of item ``i`` depends on (seed, epoch, i).

    Attributes:
        case_ids_per_item: ``list[str]``, the case id of every item (for patient-level
            batch samplers).
        is_tumour: ``(N,)`` bool, whether each item's slice contains tumour.
    """

    def __init__(
        self,
        store: PreparedStore | str | Path,
        split: str | None = "train",
        augment: bool = False,
        tumour_fraction: float | None = None,
        seed: int = 0,
    ) -> None:
        self.store = open_store(store)
        self.split = split
        self.augment = augment
        if tumour_fraction is not None and not 0.0 <= tumour_fraction <= 1.0:
            raise ValueError(f"tumour_fraction must be in [0, 1], got {tumour_fraction}")
        self.tumour_fraction = tumour_fraction
        self.seed = seed
        self.epoch = 0
        self.case_ids = self.store.case_ids(split)
        case_index, slices, tumour = [], [], []
        for k, cid in enumerate(self.case_ids):
            n = self.store.num_slices(cid)
            flags = np.zeros(n, dtype=bool)
            flags[self.store.tumour_slices(cid)] = True
            case_index.append(np.full(n, k, dtype=np.int64))
            slices.append(np.arange(n, dtype=np.int64))
            tumour.append(flags)
        self._case = np.concatenate(case_index) if case_index else np.zeros(0, np.int64)
        self._slice = np.concatenate(slices) if slices else np.zeros(0, np.int64)
        self.is_tumour = np.concatenate(tumour) if tumour else np.zeros(0, bool)
        self.case_ids_per_item = [self.case_ids[k] for k in self._case]

    def __len__(self) -> int:
        return int(self._case.size)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (call once per epoch)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slices")
        index = index % len(self)
        cid = self.case_ids[self._case[index]]
        z = int(self._slice[index])
        image = self.store.image(cid)[z]  # (M, H, W) float16 memory map
        label = self.store.label(cid)[z]  # (H, W)
        rng = None
        if self.augment:  # flips/rot90 as views, so the copy below is the only one
            rng = _item_rng(self.seed, self.epoch, index)
            params = draw_spatial(rng, label.shape)
            image, label = apply_spatial(image, params, 1), apply_spatial(label, params, 0)
        # torch converts float16 -> float32 much faster than numpy
        image_t = torch.from_numpy(np.array(image)).float()
        label_t = torch.from_numpy(np.array(label)).long()
        if rng is not None:
            jitter_(image_t, rng)
        return image_t, label_t, cid

    def sampler(
        self, num_samples: int | None = None, generator: torch.Generator | None = None
    ) -> torch.utils.data.Sampler:
        """A random sampler honouring ``tumour_fraction`` (with replacement), else a shuffle."""
        if self.tumour_fraction is None:
            return torch.utils.data.RandomSampler(
                self, num_samples=num_samples, generator=generator
            )
        weights = tumour_oversampling_weights(self, self.tumour_fraction)
        return torch.utils.data.WeightedRandomSampler(
            torch.from_numpy(weights), num_samples or len(self), True, generator=generator
        )


def tumour_oversampling_weights(dataset: SliceDataset, fraction: float) -> np.ndarray:
    """Per-item sampling weights ``(N,)`` float64 (sum 1) such that tumour items carry
    total probability ``fraction``.

    If the dataset has only tumour or only non-tumour items, the weights are uniform.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    tumour = np.asarray(dataset.is_tumour, dtype=bool)
    n = tumour.size
    if n == 0:
        return np.zeros(0)
    n_t = int(tumour.sum())
    if n_t == 0 or n_t == n:
        return np.full(n, 1.0 / n)
    return np.where(tumour, fraction / n_t, (1.0 - fraction) / (n - n_t))


class PatchDataset(Dataset):
    """Random 3D patches of a split's cases, for 3D methods.

    Item ``i`` is a patch from case ``i // samples_per_case``; with probability
    ``tumour_probability`` it is centred on a random tumour voxel (when the case has any),
    otherwise its position is uniform. Volumes smaller than the patch are zero-padded.

    Args:
        store: a :class:`PreparedStore` or its folder.
        split: ``"train"``, ``"val"``, ``"test"`` or None (all cases).
        patch_size: ``(D, H, W)``.
        samples_per_case: items per case per epoch.
        tumour_probability: probability of a tumour-centred patch.
        augment: flips of each axis, rot90 in-plane (square patches), intensity jitter.
        seed: the patch of item ``i`` depends on (seed, epoch, i).
    """

    def __init__(
        self,
        store: PreparedStore | str | Path,
        split: str | None = "train",
        patch_size: tuple[int, int, int] = (32, 96, 96),
        samples_per_case: int = 4,
        tumour_probability: float = 0.5,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.store = open_store(store)
        if len(patch_size) != 3 or min(patch_size) < 1:
            raise ValueError(f"patch_size must be 3 positive ints (D, H, W), got {patch_size}")
        if samples_per_case < 1:
            raise ValueError(f"samples_per_case must be >= 1, got {samples_per_case}")
        if not 0.0 <= tumour_probability <= 1.0:
            raise ValueError(f"tumour_probability must be in [0, 1], got {tumour_probability}")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.samples_per_case = samples_per_case
        self.tumour_probability = tumour_probability
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.case_ids = self.store.case_ids(split)
        self.case_ids_per_item = [c for c in self.case_ids for _ in range(samples_per_case)]
        self._tumour_voxels: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.case_ids) * self.samples_per_case

    def set_epoch(self, epoch: int) -> None:
        """Change the patch draw (call once per epoch)."""
        self.epoch = int(epoch)

    def _tumour_coords(self, cid: str) -> np.ndarray:
        coords = self._tumour_voxels.get(cid)
        if coords is None:
            label = self.store.label(cid)
            slices = self.store.tumour_slices(cid)
            parts = [
                np.column_stack([np.full(len(ij), z), ij])
                for z in slices
                for ij in [np.argwhere(label[z] > 0)]
            ]
            coords = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
            self._tumour_voxels[cid] = coords
        return coords

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        index = index % len(self)
        cid = self.case_ids[index // self.samples_per_case]
        rng = _item_rng(self.seed, self.epoch, index)
        image = self.store.image(cid)  # (D, M, H, W)
        label = self.store.label(cid)  # (D, H, W)
        shape = label.shape
        coords = self._tumour_coords(cid) if self.tumour_probability > 0 else None
        starts = []
        if coords is not None and len(coords) and rng.random() < self.tumour_probability:
            centre = coords[rng.integers(len(coords))]
            for c, n, p in zip(centre, shape, self.patch_size, strict=True):
                starts.append(int(np.clip(c - p // 2, min(0, n - p), max(0, n - p))))
        else:
            for n, p in zip(shape, self.patch_size, strict=True):
                starts.append(int(rng.integers(0, n - p + 1)) if n >= p else -((p - n) // 2))
        out_img = torch.zeros((image.shape[1],) + self.patch_size, dtype=torch.float32)
        out_lab = torch.zeros(self.patch_size, dtype=torch.int64)
        src, dst = [], []
        for s, n, p in zip(starts, shape, self.patch_size, strict=True):
            a, b = max(s, 0), min(s + p, n)
            src.append(slice(a, b))
            dst.append(slice(a - s, b - s))
        block = torch.from_numpy(np.array(image[src[0], :, src[1], src[2]])).float()  # (d, M, h, w)
        out_img[:, dst[0], dst[1], dst[2]] = block.permute(1, 0, 2, 3)
        out_lab[dst[0], dst[1], dst[2]] = torch.from_numpy(
            np.array(label[src[0], src[1], src[2]])
        ).long()
        if self.augment:
            out_img, out_lab = augment(out_img, out_lab, rng)
        return out_img, out_lab, cid
