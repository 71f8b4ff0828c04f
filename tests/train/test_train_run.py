"""Whole runs on the tiny phantom store: outputs, resume exactness, NaN stop."""

from __future__ import annotations

import json

import pytest
import torch

from fuse4seg.models.model_file import load_model_file
from fuse4seg.train import bilevel
from fuse4seg.train.checkpoint import load_checkpoint
from fuse4seg.train.trainer import TrainingStopped, run_training


def _close(a, b, path=""):
    """Recursively compare nested state dicts (tensors with atol 1e-6)."""
    if isinstance(a, torch.Tensor):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}/{i}")
    else:
        assert a == b or (a != a and b != b), path


def test_run_folder_outputs(tiny_store, tiny_cfg, tmp_path):
    run = tmp_path / "run"
    result = run_training(tiny_cfg(), tiny_store, run, device="cpu", progress=False)
    for name in ("config.yaml", "run_info.json", "metrics.jsonl", "curves.png"):
        assert (run / name).is_file(), name
    for name in ("last.pt", "best.pt", "model.pt"):
        torch.load(run / name, weights_only=True)
    # 2 warm-up batches x 1 follower step + 2 rollout batches x (K=2 + 1 leader) steps
    assert result.steps == 2 + 2 * 3 and result.epochs_done == 2
    info = json.loads((run / "run_info.json").read_text())
    assert len(info["manifest_sha256"]) == 64 and info["method"] == "fuse4seg"
    vals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in vals if r["type"] == "val"]
    assert len(vals) == 2 and all(0.0 <= r["mean"] <= 1.0 for r in vals)
    model = load_model_file(run / "model.pt")
    assert model.method == "fuse4seg" and model.fusion_net is not None
    assert model.preprocessing["size"] == 32
    # a finished run cannot be overwritten by accident
    from fuse4seg.errors import InputError

    with pytest.raises(InputError, match="--resume"):
        run_training(tiny_cfg(), tiny_store, run, device="cpu", progress=False)


@pytest.mark.parametrize("method", ["fuse4seg", "disjoint"])
def test_resume_equals_uninterrupted(tiny_store, tiny_cfg, tmp_path, method):
    cfg = tiny_cfg(method=method, val_every=1)
    full = tmp_path / "full"
    run_training(cfg, tiny_store, full, device="cpu", progress=False)
    part = tmp_path / "part"
    stopped = run_training(
        tiny_cfg(method=method, max_steps=4), tiny_store, part, device="cpu", progress=False
    )
    assert stopped.stopped_early and stopped.steps < 8
    mid = load_checkpoint(part / "last.pt")
    # fuse4seg: 2 warm-up steps + 3 -> inside the rollout epoch; disjoint: 2 x (1 + 1) warm-up
    expected = (1, 1) if method == "fuse4seg" else (0, 2)
    assert (mid["epoch"], mid["batch_in_epoch"]) == expected
    resumed = run_training(
        tiny_cfg(method=method), tiny_store, part, device="cpu", resume=True, progress=False
    )
    assert not resumed.stopped_early and resumed.steps == 8
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    for key in ("follower", "leader", "ema", "opt_follower", "opt_leader", "sched_follower"):
        _close(a[key], b[key], key)
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_store, tiny_cfg, tmp_path, monkeypatch):
    run = tmp_path / "nan"
    original = bilevel.seg_loss
    calls = {"n": 0}

    def poisoned(state, logits, y):
        calls["n"] += 1
        loss = original(state, logits, y)
        return loss * float("nan") if calls["n"] > 3 else loss  # NaN in the rollout

    monkeypatch.setattr(bilevel, "seg_loss", poisoned)
    with pytest.raises(TrainingStopped, match=r"NaN/Inf.*last good checkpoint"):
        run_training(tiny_cfg(), tiny_store, run, device="cpu", progress=False)
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 2  # end of the warm-up epoch
    assert not (run / "model.pt").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["type"] == "error"
