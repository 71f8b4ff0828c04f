from __future__ import annotations

import numpy as np
import pytest
import torch

from fuse4seg.data import (
    PatchDataset,
    PreparedStore,
    PrepareOptions,
    SliceDataset,
    augment,
    prepare_dataset,
    tumour_oversampling_weights,
    write_phantom_dataset,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_phantom_dataset(root / "nii", cases=3, shape=(24, 24, 16), seed=2)
    res = prepare_dataset(
        root / "nii", root / "prep", PrepareOptions(split=(0.4, 0.3, 0.3)), log=None
    )
    return PreparedStore(res.output)


def test_slice_dataset_items(store):
    ds = SliceDataset(store, "train")
    cids = store.case_ids("train")
    assert len(ds) == sum(store.num_slices(c) for c in cids) == len(ds.case_ids_per_item)
    k = store.num_slices(cids[0]) + 2 if len(cids) > 1 else 2
    img, lab, cid = ds[k]
    assert img.shape == (2, 24, 24) and img.dtype == torch.float32
    assert lab.shape == (24, 24) and lab.dtype == torch.int64
    assert cid == ds.case_ids_per_item[k]
    z = k - (store.num_slices(cids[0]) if len(cids) > 1 else 0)
    np.testing.assert_array_equal(img.numpy(), store.image(cid)[z].astype(np.float32))
    np.testing.assert_array_equal(lab.numpy(), store.label(cid)[z])
    assert ds[-1][2] == ds.case_ids_per_item[-1]
    with pytest.raises(IndexError):
        ds[len(ds)]
    all_ds = SliceDataset(store.root, None)
    assert set(all_ds.case_ids_per_item) == set(store.case_ids())
    flags = [
        bool(store.label(c)[z].any()) for c, z in zip(ds.case_ids_per_item, ds._slice, strict=True)
    ]
    assert ds.is_tumour.tolist() == flags
    with pytest.raises(ValueError, match="unknown split"):
        SliceDataset(store, "training")


def test_augmentation_deterministic_and_label_preserving(store):
    ds = SliceDataset(store, None, augment=True, seed=5)
    plain = SliceDataset(store, None)
    i = int(np.flatnonzero(ds.is_tumour)[0])
    a1, l1, _ = ds[i]
    a2, l2, _ = ds[i]
    assert torch.equal(a1, a2)
    assert torch.equal(l1, l2)
    assert torch.equal(torch.bincount(l1.flatten(), minlength=4), torch.bincount(
        plain[i][1].flatten(), minlength=4))  # fmt: skip
    assert a1.min() >= 0 and a1.max() <= 1
    # flips/rot90 keep the zero count; jitter leaves the background exactly 0
    assert (a1 == 0).sum() >= (plain[i][0] == 0).sum()
    outs = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        outs.append(ds[i][0])
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_augment_rot90_and_flip_hand_values():
    img = torch.arange(8, dtype=torch.float32).reshape(1, 2, 4) / 10 + 0.1
    lab = torch.arange(8).reshape(2, 4)
    found = set()
    for s in range(40):
        a, b = augment(img, lab, np.random.default_rng(s), jitter=0.0)
        assert torch.allclose(a[0], b / 10 + 0.1)  # same transform on both
        found.add(tuple(b.flatten().tolist()))
    assert len(found) == 4  # identity, two flips, both (no rot90: not square)
    sq = torch.arange(4).reshape(2, 2)
    rots = {tuple(augment(sq[None].float(), sq, np.random.default_rng(s), 0)[1].flatten().tolist())
            for s in range(60)}  # fmt: skip
    assert len(rots) == 8  # the dihedral group of the square
    img3 = torch.full((2, 3, 4, 4), 0.5)
    img3[:, 0, 0, 0] = 0.0
    a, b = augment(img3, torch.zeros((3, 4, 4), dtype=torch.long), np.random.default_rng(0))
    assert a.shape == (2, 3, 4, 4) and (a == 0).sum() == 2
    assert torch.all((a[a > 0] - 0.5).abs() <= 0.05 * 0.5 + 0.05 + 1e-6)
    with pytest.raises(ValueError, match="spatial shapes differ"):
        augment(img3, torch.zeros((3, 4, 5)), np.random.default_rng(0))


def test_tumour_oversampling(store):
    ds = SliceDataset(store, None, tumour_fraction=0.8)
    w = tumour_oversampling_weights(ds, 0.8)
    assert w.shape == (len(ds),) and w.sum() == pytest.approx(1.0)
    assert w[ds.is_tumour].sum() == pytest.approx(0.8)
    idx = np.array(list(ds.sampler(4000, torch.Generator().manual_seed(0))))
    assert abs(ds.is_tumour[idx].mean() - 0.8) < 0.04
    ds.is_tumour[:] = True
    np.testing.assert_allclose(tumour_oversampling_weights(ds, 0.3), 1 / len(ds))
    with pytest.raises(ValueError):
        SliceDataset(store, None, tumour_fraction=1.5)


def test_patch_dataset(store):
    ds = PatchDataset(store, None, patch_size=(8, 16, 16), samples_per_case=3,
                      tumour_probability=1.0, seed=1)  # fmt: skip
    assert len(ds) == 9 and ds.case_ids_per_item[3] == store.case_ids()[1]
    for i in range(len(ds)):
        img, lab, cid = ds[i]
        assert img.shape == (2, 8, 16, 16) and lab.shape == (8, 16, 16)
        assert img.dtype == torch.float32 and lab.dtype == torch.int64
        if store.tumour_slices(cid):
            assert (lab > 0).any()  # tumour-centred
    a, b = ds[4], ds[4]
    assert torch.equal(a[0], b[0])
    big = PatchDataset(store, None, patch_size=(40, 30, 30), tumour_probability=0.0)
    img, lab, cid = big[0]
    d = store.num_slices(cid)
    assert img.shape == (2, 40, 30, 30)
    full = torch.from_numpy(store.image(cid).astype(np.float32)).permute(1, 0, 2, 3)
    assert torch.isclose(img.sum(), full.sum(), rtol=1e-4)  # whole volume inside, zero pad
    assert d < 40
