"""`fuse4seg train` and `fuse4seg demo` from the command line (in-process)."""

from __future__ import annotations

import json

import torch
from _train_cli import SMALL
from _train_cli import train_args as _args

from fuse4seg.cli.main import main


def test_cli_train_max_steps_smoke(tiny_store, tmp_path, capsys):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL)
    run = tmp_path / "run"
    assert main(_args(tiny_store, run, cfg, "--max-steps", "3", "--method", "average")) == 0
    out = capsys.readouterr().out
    assert "stopped at --max-steps" in out
    ckpt = torch.load(run / "last.pt", weights_only=True)
    # stops at the first batch boundary at or after 3 steps: 2 warm-up + 1 batch of K = 2
    assert ckpt["step"] == 4 and ckpt["method"] == "average"
    assert (run / "model.pt").is_file() and (run / "config.yaml").is_file()
    # resume finishes the run: 2 warm-up + 2 x K=2 rollout follower steps
    assert main(_args(tiny_store, run, cfg, "--resume")) == 0
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 6


def test_cli_train_user_errors_exit_2(tiny_store, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("warmup_epoch: 1\n")
    assert main(_args(tiny_store, tmp_path / "r1", bad)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.yaml" in err and "warmup_epoch" in err
    assert "Traceback" not in err
    ok = tmp_path / "ok.yaml"
    ok.write_text(SMALL)
    assert main(_args(tmp_path / "nostore", tmp_path / "r2", ok)) == 2
    assert "nostore" in capsys.readouterr().err
    assert main(_args(tiny_store, tmp_path / "r3", ok, "--method", "average", "--no-ema")) == 2
    assert "--no-ema" in capsys.readouterr().err


def test_cli_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--quick", "--threads", "1", "--no-progress"]) == 0
    html = (out / "report.html").read_text()
    for method in ("fuse4seg", "average", "multichannel"):
        assert method in html
    assert "Dice NCR" in html and "IoU ET" in html and "data:image/png;base64" in html
    results = json.loads((out / "results.json").read_text())
    for method, summary in results["summaries"].items():
        assert 0.0 <= summary["Dice_mean"] <= 1.0, method
    assert "mean Dice" in capsys.readouterr().out
    # the leader's glass-box view: weight/transfer figure and class-contrast table
    assert (out / "figures" / "leader_view.png").stat().st_size > 1000
    assert "What the leader takes from which modality" in html and "x_avg (average)" in html
    # --seed changes the training runs, not the phantom data
    out2 = tmp_path / "demo2"
    args = ["demo", "-o", str(out2), "--quick", "--threads", "1", "--no-progress", "--seed", "1"]
    assert main(args) == 0
    results2 = json.loads((out2 / "results.json").read_text())
    assert results2["summaries"] != results["summaries"]
    assert (out2 / "phantom").is_dir()


def test_cli_train_logs_one_line_per_epoch_without_carriage_returns(tiny_store, tmp_path):
    """`fuse4seg train ... > log` (not a terminal): one summary line per epoch, no bar."""
    import subprocess
    import sys

    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL)
    log = tmp_path / "train.log"
    args = _args(tiny_store, tmp_path / "run", cfg, "--method", "average")
    args.remove("--no-progress")  # the bar is asked for, but stdout/stderr are files
    with open(log, "wb") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "fuse4seg", *args], stdout=fh, stderr=subprocess.STDOUT
        )
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert "warmup" in epochs[0] and "rollout" in epochs[1] and "seg" in epochs[0]
    assert "val mean Dice" in epochs[1] and epochs[1].rstrip().endswith("s")
    quiet = tmp_path / "quiet.log"
    with open(quiet, "wb") as fh:
        args = _args(tiny_store, tmp_path / "run2", cfg, "--method", "average", "-q")
        subprocess.run([sys.executable, "-m", "fuse4seg", *args], stdout=fh, check=True)
    assert not any(line.startswith("epoch ") for line in quiet.read_text().splitlines())


def test_cli_train_warns_when_the_leader_never_left_the_warm_up(tiny_store, tmp_path, capsys):
    import pytest

    from fuse4seg.errors import InputWarning

    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL)
    # 2 warm-up batches of one follower step each: --max-steps 1 stops inside the warm-up
    with pytest.warns(InputWarning, match="leader made no optimiser step"):
        assert main(_args(tiny_store, tmp_path / "run", cfg, "--max-steps", "1")) == 0
    assert (tmp_path / "run" / "model.pt").is_file()


def test_demo_report_helpers_per_case_spread_and_reading():
    import numpy as np

    from fuse4seg.train.demo import _interpretation, _per_case_table
    from fuse4seg.train.report import html_table

    nan = float("nan")
    per_case = {
        "fuse4seg": [
            {"case_id": "a", "Dice_NCR": 0.2, "Dice_ED": 0.8, "Dice_ET": 0.5},
            {"case_id": "b", "Dice_NCR": nan, "Dice_ED": 0.6, "Dice_ET": 0.8},
        ],
        "average": [
            {"case_id": "a", "Dice_NCR": 0.4, "Dice_ED": 0.4, "Dice_ET": 0.4},
            {"case_id": "b", "Dice_NCR": 0.4, "Dice_ED": 0.4, "Dice_ET": 0.4},
        ],
    }
    header, rows, spread = _per_case_table(per_case)
    assert header == ["case", "fuse4seg", "average"]
    # case b: NCR absent from both masks, so its mean is over ED and ET: 0.7
    assert [r[0] for r in rows] == ["a", "b", "mean", "sd over cases"]
    np.testing.assert_allclose([r[1:] for r in rows[:3]], [[0.5, 0.4], [0.7, 0.4], [0.6, 0.4]])
    assert abs(spread["fuse4seg"][1] - 0.1414) < 1e-3
    text = _interpretation(spread, 2)
    assert "fuse4seg 0.600, average 0.400" in text and "+0.200" in text
    table = html_table(["m", "HD95"], [["x", 3.0], ["y", 2.0]], bold_min_columns=(1,))
    assert "<b>2.000</b>" in table and "<b>3.000</b>" not in table
