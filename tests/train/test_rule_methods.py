"""Trainer methods ``rule-<name>`` (fuse4seg.train.rule_methods): registered with the other
methods, trainable from ``fuse4seg train`` and usable by ``fuse4seg predict``."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from fuse4seg.cli.main import main
from fuse4seg.errors import ConfigError

RULE_METHODS = ["rule-max", "rule-laplacian", "rule-dwt", "rule-pca"]

SMALL = (
    "warmup_epochs: 1\nrollout_epochs: 1\nsteps_per_epoch: 2\nbatch_size: 4\n"
    "inner_steps: 2\nval_max_cases: 1\n"
)


def test_registered_by_importing_only_the_registry():
    # a fresh interpreter: nothing but fuse4seg.train.methods (no benchmark module) imported
    code = (
        "import json, sys\n"
        "from fuse4seg.train.methods import METHODS\n"
        "specs = {k: [v.fusion_rule, v.has_leader, v.seg_input] for k, v in METHODS.items()}\n"
        "print(json.dumps({'specs': specs, 'benchmark': 'fuse4seg.benchmark' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert not info["benchmark"]
    for name in RULE_METHODS:
        assert info["specs"][name] == [name.removeprefix("rule-"), False, "mean"]
    assert "rule-average" not in info["specs"]  # the mean is the `average` method


def test_rule_list_follows_fusion_rules_and_registration_is_idempotent():
    from fuse4seg.benchmark.seg import register_rule_methods as bench_register
    from fuse4seg.fusion_rules import FUSION_RULES
    from fuse4seg.train.methods import METHODS
    from fuse4seg.train.rule_methods import RULE_METHOD_RULES, register_rule_methods

    assert bench_register is register_rule_methods  # the benchmark re-exports it
    assert list(RULE_METHOD_RULES) == [r for r in FUSION_RULES if r != "average"]
    spec = METHODS["rule-max"]
    assert register_rule_methods() == RULE_METHODS
    assert METHODS["rule-max"] is spec  # not re-registered
    with pytest.raises(ConfigError, match="unknown fusion rule"):
        register_rule_methods(["median"])
    assert "rule-median" not in METHODS


def test_unknown_method_errors_list_the_rule_methods(tiny_store, tmp_path, capsys, monkeypatch):
    from fuse4seg.train.methods import get_method

    with pytest.raises(ConfigError) as exc:
        get_method("rule-median")
    for name in RULE_METHODS:
        assert name in str(exc.value)
    # through a --config file: the registry's ConfigError, exit 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL + "method: rule-median\n")
    args = ["train", "-d", str(tiny_store), "-o", str(tmp_path / "r"), "--preset", "tiny"]
    assert main([*args, "--config", str(bad), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'rule-median'" in err and all(n in err for n in RULE_METHODS)
    # on the command line: argparse lists the choices
    with pytest.raises(SystemExit) as stop:
        main([*args, "--method", "rule-median"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "rule-median" in err and all(n in err for n in RULE_METHODS)
    monkeypatch.setenv("COLUMNS", "400")  # argparse's help wrapping breaks at hyphens
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(n in out for n in RULE_METHODS)


def test_cli_train_rule_max_then_predict(tiny_store, tmp_path, capsys):
    from fuse4seg.data import discover_cases
    from fuse4seg.data.preprocess import brain_mask, normalise_volume
    from fuse4seg.models.model_file import load_model_file

    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL)
    run = tmp_path / "run"
    rc = main(
        [
            "train", "-d", str(tiny_store), "-o", str(run), "--method", "rule-max",
            "--preset", "tiny", "--config", str(cfg), "--device", "cpu", "--threads", "1",
            "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert "rule-max finished" in capsys.readouterr().out
    # 2 warm-up batches x 1 + 2 rollout batches x K = 2 follower steps, no leader
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["method"] == "rule-max" and ckpt["step"] == 6
    data = torch.load(run / "model.pt", weights_only=True)
    assert data["method"] == "rule-max" and data["fusion_rule"] == "max"
    assert data["fusion"] is None
    model = load_model_file(run / "model.pt")
    assert model.fusion_rule == "max" and model.fusion_net is None
    x = torch.rand(2, 2, 32, 32)
    fused, logits = model(x)
    torch.testing.assert_close(fused, x.amax(dim=1, keepdim=True))
    assert logits.shape == (2, 4, 32, 32)

    # fuse4seg predict on a raw phantom case: the fused image is the max rule's
    case_dir = tiny_store.parent / "phantom" / "Phantom_000"
    out = tmp_path / "pred"
    rc = main(
        [
            "predict", "-m", str(run / "model.pt"), "-i", str(case_dir), "-o", str(out),
            "--device", "cpu", "--no-progress",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "Phantom_000: Dice WT" in captured.out
    seg = np.asanyarray(nib.load(out / "Phantom_000_seg.nii.gz").dataobj)
    assert set(np.unique(seg)) <= {0, 1, 2, 4}
    case = discover_cases(case_dir)[0]
    images = [nib.load(case.files[m]).get_fdata(dtype=np.float32) for m in ("t1ce", "flair")]
    mask = brain_mask(images)
    expect = np.maximum(*(normalise_volume(im, mask)[0] for im in images))
    expect[:, :, ~mask.any(axis=(0, 1))] = 0
    fused_out = nib.load(out / "Phantom_000_fused.nii.gz").get_fdata(dtype=np.float32)
    np.testing.assert_allclose(fused_out, expect, atol=1e-5)
    assert json.loads((out / "predict_args.json").read_text())["method"] == "rule-max"
