"""``fuse4seg train`` / ``demo``: finite config values, checked store arrays, the run-folder
policy, one-line resource errors and a clean ``metrics.jsonl`` after ``--resume`` (issue 14)."""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_cli import SMALL, train_args

from fuse4seg.cli.main import main
from fuse4seg.errors import ConfigError


def _args(store, run, cfg, *extra):
    return train_args(store, run, cfg, "--method", "average", *extra)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [("lr_leader: .nan", "lr_leader", "nan"), ("alpha: .inf", "alpha", "inf"),
     ("gamma: -.inf", "gamma", "-inf")],
)  # fmt: skip
def test_non_finite_config_values_are_one_line_errors(
    tiny_store, tmp_path, capsys, line, key, value
):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL + line + "\n")
    assert main(_args(tiny_store, tmp_path / "run", bad)) == 2
    err = capsys.readouterr().err
    assert err == f"error: config key {key!r} must be a finite number, got {value}\n"
    assert not (tmp_path / "run").exists()


def test_non_finite_list_values_are_refused():
    from fuse4seg.train.config import make_config

    with pytest.raises(ConfigError, match="'class_weights' must be a finite number"):
        make_config("tiny", class_weights=[1.0, float("nan"), 1.0, 1.0])


def test_store_array_with_a_wrong_shape_is_a_one_line_error(tiny_store, tmp_path, cfg, capsys):
    from fuse4seg.data import PreparedStore

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    case = PreparedStore(store).case_ids("train")[0]
    image = store / "cases" / case / "image.npy"
    good = np.load(image)
    np.save(image, good[:, :, :-3])  # (D, M, H, W - 3)
    assert main(_args(store, tmp_path / "run", cfg)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {image}: store array has shape ")
    assert "the manifest gives" in err and err.count("\n") == 1 and "Traceback" not in err


def test_disk_full_while_training_is_one_line(tiny_store, tmp_path, cfg, capsys, monkeypatch):
    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    run = tmp_path / "run"
    assert main(_args(tiny_store, run, cfg)) == 2
    err = capsys.readouterr().err
    # the first checkpoint written (best.pt after validation, or last.pt) hits the full disk
    assert re.match(rf"error: {re.escape(str(run))}/(best|last)\.pt: not written: no space", err)
    assert err.count("\n") == 1
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".tmp-")]


def test_run_folder_policy(tiny_store, tmp_path, cfg, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    (run / "metrics.jsonl").write_text('{"step": 99}\n')
    assert main(_args(tiny_store, run, cfg, "--max-steps", "1")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run}: run folder is not empty (metrics.jsonl, notes.txt)")
    assert "--resume" in err and "--overwrite" in err
    assert main(_args(tiny_store, run, cfg, "--resume", "--overwrite")) == 2
    assert "give one" in capsys.readouterr().err
    assert main(_args(tiny_store, run, cfg, "--max-steps", "1", "--overwrite")) == 0
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    metrics = run / "metrics.jsonl"
    assert not metrics.exists() or '"step": 99' not in metrics.read_text()  # replaced
    for inside in (tiny_store, tiny_store / "runs" / "x"):
        assert main(_args(tiny_store, inside, cfg)) == 2
        assert "input folder" in capsys.readouterr().err
    assert not (tiny_store / "runs").exists()


def test_resume_does_not_repeat_metrics_lines(tiny_store, tiny_cfg, tmp_path):
    from fuse4seg.train.checkpoint import load_checkpoint
    from fuse4seg.train.trainer import run_training

    run = tmp_path / "run"
    cfg = tiny_cfg(method="average", log_every=1)
    run_training(tiny_cfg(method="average", log_every=1, max_steps=3), tiny_store, run,
                 device="cpu", progress=False)  # fmt: skip
    saved = load_checkpoint(run / "last.pt")["step"]
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    # a run killed after the checkpoint logged steps that the resumed run replays
    replayed = [json.dumps({"type": "train", "epoch": 1, "step": saved + k}) for k in (1, 2)]
    metrics.write_text("\n".join([*lines, *replayed, '{"type": "train", "st']) + "\n")
    run_training(cfg, tiny_store, run, device="cpu", resume=True, progress=False)
    records = [json.loads(x) for x in metrics.read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["type"] == "train"]
    assert train_steps == sorted(set(train_steps)), train_steps  # no step logged twice
    assert records[: len(lines)] == [json.loads(x) for x in lines]  # the history is kept


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_demo_on_a_missing_device_writes_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--quick", "--device", "cuda", "--no-progress"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not out.exists()


def test_demo_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    assert main(["demo", "-o", str(out), "--quick", "--device", "cpu", "--no-progress"]) == 2
    assert "not empty (mine.txt); use --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
