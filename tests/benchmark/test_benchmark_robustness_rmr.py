"""Robustness benchmark: Dice values, drop, fusion metrics, tables, 2D and 3D adapters."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from fuse4seg.benchmark.robustness import (
    RMRAdapter,
    SliceAdapter,
    dice_per_class,
    fusion_metrics,
    run_robustness_benchmark,
)
from fuse4seg.data.volume_store import InMemoryVolumeStore
from fuse4seg.io.atomic import save_torch_atomic
from fuse4seg.rmr.networks import create_rmr_net
from fuse4seg.rmr.train import RMRTrainConfig, build_model_dict


def test_dice_per_class_hand_computed():
    ref = np.zeros((2, 4, 4), np.uint8)
    pred = np.zeros_like(ref)
    ref[0, :2, :2] = 2  # 4 ED voxels
    pred[0, :2, :1] = 2  # 2 of them
    pred[1, 0, 0] = 1  # a false NCR, no reference NCR
    d = dice_per_class(pred, ref)
    assert d["Dice_ED"] == pytest.approx(2 * 2 / (4 + 2))
    assert d["Dice_NCR"] == 0.0
    assert d["Dice_ET"] == 1.0  # absent in both
    assert d["Dice_mean"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert d["Dice_WT"] == pytest.approx(2 * 2 / (4 + 3))  # 2 ED + 1 NCR against 4 ED
    assert d["Dice_TC"] == 0.0  # a false NCR, no reference core
    with pytest.raises(ValueError, match="differ in shape"):
        dice_per_class(pred, ref[:1])


def test_fusion_metrics_of_average_fusion():
    rng = np.random.default_rng(0)
    a = rng.random((6, 12, 12)).astype(np.float32)
    b = rng.random((6, 12, 12)).astype(np.float32)
    m = fusion_metrics((a + b) / 2, np.stack([a, b]))
    assert set(m) == {"EN", "FMI", "AG", "SCD"}
    assert all(math.isfinite(v) for v in m.values())
    assert 0 < m["EN"] <= 8
    # SCD of the average of two independent sources: 2 corr(a, (a - b) / 2) ~ sqrt(2)
    assert m["SCD"] == pytest.approx(math.sqrt(2), abs=0.15)
    assert math.isnan(fusion_metrics(a, np.stack([a, b, a]))["SCD"])


def _threshold_store(n: int = 2) -> InMemoryVolumeStore:
    """Channel 0 is a bright cube on a dark background; ED label = the cube."""
    images, labels = {}, {}
    for i in range(n):
        img = np.full((8, 2, 16, 16), 0.1, np.float32)
        img[2:6, 0, 4 + i : 12, 4:12] = 0.9
        img[:, 1] = np.linspace(0.2, 0.8, 16, dtype=np.float32)  # a ramp along W
        lab = np.zeros((8, 16, 16), np.uint8)
        lab[2:6, 4 + i : 12, 4:12] = 2
        images[f"c{i}"], labels[f"c{i}"] = img, lab
    return InMemoryVolumeStore(images, labels, ("t1", "flair"), {"test": list(images)})


def _threshold_slices(x: torch.Tensor):
    """2D 'model': ED where channel 0 > 0.5; fused = channel mean. x (N, M, H, W)."""
    ed = (x[:, 0] > 0.5).float()
    logits = torch.stack([1 - ed, torch.zeros_like(ed), ed, torch.zeros_like(ed)], dim=1)
    return x.mean(1, keepdim=True), logits


def test_benchmark_with_slice_adapter_known_values(tmp_path):
    store = _threshold_store()
    adapter = SliceAdapter(_threshold_slices, modalities=["t1", "flair"], batch_size=3)
    res = run_robustness_benchmark(adapter, store, tmp_path, split="test", log=None)
    clean, deg, drop = res["summary"]["clean"], res["summary"]["degraded"], res["drop"]
    assert clean["Dice_ED"] == 1.0 and clean["Dice_mean"] == 1.0
    assert deg["Dice_mean"] < 1.0
    assert drop["Dice_mean"] == pytest.approx(clean["Dice_mean"] - deg["Dice_mean"])
    for key in ("EN", "FMI", "AG", "SCD"):
        assert math.isfinite(clean[key]) and math.isfinite(deg[key])
    assert deg["AG"] > clean["AG"]  # noise adds gradient energy to a pass-through fusion
    # deterministic: the same seed gives the same table
    again = run_robustness_benchmark(adapter, store, tmp_path / "b", split="test", log=None)
    assert again["summary"] == res["summary"]
    md = (tmp_path / "robustness.md").read_text()
    assert "| Dice_mean | 1.0000 |" in md and "paper_test" in md
    rows = list(csv.DictReader((tmp_path / "robustness_cases.csv").open()))
    assert [r["setting"] for r in rows] == ["clean", "degraded"] * 2
    summary = list(csv.DictReader((tmp_path / "robustness.csv").open()))
    assert [r["setting"] for r in summary] == ["clean", "degraded", "drop"]


def test_benchmark_continues_past_bad_case(tmp_path):
    store = _threshold_store(3)
    store._labels["c1"] = np.zeros((8, 16, 15), np.uint8)  # wrong geometry
    adapter = SliceAdapter(_threshold_slices, modalities=["t1", "flair"])
    messages = []
    res = run_robustness_benchmark(adapter, store, tmp_path, split="test", log=messages.append)
    assert [c for c, _ in res["failed"]] == ["c1"]
    assert len(res["cases"]) == 4
    assert any(m.startswith("FAILED c1") for m in messages)


def test_benchmark_with_rmr_model_file(tmp_path):
    torch.manual_seed(0)
    cfg = RMRTrainConfig(preset="tiny", seg_head="unet", patch_size=(8, 16, 16))
    net = create_rmr_net("tiny", 2, seg_head="unet", patch_size=(8, 16, 16))
    save_torch_atomic(build_model_dict(net, cfg), tmp_path / "model.pt")
    adapter = RMRAdapter.from_file(tmp_path / "model.pt", "cpu")
    res = run_robustness_benchmark(
        adapter, _threshold_store(1), tmp_path / "out", split="test", log=None
    )
    assert len(res["cases"]) == 2 and not res["failed"]
    assert all(math.isfinite(res["summary"]["clean"][k]) for k in ("Dice_mean", "EN", "FMI"))


def test_rmr_adapter_window_option(tmp_path, caplog):
    torch.manual_seed(0)
    cfg = RMRTrainConfig(preset="tiny", seg_head="unet", patch_size=(8, 16, 16))
    net = create_rmr_net("tiny", 2, seg_head="unet", patch_size=(8, 16, 16))
    save_torch_atomic(build_model_dict(net, cfg), tmp_path / "model.pt")
    model = RMRAdapter.from_file(tmp_path / "model.pt", "cpu").model
    images = np.random.default_rng(0).random((2, 12, 24, 24)).astype(np.float32)
    f0, l0 = RMRAdapter(model)(images)
    f1, l1 = RMRAdapter(model, window=(8, 16, 16), sw_batch_size=4)(images)  # = the patch
    np.testing.assert_allclose(f1, f0, atol=1e-6)
    np.testing.assert_array_equal(l1, l0)
    assert "differs from the training patch" not in caplog.text
    with caplog.at_level("WARNING", logger="fuse4seg.benchmark.robustness"):
        adapter = RMRAdapter(model, window=(16, 32, 32))  # one window, larger than the patch
    assert "16x32x32 differs from the training patch 8x16x16" in caplog.text
    f2, l2 = adapter(images)
    assert f2.shape == f0.shape and l2.shape == l0.shape
    with pytest.raises(ValueError, match="window"):
        RMRAdapter(model, window=(8, 16))
