from __future__ import annotations

import numpy as np
import pytest

from fuse4seg.data import (
    REGIONS,
    assert_patient_level_split,
    et_label_for,
    from_canonical_labels,
    make_split,
    region_mask,
    to_canonical_labels,
)
from fuse4seg.errors import ConfigError


def test_et_label_per_naming():
    assert et_label_for("brats2021") == 4
    assert et_label_for("brats2023") == 3
    with pytest.raises(ValueError, match="unknown naming"):
        et_label_for("brats2019")


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_to_canonical_brats2021(dtype):
    seg = np.array([[0, 1], [2, 4]], dtype=dtype)
    out = to_canonical_labels(seg, 4)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 1], [2, 3]])
    np.testing.assert_array_equal(from_canonical_labels(out, 4), [[0, 1], [2, 4]])


def test_brats2023_is_identity_and_round_trips():
    seg = np.array([0, 3, 2, 1, 3], dtype=np.float32)
    out = to_canonical_labels(seg, 3)
    np.testing.assert_array_equal(out, [0, 3, 2, 1, 3])
    np.testing.assert_array_equal(from_canonical_labels(out, 3), seg)


@pytest.mark.parametrize(
    "values, et, match",
    [
        ([0, 3], 4, r"\[3\] not in"),
        ([0, 4], 3, "range"),
        ([0, -1], 4, "range"),
        ([0.0, 1.5], 4, "non-integer"),
        ([0.0, np.nan], 3, "non-integer"),
    ],
)
def test_to_canonical_rejects_bad_values(values, et, match):
    with pytest.raises(ValueError, match=match):
        to_canonical_labels(np.array(values), et)


def test_from_canonical_rejects_non_canonical():
    with pytest.raises(ValueError):
        from_canonical_labels(np.array([0, 4]), 4)
    with pytest.raises(ValueError, match="et_label"):
        from_canonical_labels(np.array([0, 1]), 5)


def test_regions():
    seg = np.array([0, 1, 2, 3])
    assert REGIONS == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
    np.testing.assert_array_equal(region_mask(seg, "WT"), [False, True, True, True])
    np.testing.assert_array_equal(region_mask(seg, "TC"), [False, True, False, True])
    np.testing.assert_array_equal(region_mask(seg, "ET"), [False, False, False, True])
    with pytest.raises(ValueError):
        region_mask(seg, "NCR")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10, 14, 16, 101])
def test_split_sizes_and_determinism(n):
    ids = [f"c{i:03d}" for i in range(n)]
    sp = make_split(ids, (0.7, 0.1, 0.2), seed=3)
    assert sorted(sum(sp.values(), [])) == ids
    assert sp == make_split(list(reversed(ids)), (0.7, 0.1, 0.2), seed=3)
    assert_patient_level_split({"splits": sp})
    if n >= 3:
        assert all(len(v) >= 1 for v in sp.values())
    if n == 14:  # round(1.4) = 1 val, round(2.8) = 3 test
        assert [len(sp[k]) for k in ("train", "val", "test")] == [10, 1, 3]


def test_split_seed_changes_assignment_and_zero_fraction():
    ids = [f"c{i}" for i in range(20)]
    assert make_split(ids, seed=0) != make_split(ids, seed=1)
    sp = make_split(ids, (0.8, 0.0, 0.2))
    assert sp["val"] == [] and len(sp["test"]) == 4


@pytest.mark.parametrize("fr", [(0.5, 0.5), (0.7, 0.2, 0.2), (1.2, -0.1, -0.1)])
def test_split_rejects_bad_fractions(fr):
    with pytest.raises(ConfigError, match="fractions"):
        make_split(["a", "b"], fr)


def test_assert_patient_level_split_detects_leak():
    with pytest.raises(ValueError, match="'b' is in train and test"):
        assert_patient_level_split({"splits": {"train": ["a", "b"], "val": [], "test": ["b"]}})
    with pytest.raises(ValueError, match="twice"):
        assert_patient_level_split({"train": ["a", "a"]})
