"""Patient-level K-fold cross-validation folds: ``make_folds``, ``splits_final.json`` written by
``prepare --folds K`` (new store or an existing one) and the store's fold views."""

from __future__ import annotations

import json

import pytest

from fuse4seg.cli.main import main
from fuse4seg.data import PreparedStore, PrepareOptions, prepare_dataset, write_phantom_dataset
from fuse4seg.data.prepare import write_folds
from fuse4seg.data.splits import check_folds, make_folds
from fuse4seg.errors import ConfigError, InputError

IDS = [f"case{i:02d}" for i in range(14)]


@pytest.mark.parametrize(("n", "k"), [(14, 3), (14, 5), (3, 3), (4, 2), (7, 7), (10, 4)])
def test_make_folds_partition(n, k):
    ids = IDS[:n] if n <= 14 else [f"c{i}" for i in range(n)]
    folds = make_folds(list(reversed(ids)), k, seed=0)
    assert len(folds) == k
    vals = [c for f in folds for c in f["val"]]
    assert sorted(vals) == sorted(ids) and len(vals) == n  # each case held out exactly once
    for f in folds:
        assert f["val"] == sorted(f["val"]) and f["train"] == sorted(f["train"])
        assert not set(f["train"]) & set(f["val"])
        assert set(f["train"]) | set(f["val"]) == set(ids)
        assert len(f["train"]) >= 2
    sizes = sorted(len(f["val"]) for f in folds)
    assert sizes[-1] - sizes[0] <= 1  # balanced
    assert check_folds(folds, ids) == folds


def test_make_folds_deterministic_and_seeded():
    a = make_folds(IDS, 3, seed=0)
    assert make_folds(list(reversed(IDS)), 3, seed=0) == a  # only the set of ids matters
    assert make_folds(IDS, 3, seed=1) != a
    assert [len(f["val"]) for f in a] == [5, 5, 4]


@pytest.mark.parametrize(
    ("n", "k", "match"),
    [
        (3, 2, r"3 cases leave a fold with 1 training case.*use --folds 3"),
        (2, 2, r"needs >= 3 cases"),
        (3, 5, r"3 case\(s\) cannot make 5 folds: use --folds 3 or fewer"),
        (1, 2, r"needs >= 3 cases"),
        (14, 1, r"--folds must be an integer >= 2"),
    ],
)
def test_make_folds_errors_say_how_to_fix(n, k, match):
    with pytest.raises(ConfigError, match=match) as exc:
        make_folds(IDS[:n], k)
    assert "\n" not in str(exc.value)


def test_check_folds_rejects_overlap_and_missing():
    folds = make_folds(IDS[:6], 3)
    bad = json.loads(json.dumps(folds))
    bad[1]["val"].append(bad[0]["val"][0])
    with pytest.raises(ValueError, match="held out in two folds|train and val"):
        check_folds(bad)
    with pytest.raises(ValueError, match="do not match the store"):
        check_folds(folds, IDS[:7])
    with pytest.raises(ValueError, match="list of at least 2"):
        check_folds({"train": [], "val": []})


@pytest.fixture(scope="module")
def raw3(tmp_path_factory):
    root = tmp_path_factory.mktemp("folds_raw")
    write_phantom_dataset(root, cases=3, shape=(24, 24, 16), seed=2)
    return root


def test_prepare_folds_writes_splits_final(raw3, tmp_path, capsys):
    out = tmp_path / "prep"
    args = ["prepare", "-i", str(raw3), "-o", str(out), "--folds", "3", "--no-progress"]
    assert main([*args, "--split", "1", "0", "0"]) == 0
    assert "3 cross-validation folds" in capsys.readouterr().out
    folds = json.loads((out / "splits_final.json").read_text())
    store = PreparedStore(out)
    assert folds == make_folds(store.case_ids(), 3, seed=0) == store.folds
    assert [len(f["train"]) for f in folds] == [2, 2, 2]  # 3 cases, K = 3: trainable
    view = store.fold(1)
    assert view.case_ids("train") == folds[1]["train"] and view.case_ids("val") == folds[1]["val"]
    assert view.case_ids("test") == [] and view.fold_index == 1
    assert store.case_ids("train") == sorted(store.case_ids())  # fixed split unchanged
    # the fixed split is still --split's: a store without --folds has no fold file
    assert main(["prepare", "-i", str(raw3), "-o", str(out), "--overwrite", "--no-progress"]) == 0
    assert not (out / "splits_final.json").exists() and PreparedStore(out).folds is None


def test_prepare_too_few_cases_one_line_error(raw3, tmp_path, capsys):
    out = tmp_path / "prep"
    assert main(["prepare", "-i", str(raw3), "-o", str(out), "--folds", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "use --folds 3 or fewer" in err and "\n" not in err
    assert not (out / "manifest.json").exists()  # failed before any work
    assert main(["prepare", "-i", str(raw3), "-o", str(out), "--folds", "2"]) == 2
    assert "use --folds 3" in capsys.readouterr().err


def test_add_folds_to_existing_store(raw3, tmp_path, capsys):
    out = tmp_path / "prep"
    opts = PrepareOptions(split=(0.34, 0.33, 0.33), seed=5)
    assert prepare_dataset(raw3, out, opts, log=None).ok
    manifest = (out / "manifest.json").read_bytes()
    assert main(["prepare", "-o", str(out), "--folds", "3"]) == 0  # no -i: folds only
    assert "3 folds" in capsys.readouterr().out
    store = PreparedStore(out)
    assert store.folds == make_folds(store.case_ids(), 3, seed=5)  # the store's seed
    assert (out / "manifest.json").read_bytes() == manifest  # store untouched
    assert write_folds(out, 3) == store.folds  # same folds again: no-op
    # different folds need --overwrite
    assert main(["prepare", "-o", str(out), "--folds", "3", "--seed", "9"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["prepare", "-o", str(out), "--folds", "3", "--seed", "9", "--overwrite"]) == 0
    assert PreparedStore(out).folds == make_folds(store.case_ids(), 3, seed=9)
    assert main(["prepare", "-o", str(out)]) == 2  # neither -i nor --folds
    assert "-i/--input is required" in capsys.readouterr().err


def test_fold_view_errors(raw3, tmp_path):
    out = tmp_path / "prep"
    assert prepare_dataset(raw3, out, PrepareOptions(), log=None).ok
    store = PreparedStore(out)
    with pytest.raises(InputError, match=r"has no cross-validation folds.*--folds K"):
        store.fold(0)
    write_folds(out, 3)
    with pytest.raises(InputError, match=r"fold 3 is out of range: the store has 3 folds \(0..2\)"):
        store.fold(3)
    (out / "splits_final.json").write_text('[{"train": ["x"], "val": ["y"]}]')
    with pytest.raises(InputError, match="splits_final.json"):
        store.folds  # noqa: B018
