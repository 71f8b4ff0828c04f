from __future__ import annotations

import pytest

from fuse4seg.train.sampler import PatientBatchSampler, build_epoch_batches, split_by_patient

# 5 patients with 7, 3, 9, 1, 6 slices
IDS = ["a"] * 7 + ["b"] * 3 + ["c"] * 9 + ["d"] * 1 + ["e"] * 6


def test_split_by_patient_hand_example():
    tr, val = split_by_patient(["p", "q", "p", "r", "q", "r"], 0.5)
    # patients in order of appearance p, q, r; round(1.5) = 2 -> D_val = {q, r}
    assert tr == [0, 2] and val == [1, 3, 4, 5]
    with pytest.raises(ValueError, match=">= 2 patients"):
        split_by_patient(["p", "p"])


@pytest.mark.parametrize("batch, ppb", [(4, 2), (5, 2), (6, 3), (8, 2)])
@pytest.mark.parametrize("epoch", [0, 1, 2])
def test_every_batch_splits_into_disjoint_patient_halves(batch, ppb, epoch):
    batches = build_epoch_batches(IDS, batch, ppb, seed=3, epoch=epoch)
    assert batches
    seen = set()
    for b in batches:
        assert len(b) == batch
        cases = [IDS[i] for i in b]
        assert len(set(cases)) >= 2
        tr, val = split_by_patient(cases, 0.5)
        assert tr and val
        assert not {cases[i] for i in tr} & {cases[i] for i in val}
        assert not seen & set(b)  # no item twice in an epoch
        seen |= set(b)


def test_order_is_a_pure_function_of_seed_and_epoch():
    a = build_epoch_batches(IDS, 4, 2, seed=1, epoch=5)
    assert a == build_epoch_batches(IDS, 4, 2, seed=1, epoch=5)
    assert a != build_epoch_batches(IDS, 4, 2, seed=1, epoch=6)
    assert a != build_epoch_batches(IDS, 4, 2, seed=2, epoch=5)


def test_resume_start_skips_done_batches():
    s = PatientBatchSampler(IDS, 4, 2, seed=0)
    s.set_epoch(2)
    full = list(s)
    s.set_start(2)
    assert list(s) == full[2:] and len(s) == len(full) - 2


def test_ddp_shards_whole_batches():
    ranks = [PatientBatchSampler(IDS, 4, 2, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(1)
    b0, b1 = list(ranks[0]), list(ranks[1])
    assert len(b0) == len(b1) > 0
    glob = build_epoch_batches(IDS, 4, 2, seed=0, epoch=1)
    assert b0 == glob[0 : 2 * len(b0) : 2] and b1 == glob[1 : 2 * len(b1) : 2]
    assert not {i for b in b0 for i in b} & {i for b in b1 for i in b}


def test_tumour_fraction_subsamples_non_tumour_items():
    ids = ["a"] * 20 + ["b"] * 20
    tumour = ([True] * 4 + [False] * 16) * 2
    batches = build_epoch_batches(ids, 4, 2, 0, 0, tumour, tumour_fraction=0.5)
    items = [i for b in batches for i in b]
    n_t = sum(tumour[i] for i in items)
    assert len(items) - n_t <= 8  # 8 tumour items -> at most 8 others kept per epoch
    assert len(set(items)) == len(items) >= 8
    every = [i for b in build_epoch_batches(ids, 4, 2, 0, 0) for i in b]
    assert len(every) == 40  # without a fraction every item is used


def test_errors():
    with pytest.raises(ValueError, match="at least 2"):
        PatientBatchSampler(["a"] * 10, 4, 2)
    with pytest.raises(ValueError, match="rank"):
        PatientBatchSampler(IDS, 4, 2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="patients_per_batch"):
        build_epoch_batches(IDS, 2, 3, 0, 0)
