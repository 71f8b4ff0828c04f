"""``benchmark seg`` on a tiny phantom store: every method trains under the same schedule and
all tables, figures and the HTML report are written."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from _tiny_schedule import TINY, TINY_OVERRIDES

from fuse4seg.benchmark.seg import SEG_METHODS, register_rule_methods, run_seg_benchmark
from fuse4seg.cli.main import main
from fuse4seg.data import PrepareOptions, prepare_dataset
from fuse4seg.data.phantom import write_phantom_dataset
from fuse4seg.errors import ConfigError
from fuse4seg.models.backbones import create_backbone


@pytest.fixture(scope="module")
def prep_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seg_bench")
    write_phantom_dataset(root / "raw", cases=6, shape=(32, 32, 16), seed=1)
    opts = PrepareOptions(modalities=("t1ce", "flair"), split=(0.5, 0.17, 0.33))
    res = prepare_dataset(root / "raw", root / "prep", opts, log=None)
    assert res.ok and len(res.manifest["splits"]["test"]) == 2
    return root / "prep"


@pytest.mark.parametrize(("name", "size"), [("dynunet", 30), ("swinunetr", 20), ("dynunet", 33)])
def test_external_backbones_any_size(name, size):
    net = create_backbone(name, 2, 4, "tiny")
    y = net(torch.rand(2, 2, size, size + 3))
    assert y.shape == (2, 4, size, size + 3)
    assert net.config["backbone"] == name
    with pytest.raises(ConfigError):
        create_backbone("unet3d", 2)


def test_rule_methods_registered_once():
    from fuse4seg.train.methods import METHODS

    names = register_rule_methods()
    assert names == ["rule-max", "rule-laplacian", "rule-dwt", "rule-pca"]
    assert register_rule_methods() == names
    assert METHODS["rule-dwt"].fusion_rule == "dwt" and not METHODS["rule-dwt"].has_leader


def test_bad_options(prep_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown benchmark methods"):
        run_seg_benchmark(prep_dir, tmp_path, methods=["unet"], log=None)
    with pytest.raises(ConfigError, match="set per benchmark row"):
        run_seg_benchmark(prep_dir, tmp_path, overrides={"method": "average"}, log=None)
    assert main(["benchmark", "seg", "-d", str(tmp_path / "nostore"), "-o", str(tmp_path)]) == 2


def test_benchmark_seg_all_methods_cli(prep_dir, tmp_path):
    out = tmp_path / "bench"
    assert main(["benchmark", "seg", "-d", str(prep_dir), "-o", str(out), *TINY]) == 0
    md = (out / "seg_results.md").read_text()
    for title in ("## Dice", "## IoU", "## HD95 (mm)", "## Cost"):
        assert title in md
    for name in SEG_METHODS:
        rows_of = [line for line in md.splitlines() if line.startswith(f"| {name} |")]
        assert len(rows_of) == 4, name  # one row in each table
    rows = {r["method"]: r for r in csv.DictReader((out / "seg_results.csv").open())}
    assert list(rows) == list(SEG_METHODS)
    for col in (
        "Dice_NCR",
        "Dice_NCR_std",
        "IoU_TC",
        "HD95_WT",
        "Dice_mean",
        "params_M",
        "train_s",
        "infer_ms_per_slice",
    ):
        assert col in rows["fuse4seg"], col
    # identical schedule: every row makes the same number of follower steps
    assert {int(r["follower_steps"]) for m, r in rows.items() if m != "fuse4seg-v1"} == {1 + 2}
    # the first version's own loop: K follower steps per cooperative batch, no warm-up steps
    assert int(rows["fuse4seg-v1"]["follower_steps"]) == 2
    leader = {m: int(r["leader_steps"]) for m, r in rows.items() if m != "fuse4seg-v1"}
    with_net = {
        "disjoint",
        "bilevel-only",
        "bilevel-decomp",
        "fuse4seg",
        "no-bilevel",
        "no-decomp",
        "no-grad",
    }
    assert all(leader[m] >= 1 for m in with_net)  # a fusion net was trained
    assert all(leader[m] == 0 for m in leader if m not in with_net)
    # Algorithm 1: one semantic leader step per rollout batch (none in the warm-up); the
    # no-bilevel ablation steps the leader jointly with each of the K follower steps
    assert leader["fuse4seg"] == 1 and leader["no-bilevel"] == 2
    assert leader["bilevel-only"] == leader["bilevel-decomp"] == 1
    for r in rows.values():
        assert 0.0 <= float(r["Dice_mean"]) <= 1.0 and float(r["params_M"]) > 0
    # the fusion net adds parameters on top of the same follower
    assert float(rows["fuse4seg"]["params_M"]) > float(rows["average"]["params_M"])
    cases = list(csv.DictReader((out / "seg_per_case.csv").open()))
    assert len(cases) == len(SEG_METHODS) * 2
    html = (out / "report.html").read_text()
    # 3 example grids (one per group) + the fuse4seg-v1 cross-attention figure + the weight /
    # transfer view of every row whose leader predicts weight maps
    assert html.count("<table>") == 4
    assert html.count("data:image/png;base64") == 4 + len(with_net)
    assert "fuse4seg-v1 cross-attention" in html
    assert "weight maps and transfer function" in html
    assert (out / "runs" / "fuse4seg" / "seed0" / "leader_view.png").is_file()
    assert (out / "runs" / "fuse4seg-v1" / "seed0" / "attention_example.png").is_file()
    for group in ("disjoint", "multichannel", "fuse4seg"):
        assert (out / f"seg_examples_{group}.png").is_file()
    info = json.loads((out / "benchmark_seg.json").read_text())
    assert info["num_test_cases"] == 2 and info["failed"] == {}
    assert not set(info["train_cases"]) & set(info["test_cases"])
    assert (out / "runs" / "fuse4seg" / "seed0" / "model.pt").is_file()


def test_benchmark_seg_seeds_spread(prep_dir, tmp_path):
    res = run_seg_benchmark(
        prep_dir,
        tmp_path / "s",
        methods=["average", "no-grad"],
        seeds=[0, 1],
        preset="tiny",
        overrides=TINY_OVERRIDES,
        device="cpu",
        log=None,
    )
    assert not res.failed and len(res.runs) == 4
    by = {r["method"]: r for r in res.summary}
    assert by["average"]["seeds"] == 2 and by["average"]["cases"] == 4
    assert math.isfinite(by["no-grad"]["Dice_mean_seed_std"])
    seeds = {(r.method, r.seed) for r in res.runs}
    assert seeds == {("average", 0), ("average", 1), ("no-grad", 0), ("no-grad", 1)}


def test_cli_choices_match_the_benchmark_rows():
    """The CLI spells the rows out (no torch import for --help); they must not drift."""
    from fuse4seg.benchmark.seg import ROW_SETS
    from fuse4seg.cli.benchmark import _ROW_SETS, _SEG_METHODS

    assert tuple(SEG_METHODS) == _SEG_METHODS
    assert tuple(ROW_SETS) == _ROW_SETS


class _LabelsInChannelZero(torch.nn.Module):
    """Predicts the label map written into the image's first channel (label / 3)."""

    def forward(self, x):
        labels = torch.round(x[:, 0] * 3).long()  # (B, H, W)
        return None, torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()


