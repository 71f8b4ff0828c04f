"""``benchmark fusion``: pair discovery, leak-free deterministic split, reference scoring,
and a tiny end-to-end run on real Harvard pairs producing every table and figure."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fuse4seg.benchmark.fusion import (
    FUSION_METRICS,
    HarvardPair,
    discover_harvard_pairs,
    score_fused,
    split_pairs,
)
from fuse4seg.cli.main import main
from fuse4seg.errors import ConfigError, InputError


def _write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def _fake_set(root: Path, name: str, other: str, n: int, dup_from: int | None = None) -> None:
    rng = np.random.default_rng(len(name))
    for i in range(n):
        _write_png(root / name / "MRI" / f"{10 + i}.png", rng.integers(0, 255, (16, 16)))
        src = i if dup_from is None or i < dup_from else i - dup_from
        img = np.random.default_rng(100 + src).integers(0, 255, (16, 16))
        _write_png(root / name / other / f"{10 + i}.png", img)


def test_split_is_deterministic_and_keeps_duplicates_together(tmp_path):
    # PET 14..17 are byte copies of PET 10..13 (like Harvard MRI_PET 32-52 vs 11-31)
    _fake_set(tmp_path, "MRI_PET", "PET", 8, dup_from=4)
    _fake_set(tmp_path, "MRI_CT", "CT", 5)
    pairs = discover_harvard_pairs(tmp_path)
    assert [p.name for p in pairs if p.set_name == "MRI_CT"] == [f"{i}.png" for i in range(10, 15)]
    train, test = split_pairs(pairs, 0.5)
    assert split_pairs(pairs, 0.5) == (train, test)
    assert len(train) + len(test) == len(pairs) and not {p.key for p in train} & {
        p.key for p in test
    }
    pet_train = {p.name for p in train if p.set_name == "MRI_PET"}
    for i in range(4):  # each duplicate group sits in one split
        assert (f"{10 + i}.png" in pet_train) == (f"{14 + i}.png" in pet_train)
    # groups alternate starting with train: CT 10, 12, 14 train; 11, 13 test
    assert sorted(p.name for p in train if p.set_name == "MRI_CT") == ["10.png", "12.png", "14.png"]
    assert split_pairs(pairs, 0.0)[0] == []
    with pytest.raises(ConfigError):
        split_pairs(pairs, 1.0)


def test_discovery_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover_harvard_pairs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no Harvard pairs"):
        discover_harvard_pairs(tmp_path / "empty")
    with pytest.raises(ConfigError):
        discover_harvard_pairs(tmp_path, sets=["MRI_XRAY"])


@pytest.mark.realdata
def test_scoring_matches_reference_evaluator(harvard_dir, reference_dir):
    """The 'max' fused image of MRI_CT/11 scores exactly the reference evaluator's values."""
    from fuse4seg.metrics.image_reading import read_gray_reference

    ref = json.loads((reference_dir / "fusion_metrics_reference.json").read_text())
    expected = ref["values"]["MRI_CT/11.png|max"]
    a = read_gray_reference(harvard_dir / "MRI_CT" / "MRI" / "11.png")
    b = read_gray_reference(harvard_dir / "MRI_CT" / "CT" / "11.png")
    got = score_fused(np.stack([a, b]), np.maximum(a, b))
    for name in FUSION_METRICS:
        assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name


@pytest.mark.realdata
def test_benchmark_fusion_cli_tiny_run(harvard_dir, reference_dir, tmp_path):
    out = tmp_path / "fusion"
    code = main(
        [
            "benchmark",
            "fusion",
            "-i",
            str(harvard_dir),
            "-o",
            str(out),
            "--rules",
            "average",
            "max",
            "--preset",
            "tiny",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--crop",
            "64",
            "--max-pairs",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    for name in (
        "fusion_table.md",
        "fusion_table.csv",
        "fusion_scores.csv",
        "fusion_grid.png",
        "split.json",
        "benchmark_fusion.json",
        "fusionnet_harvard.pt",
    ):
        assert (out / name).is_file(), name
    split = json.loads((out / "split.json").read_text())
    # 2 pairs per set: the first group trains the net, the second is the test pair
    assert split["train"] == ["MRI_CT/11.png", "MRI_PET/11.png", "MRI_SPECT/11.png"]
    assert split["test"] == ["MRI_CT/12.png", "MRI_PET/12.png", "MRI_SPECT/12.png"]
    rows = list(csv.DictReader((out / "fusion_table.csv").open()))
    assert {(r["set"], r["method"]) for r in rows} == {
        (s, m) for s in ("MRI_CT", "MRI_PET", "MRI_SPECT") for m in ("average", "max", "fusionnet")
    }
    assert all(f"{m}_std" in rows[0] for m in FUSION_METRICS)
    md = (out / "fusion_table.md").read_text()
    assert "| MRI_PET | fusionnet |" in md and "Qabf" in md
    # the max rule's row equals the reference evaluator's value for MRI_CT/12 (8-bit exact)
    ref = json.loads((reference_dir / "fusion_metrics_reference.json").read_text())["values"]
    ct_max = next(r for r in rows if r["set"] == "MRI_CT" and r["method"] == "max")
    assert float(ct_max["Qabf"]) == pytest.approx(ref["MRI_CT/12.png|max"]["Qabf"], rel=1e-5)
    fused = out / "fused" / "fusionnet" / "MRI_PET" / "12.png"
    assert fused.is_file()


def test_benchmark_fusion_bad_input_exit_code(tmp_path, capsys):
    code = main(["benchmark", "fusion", "-i", str(tmp_path / "none"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def test_harvard_pair_key():
    p = HarvardPair("MRI_CT", "11.png", Path("a"), Path("b"))
    assert p.key == "MRI_CT/11.png"
