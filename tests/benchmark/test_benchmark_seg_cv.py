"""``benchmark seg --folds K``: every row on every fold, mean ± sd over folds, per-fold CSV,
runs split over calls (``--fold-ids``) and reused; the Table 3 row sets."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from _tiny_schedule import TINY, TINY_OVERRIDES

from fuse4seg.benchmark.seg import ROW_SETS, SEG_METHODS, expand_rows, run_seg_benchmark
from fuse4seg.cli.main import main
from fuse4seg.data import PrepareOptions, prepare_dataset, write_phantom_dataset
from fuse4seg.data.splits import make_folds
from fuse4seg.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def prep4(tmp_path_factory) -> Path:
    """4 phantom cases, no folds in the store (the benchmark makes them)."""
    root = tmp_path_factory.mktemp("seg_cv")
    write_phantom_dataset(root / "raw", cases=4, shape=(32, 32, 16), seed=4)
    res = prepare_dataset(root / "raw", root / "prep", PrepareOptions(size=32), log=None)
    assert res.ok
    return root / "prep"


def test_table3_incremental_rows_set_their_flags():
    assert ROW_SETS["table3-incremental"] == (
        "disjoint",
        "bilevel-only",
        "bilevel-decomp",
        "fuse4seg",
    )
    rows = {name: SEG_METHODS[name] for name in ROW_SETS["table3-incremental"]}
    assert rows["disjoint"].train_method == "disjoint" and rows["disjoint"].flags == {}
    for name in ("bilevel-only", "bilevel-decomp", "fuse4seg"):
        assert rows[name].train_method == "fuse4seg"  # bi-level Algorithm 1
        assert rows[name].flags.get("bilevel", True) is True
    # each row adds one component: +bi-level, +L_decomp, +L_grad
    assert rows["bilevel-only"].flags == {"use_decomp": False, "use_grad": False}
    assert rows["bilevel-decomp"].flags == {"use_grad": False}
    assert rows["fuse4seg"].flags == {}
    # the leave-one-out rows stay
    assert ROW_SETS["table3-ablation"] == ("fuse4seg", "no-bilevel", "no-decomp", "no-grad")
    assert SEG_METHODS["no-decomp"].flags == {"use_decomp": False}
    assert expand_rows(["average"], ["table3-incremental"]) == [
        "average",
        "disjoint",
        "bilevel-only",
        "bilevel-decomp",
        "fuse4seg",
    ]
    assert expand_rows() == list(SEG_METHODS)
    with pytest.raises(ConfigError, match="unknown row sets"):
        expand_rows(row_sets=["table4"])


def test_cv_benchmark_split_over_two_calls(prep4, tmp_path, capsys):
    out = tmp_path / "cv"
    args = ["benchmark", "seg", "-d", str(prep4), "-o", str(out), *TINY, "--folds", "2"]
    rows = ["--methods", "average", "bilevel-only"]
    assert main([*args, *rows, "--fold-ids", "0"]) == 0
    md = (out / "seg_results.md").read_text()
    assert "2-fold cross-validation (partial: folds [0] of 0..1)" in md
    folds = json.loads((out / "splits_final.json").read_text())
    assert folds == make_folds([f"{p.name}" for p in sorted((prep4 / "cases").iterdir())], 2, 0)
    assert (out / "runs" / "average" / "fold0" / "seed0" / "result.json").is_file()
    capsys.readouterr()

    # the second call (another session) runs fold 1 into the same OUT; fold 0's results
    # stay in the tables (the API: the CLI's policy for non-empty output folders aside)
    log: list[str] = []
    res = run_seg_benchmark(
        prep4,
        out,
        methods=["average", "bilevel-only"],
        preset="tiny",
        overrides=TINY_OVERRIDES,
        device="cpu",
        folds=2,
        fold_ids=[1],
        log=log.append,
    )
    assert not res.failed and sorted((r.method, r.fold) for r in res.runs) == [
        ("average", 0),
        ("average", 1),
        ("bilevel-only", 0),
        ("bilevel-only", 1),
    ]
    assert not any("reusing" in x for x in log)  # fold 0 was not asked for: only read
    md = (out / "seg_results.md").read_text()
    assert "2-fold cross-validation:" in md and "partial" not in md
    assert "Mean ± sd over the runs (folds x seeds)" in md
    summary = {r["method"]: r for r in csv.DictReader((out / "seg_results.csv").open())}
    assert list(summary) == ["average", "bilevel-only"]
    per_fold = list(csv.DictReader((out / "seg_per_fold.csv").open()))
    assert sorted((r["method"], r["fold"]) for r in per_fold) == [
        ("average", "0"),
        ("average", "1"),
        ("bilevel-only", "0"),
        ("bilevel-only", "1"),
    ]
    for name, row in summary.items():
        assert row["folds"] == "2" and row["runs"] == "2" and row["cases"] == "4"
        vals = [float(r["Dice_mean"]) for r in per_fold if r["method"] == name]
        assert math.isclose(float(row["Dice_mean"]), np.mean(vals), abs_tol=1e-9)
        assert math.isclose(float(row["Dice_mean_std"]), np.std(vals), abs_tol=1e-9)
    assert "± " in md.split("## Dice")[1].split("##")[0]  # mean ± sd cells
    cases = list(csv.DictReader((out / "seg_per_case.csv").open()))
    for fold in (0, 1):  # each fold is scored on its held-out cases only
        scored = {r["case_id"] for r in cases if r["fold"] == str(fold)}
        assert scored == set(folds[fold]["val"])
    # the row's flags reach the trained config; the fold is recorded
    run = out / "runs" / "bilevel-only" / "fold1" / "seed0"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["bilevel"] is True and cfg["use_decomp"] is False and cfg["use_grad"] is False
    info = json.loads((run / "run_info.json").read_text())
    assert info["fold"] == 1 and info["fold_train_cases"] == folds[1]["train"]
    bench = json.loads((out / "benchmark_seg.json").read_text())
    assert bench["fold_ids_done"] == [0, 1] and bench["complete"]

    # all folds again: everything is reused, nothing retrained
    lines: list[str] = []
    res = run_seg_benchmark(
        prep4,
        out,
        methods=["average"],
        preset="tiny",
        overrides=TINY_OVERRIDES,
        device="cpu",
        folds=2,
        log=lines.append,
    )
    assert len(res.runs) == 4 and not res.failed  # 2 reused average + 2 bilevel-only from OUT
    assert sum("reusing" in x for x in lines) == 2 and not any("mean Dice" in x for x in lines)
    # another config makes the stored results stale: retrained, the others left out
    res = run_seg_benchmark(
        prep4,
        out,
        methods=["average"],
        preset="tiny",
        overrides={**TINY_OVERRIDES, "inner_steps": 1},
        device="cpu",
        folds=2,
        fold_ids=[0],
        log=lines.append,
    )
    assert [(r.method, r.fold) for r in res.runs] == [("average", 0)]
    assert any(x.startswith("ignoring") and "another config" in x for x in lines)


def test_cv_benchmark_bad_options(prep4, tmp_path):
    def bench(**kw):
        kw = {"preset": "tiny", "overrides": TINY_OVERRIDES, "log": None, **kw}
        return run_seg_benchmark(prep4, tmp_path / "o", methods=["average"], **kw)

    with pytest.raises(InputError, match=r"4 case\(s\) cannot make 5 folds: use --folds 4"):
        bench(folds=5)
    with pytest.raises(ConfigError, match=r"--fold-ids \[2\] out of range for 2 folds"):
        bench(folds=2, fold_ids=[2])
    with pytest.raises(ConfigError, match="needs --folds"):
        bench(fold_ids=[0])
    with pytest.raises(ConfigError, match="fuse4seg-v1"):
        run_seg_benchmark(prep4, tmp_path / "o", methods=["fuse4seg-v1"], folds=2, log=None)


def test_cv_benchmark_three_cases(tmp_path, capsys):
    """3 cases: 3 folds train on 2 patients each; 2 folds cannot, and the error says so."""
    write_phantom_dataset(tmp_path / "raw", cases=3, shape=(32, 32, 16), seed=5)
    assert prepare_dataset(tmp_path / "raw", tmp_path / "prep", PrepareOptions(size=32), log=None)
    args = ["benchmark", "seg", "-d", str(tmp_path / "prep"), *TINY, "--methods", "average"]
    assert main([*args, "-o", str(tmp_path / "o2"), "--folds", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "use --folds 3" in err and "\n" not in err
    assert main([*args, "-o", str(tmp_path / "o3"), "--folds", "3", "--fold-ids", "2"]) == 0
    rows = list(csv.DictReader((tmp_path / "o3" / "seg_per_fold.csv").open()))
    assert [(r["method"], r["fold"], r["cases"]) for r in rows] == [("average", "2", "1")]


def test_seg_benchmark_continues_in_its_own_folder_without_overwrite(tmp_path):
    import argparse

    from fuse4seg.cli.benchmark import _claim_output, continues_seg_benchmark
    from fuse4seg.errors import InputError

    out = tmp_path / "cv"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    args = argparse.Namespace(
        benchmark_command="seg", output=str(out), data=str(tmp_path / "prep"), overwrite=False
    )
    with pytest.raises(InputError, match="not empty"):  # a foreign non-empty folder
        _claim_output(args)
    (out / "benchmark_seg.json").write_text("{}")
    assert continues_seg_benchmark(args)
    _claim_output(args)  # an earlier seg benchmark: continued
    fusion = argparse.Namespace(**{**vars(args), "benchmark_command": "fusion"})
    assert not continues_seg_benchmark(fusion)
    with pytest.raises(InputError, match="not empty"):
        _claim_output(fusion)
