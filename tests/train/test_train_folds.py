"""``fuse4seg train --fold i``: trains on fold i's training cases, validates on its held-out
cases, records the fold, keeps it on resume; one-line errors for stores without folds, folds
out of range and folds with too few training cases. The store has 3 cases and 3 folds: the
smallest trainable cross-validation (2 training patients per fold)."""

from __future__ import annotations

import json

import pytest
import torch

from fuse4seg.cli.main import main
from fuse4seg.train import trainer as trainer_module

SMALL = (
    "warmup_epochs: 1\nrollout_epochs: 1\nsteps_per_epoch: 1\nbatch_size: 4\n"
    "inner_steps: 2\nlog_every: 1\n"
)


@pytest.fixture(scope="module")
def cv_store(tmp_path_factory):
    """3 phantom cases 40x40x16 at 32x32, fixed split 1/1/1 and 3 folds."""
    from fuse4seg.data import PrepareOptions, prepare_dataset, write_phantom_dataset

    root = tmp_path_factory.mktemp("cv_store")
    write_phantom_dataset(root / "raw", cases=3, shape=(40, 40, 16), seed=3)
    opts = PrepareOptions(size=32, split=(0.34, 0.33, 0.33), folds=3)
    assert prepare_dataset(root / "raw", root / "prep", opts, log=None).ok
    return root / "prep"


def _args(store, run, cfg, *extra):
    return [
        "train", "-d", str(store), "-o", str(run), "--preset", "tiny", "--config", str(cfg),
        "--device", "cpu", "--threads", "1", "--no-progress", *extra,
    ]  # fmt: skip


@pytest.fixture
def small_cfg(tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL)
    return cfg


def test_train_fold_uses_the_fold_cases(cv_store, small_cfg, tmp_path, monkeypatch):
    folds = json.loads((cv_store / "splits_final.json").read_text())
    seen = {}
    fit = trainer_module.Trainer.fit

    def spy(self, *a, **k):
        seen["train"] = sorted(set(self.train_data.case_ids_per_item))
        seen["val"] = list(self.val_case_ids)
        return fit(self, *a, **k)

    monkeypatch.setattr(trainer_module.Trainer, "fit", spy)
    run = tmp_path / "run"
    assert main(_args(cv_store, run, small_cfg, "--fold", "1", "--method", "average")) == 0
    assert seen == {"train": folds[1]["train"], "val": folds[1]["val"]}
    assert len(seen["train"]) == 2  # 3 cases, K = 3
    info = json.loads((run / "run_info.json").read_text())
    assert info["fold"] == 1 and info["num_folds"] == 3
    assert info["fold_train_cases"] == folds[1]["train"]
    assert info["fold_val_cases"] == folds[1]["val"]
    assert len(info["splits_sha256"]) == 64
    val = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r["type"] == "val" for r in val)  # validated on the held-out fold
    assert (run / "model.pt").is_file()


def test_train_fold_resume_keeps_the_fold(cv_store, small_cfg, tmp_path, capsys):
    run = tmp_path / "run"
    args = _args(cv_store, run, small_cfg, "--method", "average")
    assert main([*args, "--fold", "2", "--max-steps", "1"]) == 0
    assert main([*args, "--resume", "--fold", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {run}: the run was trained on fold 2, not fold 0"
    assert main([*args, "--resume"]) == 0  # the fold comes from run_info.json
    assert json.loads((run / "run_info.json").read_text())["fold"] == 2
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 3  # 1 + K = 2


def test_train_fold_errors_one_line(cv_store, small_cfg, tmp_path, capsys):
    from fuse4seg.data import PrepareOptions, prepare_dataset

    assert main(_args(cv_store, tmp_path / "r1", small_cfg, "--fold", "3")) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {cv_store}: fold 3 is out of range: the store has 3 folds (0..2)"
    raw = cv_store.parent / "raw"
    plain = tmp_path / "plain"
    assert prepare_dataset(raw, plain, PrepareOptions(size=32), log=None).ok
    assert main(_args(plain, tmp_path / "r2", small_cfg, "--fold", "0")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {plain}: has no cross-validation folds") and "--folds K" in err
    assert "\n" not in err
    big = tmp_path / "big.yaml"
    big.write_text(SMALL + "patients_per_batch: 3\n")
    assert main(_args(cv_store, tmp_path / "r3", big, "--fold", "0")) == 2
    err = capsys.readouterr().err.strip()
    assert "fold 0's training cases: 2 case(s); patients_per_batch needs >= 3" in err
    v1 = ["--method", "fuse4seg-v1", "--fold", "0"]
    assert main(_args(cv_store, tmp_path / "r4", small_cfg, *v1)) == 2
    assert "--fold is not supported" in capsys.readouterr().err
