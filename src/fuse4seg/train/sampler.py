"""Patient-aware batch sampling and the per-batch patient split D_tr / D_val.

Algorithm 1 splits every batch *by patient* into D_tr (follower steps) and D_val (leader
step). A batch holding a single patient cannot be split, so :class:`PatientBatchSampler`
builds every batch from ``patients_per_batch >= 2`` different patients. The order is a pure
function of ``(seed, epoch)`` so a resumed run continues the same sequence, and under DDP
whole batches are dealt to ranks, so every rank's batch keeps a valid split.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["PatientBatchSampler", "split_by_patient", "build_epoch_batches"]


def split_by_patient(
    case_ids: Sequence[str], val_fraction: float = 0.5
) -> tuple[list[int], list[int]]:
    """Split batch positions into (D_tr, D_val) index lists, disjoint by patient.

    Patients are taken in order of first appearance; the last ``max(1, round(n * f))``
    (but at most ``n - 1``) patients form D_val, the others D_tr.

    Raises:
        ValueError: the batch holds fewer than two patients.
    """
    patients = list(dict.fromkeys(case_ids))
    n = len(patients)
    if n < 2:
        raise ValueError(
            f"a batch must hold >= 2 patients to split into D_tr/D_val, got {n} ({patients})"
        )
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    val_patients = set(patients[n - n_val :])
    tr = [i for i, c in enumerate(case_ids) if c not in val_patients]
    val = [i for i, c in enumerate(case_ids) if c in val_patients]
    return tr, val


def build_epoch_batches(
    case_ids_per_item: Sequence[str],
    batch_size: int,
    patients_per_batch: int,
    seed: int,
    epoch: int,
    is_tumour: Sequence[bool] | None = None,
    tumour_fraction: float | None = None,
) -> list[list[int]]:
    """All batches of one epoch (a pure function of the arguments).

    With ``is_tumour`` and ``tumour_fraction`` f, all tumour items are used and a random
    subset of the other items is kept so that tumour items make up about f of the epoch
    (when tumour items are already more than f, every item is used).

    Each patient's items are shuffled into a queue; every batch draws ``patients_per_batch``
    distinct patients (probability proportional to their remaining items) and takes an
    equal share of ``batch_size`` from each (topping up from the others when one runs out).
    The epoch ends when fewer than ``patients_per_batch`` patients or fewer than
    ``batch_size`` items remain (the rest is dropped; it is reshuffled next epoch).
    """
    if patients_per_batch < 2 or patients_per_batch > batch_size:
        raise ValueError(
            f"need 2 <= patients_per_batch <= batch_size, got {patients_per_batch}, {batch_size}"
        )
    rng = np.random.default_rng([int(seed), int(epoch)])
    keep = np.ones(len(case_ids_per_item), dtype=bool)
    if is_tumour is not None and tumour_fraction is not None and 0 < tumour_fraction <= 1:
        tumour = np.asarray(is_tumour, dtype=bool)
        n_t, others = int(tumour.sum()), np.flatnonzero(~tumour)
        if n_t > 0:
            n_keep = min(others.size, int(round(n_t * (1 - tumour_fraction) / tumour_fraction)))
            keep[others] = False
            keep[rng.choice(others, size=n_keep, replace=False)] = True
    groups: dict[str, list[int]] = {}
    for idx, cid in enumerate(case_ids_per_item):
        if keep[idx]:
            groups.setdefault(str(cid), []).append(idx)
    names = sorted(groups)
    queues = {n: [groups[n][i] for i in rng.permutation(len(groups[n]))] for n in names}
    batches: list[list[int]] = []
    while True:
        alive = [n for n in names if queues[n]]
        remaining = sum(len(queues[n]) for n in alive)
        if len(alive) < patients_per_batch or remaining < batch_size:
            break
        weights = np.array([len(queues[n]) for n in alive], dtype=np.float64)
        chosen = list(
            rng.choice(
                len(alive), size=patients_per_batch, replace=False, p=weights / weights.sum()
            )
        )
        chosen_names = [alive[i] for i in chosen]
        share = [batch_size // patients_per_batch] * patients_per_batch
        for i in range(batch_size % patients_per_batch):
            share[i] += 1
        batch: list[int] = []
        for name, k in zip(chosen_names, share, strict=True):
            take = queues[name][:k]
            queues[name] = queues[name][k:]
            batch.extend(take)
        # top up (a chosen patient had fewer items than its share)
        for name in chosen_names + [n for n in alive if n not in chosen_names]:
            if len(batch) >= batch_size:
                break
            k = batch_size - len(batch)
            batch.extend(queues[name][:k])
            queues[name] = queues[name][k:]
        batches.append(batch)
    return batches


class PatientBatchSampler:
    """Batch sampler whose every batch holds >= ``patients_per_batch`` patients.

    Args:
        case_ids_per_item: patient id of each dataset item (``SliceDataset.case_ids_per_item``).
        batch_size: items per batch (per rank).
        patients_per_batch: distinct patients per batch (>= 2).
        seed: base seed; the order of epoch ``e`` depends only on ``(seed, e)``.
        num_replicas, rank: DDP sharding; rank ``r`` gets batches ``r, r + R, ...`` of the
            global list (truncated so every rank has the same number).
        max_batches: cap on batches per epoch (per rank).
        is_tumour, tumour_fraction: tumour-slice share per epoch (see
            :func:`build_epoch_batches`).

    Use :meth:`set_epoch` before iterating and :meth:`set_start` to skip batches already
    done in a resumed epoch.
    """

    def __init__(
        self,
        case_ids_per_item: Sequence[str],
        batch_size: int,
        patients_per_batch: int = 2,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        max_batches: int | None = None,
        is_tumour: Sequence[bool] | None = None,
        tumour_fraction: float | None = None,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        n_patients = len(set(map(str, case_ids_per_item)))
        if n_patients < patients_per_batch:
            raise ValueError(
                f"the training split has {n_patients} patient(s); at least "
                f"{patients_per_batch} are needed for patient-level batch splits"
            )
        self.case_ids = [str(c) for c in case_ids_per_item]
        self.batch_size = int(batch_size)
        self.patients_per_batch = int(patients_per_batch)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.max_batches = max_batches
        self.is_tumour = None if is_tumour is None else np.asarray(is_tumour, dtype=bool)
        self.tumour_fraction = tumour_fraction
        self.epoch = 0
        self.start = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` batches of the current epoch (resume)."""
        self.start = int(start)

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch`` (default: the current one), before ``start``."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        batches = build_epoch_batches(
            self.case_ids,
            self.batch_size,
            self.patients_per_batch,
            self.seed,
            epoch,
            self.is_tumour,
            self.tumour_fraction,
        )
        per_rank = len(batches) // self.num_replicas
        mine = batches[self.rank : per_rank * self.num_replicas : self.num_replicas]
        if self.max_batches is not None:
            mine = mine[: self.max_batches]
        self._cache = (epoch, mine)
        return mine

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches()[self.start :]

    def __len__(self) -> int:
        return max(0, len(self.epoch_batches()) - self.start)
