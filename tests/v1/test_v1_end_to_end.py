from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fuse4seg.v1.attention_maps import fuse_with_attention, key_importance, save_attention_maps
from fuse4seg.v1.config import make_v1_config
from fuse4seg.v1.runner import train_v1


@pytest.fixture(scope="module")
def phantom_store(tmp_path_factory):
    from fuse4seg.data.phantom import write_phantom_dataset
    from fuse4seg.data.prepare import PrepareOptions, prepare_dataset

    root = tmp_path_factory.mktemp("v1phantom")
    write_phantom_dataset(root / "raw", cases=4, shape=(32, 32, 16), seed=3)
    prepare_dataset(root / "raw", root / "prep", PrepareOptions(size=32, split=(0.5, 0.25, 0.25)))
    return root


@pytest.fixture(scope="module")
def trained(phantom_store):
    cfg = make_v1_config("tiny", {"pretrain_epochs": 1, "coop_epochs": 1, "steps_per_epoch": 2})
    run = phantom_store / "run"
    out = train_v1(phantom_store / "prep", run, cfg, device="cpu", max_steps=3)
    return run, out


def test_trains_both_stages_and_writes_standard_model_file(trained):
    run, out = trained
    assert out["steps"] == 3 and out["stopped_early"]
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in lines] == ["pretrain", "pretrain", "cooperative"]
    assert {"adv_d", "enc", "content", "corr"} <= set(lines[0])
    assert {"adv_d", "seg", "upper", "grad", "adv_f"} <= set(lines[2])
    assert all(np.isfinite(v) for r in lines for v in r.values() if isinstance(v, float))
    data = torch.load(run / "model.pt", weights_only=True)
    assert data["format"] == "fuse4seg-model" and data["method"] == "fuse4seg-v1"
    assert data["fusion"]["config"]["arch"] == "v1"
    assert data["modalities"] == ["t1ce", "flair"]
    assert data["segmentation"]["in_channels"] == 1


def test_resume_refuses_existing_run_without_flag(trained, phantom_store):
    from fuse4seg.errors import InputError

    run, _ = trained
    with pytest.raises(InputError, match="already holds a run"):
        train_v1(phantom_store / "prep", run, make_v1_config("tiny"), device="cpu", max_steps=1)


def test_model_file_loads_and_predicts_through_standard_path(trained, phantom_store, tmp_path):
    from fuse4seg.cli.main import main
    from fuse4seg.models.model_file import load_model_file
    from fuse4seg.v1.networks import FusionNetV1

    run, _ = trained
    model = load_model_file(run / "model.pt")
    assert isinstance(model.fusion_net, FusionNetV1)
    fused, logits = model(torch.rand(1, 2, 32, 32))
    assert fused.shape == (1, 1, 32, 32) and logits.shape == (1, 4, 32, 32)
    rc = main(["predict", "-m", str(run / "model.pt"), "-i", str(phantom_store / "raw"),
               "-o", str(tmp_path / "pred"), "--device", "cpu", "--no-progress"])  # fmt: skip
    assert rc == 0
    assert len(list((tmp_path / "pred").glob("*_seg.nii.gz"))) == 4


def test_attention_maps_saved_next_to_fused_output(trained, tmp_path):
    from PIL import Image

    from fuse4seg.train.checkpoint import load_checkpoint
    from fuse4seg.v1.runner import build_v1_networks

    run, _ = trained
    ckpt = load_checkpoint(run / "last.pt")
    fusion, _, _ = build_v1_networks(make_v1_config("tiny", ckpt["v1_config"]))
    fusion.load_state_dict(ckpt["state"]["fusion"])
    fused, attn, grid = fuse_with_attention(fusion.eval(), torch.rand(1, 2, 32, 32))
    imp = key_importance(attn, grid)
    assert imp.shape == (1, 2, *grid)
    assert torch.allclose(imp.sum(dim=(-1, -2)), torch.ones(1, 2), atol=1e-5)
    paths = save_attention_maps(attn, grid, tmp_path / "case_fused.png", (32, 32), fused[0, 0])
    names = sorted(p.name for p in paths)
    assert names == sorted(
        ["case_fused_attention_head0.png", "case_fused_attention_head1.png",
         "case_fused_attention_mean.png", "case_fused_attention_overlay.png"]
    )  # fmt: skip
    for p in paths:
        img = np.asarray(Image.open(p))
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert not list(tmp_path.glob(".tmp-*"))


def test_fuse_cli_saves_attention_next_to_each_fused_pair(trained, tmp_path, capsys):
    from PIL import Image

    from fuse4seg.cli.main import main

    run, _ = trained
    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for name in ("p1", "p2"):
            img = (rng.random((40, 36)) * 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / folder / f"{name}.png")
    out = tmp_path / "out"
    args = ["fuse", "-a", str(tmp_path / "a"), "-b", str(tmp_path / "b"), "-o", str(out),
            "-m", str(run / "model.pt"), "--device", "cpu", "--save-attention",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    for name in ("p1", "p2"):
        assert np.asarray(Image.open(out / f"{name}.png")).shape == (40, 36)
        overlay = np.asarray(Image.open(out / f"{name}_attention_overlay.png"))
        assert overlay.shape == (40, 36, 3)
        assert (out / f"{name}_attention_mean.png").is_file()
    # a classical rule has no attention maps: a one-line error, exit 2
    capsys.readouterr()
    rule_args = [a for a in args if a not in ("-m", str(run / "model.pt"))] + ["--rule", "max"]
    assert main(rule_args) == 2
    assert "--save-attention needs -m MODEL" in capsys.readouterr().err
