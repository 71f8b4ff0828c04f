"""The run folder (RunFolder): its writers, and one layout for the 2D trainer, v1 and rmr3d."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from _train_cli import SMALL
from _train_cli import train_args as _args

from fuse4seg.errors import InputError, ModelFileError
from fuse4seg.train.run_folder import RUN_FILES, RunFolder

#: what every method writes into RUN_DIR
LAYOUT = {"config.yaml", "run_info.json", "metrics.jsonl", "last.pt", "model.pt"}


def test_writers_and_readers(tmp_path):
    folder = RunFolder(tmp_path / "run").create()
    assert {folder.CONFIG, folder.RUN_INFO, folder.METRICS, folder.LAST, folder.MODEL} == LAYOUT
    assert set(RUN_FILES) >= LAYOUT and folder.last == tmp_path / "run" / "last.pt"
    folder.write_config({"patch_size": (8, 16, 16), "lr": 1e-3, "nested": {"a": (1, 2)}})
    assert yaml.safe_load(folder.config.read_text()) == {
        "patch_size": [8, 16, 16],
        "lr": 1e-3,
        "nested": {"a": [1, 2]},
    }
    info = folder.write_run_info("m", "cpu", False, prep_dir="p", world_size=2)
    saved = folder.read_run_info()
    assert saved == info and saved["method"] == "m" and saved["world_size"] == 2
    for key in ("fuse4seg_version", "git_hash", "command", "torch_version", "started"):
        assert key in saved
    for step in (1, 2, 3):
        folder.log_metrics({"step": step, "loss": 1.0 / step})
    with open(folder.metrics, "a") as fh:
        fh.write('{"step": 4, "lo')  # killed mid-write
    assert [r["step"] for r in folder.read_metrics()] == [1, 2, 3]
    folder.truncate_metrics(lambda r: r["step"] <= 2)
    assert folder.metrics.read_text() == '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n'
    folder.check_new()  # no last.pt yet
    folder.save_checkpoint({"step": 2, "w": torch.ones(2)})
    ckpt = torch.load(folder.last, weights_only=True)
    assert ckpt["format"] == "fuse4seg-checkpoint" and ckpt["step"] == 2
    assert torch.equal(folder.load_checkpoint()["w"], torch.ones(2))
    with pytest.raises(InputError, match="already holds a run"):
        folder.check_new()
    with pytest.raises(ModelFileError, match="checkpoint not found"):
        folder.load_checkpoint(folder.BEST)
    assert RunFolder(tmp_path / "none").read_run_info() is None


RMR_YAML = (
    "seg_head: unet\npatch_size: [8, 16, 16]\nstage1_steps: 1\nstage2_steps: 1\nlog_every: 1\n"
    "modalities: [t1ce, flair]\n"
)


@pytest.mark.parametrize(
    ("method", "config_text", "extra"),
    [
        ("average", SMALL, ()),  # 2 short epochs, validated
        ("fuse4seg-v1", SMALL, ("--max-steps", "2")),
        ("rmr3d", RMR_YAML, ()),  # 1 step per stage
    ],
)
def test_every_method_writes_the_same_run_folder(tiny_store, tmp_path, method, config_text, extra):
    from fuse4seg.cli.main import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config_text)
    run = tmp_path / "run"
    assert main(_args(tiny_store, run, cfg, "--method", method, *extra)) == 0
    assert {p.name for p in run.iterdir()} >= LAYOUT
    info = json.loads((run / "run_info.json").read_text())
    assert info["method"] == method and info["prep_dir"] == str(tiny_store)
    assert len(info["manifest_sha256"]) == 64 and info["resumed"] is False
    assert isinstance(yaml.safe_load((run / "config.yaml").read_text()), dict)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and all("step" in r for r in records)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["format"] == "fuse4seg-checkpoint" and ckpt["method"] == method
    assert torch.load(run / "model.pt", weights_only=True)["method"] == method