class _OneCaseStore:
    """Store layout (D, M, H, W) / (D, H, W): 3 axial slices, the hand-made case of
    tests/metrics (z=0 agrees on ED; z=1 empty; z=2: 2 NCR voxels, 1 found, 1 false ET)."""

    def __init__(self):
        self.ref = torch.zeros(3, 4, 4, dtype=torch.uint8)
        self.pred = torch.zeros_like(self.ref)
        self.ref[0, 0, :2] = self.pred[0, 0, :2] = 2
        self.ref[2, 1, :2] = 1
        self.pred[2, 1, 0] = 1
        self.pred[2, 3, 3] = 3

    def image(self, case_id):
        return torch.stack([self.pred.float() / 3, torch.zeros(3, 4, 4)], dim=1).numpy()

    def label(self, case_id):
        return self.ref.numpy()


@pytest.mark.parametrize("level, ncr, et", [("case", 2 / 3, 0.0), ("slice", (1 + 2 / 3) / 2, 0.5)])
def test_scores_at_the_dice_level(level, ncr, et):
    from fuse4seg.benchmark.seg import _score_model

    rows, _, _ = _score_model(
        _LabelsInChannelZero(), _OneCaseStore(), ["a"], torch.device("cpu"), None, level
    )
    assert rows[0]["Dice_NCR"] == pytest.approx(ncr) and rows[0]["Dice_ET"] == pytest.approx(et)
    assert rows[0]["IoU_NCR"] == pytest.approx(1 / 2)  # IoU stays 3D


def test_dice_level_is_checked(prep_dir, tmp_path):
    with pytest.raises(ConfigError, match="dice level"):
        run_seg_benchmark(prep_dir, tmp_path / "o", methods=["average"], dice_level="voxel")
