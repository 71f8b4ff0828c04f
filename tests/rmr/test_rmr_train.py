"""RMR-Fusion training: AE learns, stage 2 keeps stage 1 frozen, resume, config, model.pt."""

from __future__ import annotations

import pytest
import torch

from fuse4seg.data.volume_store import phantom_store
from fuse4seg.errors import ConfigError, InputError
from fuse4seg.rmr.networks import RMRNet
from fuse4seg.rmr.predict import load_rmr_model
from fuse4seg.rmr.train import (
    CHECKPOINT_NAME,
    STAGE1_NAME,
    RMRTrainConfig,
    load_train_config,
    train_rmr_on_store,
)

TINY = {
    "preset": "tiny",
    "seg_head": "unet",
    "patch_size": (8, 16, 16),
    "batch_size": 2,
    "log_every": 1,
}


@pytest.fixture(scope="module")
def store():
    # NIfTI (X, Y, Z) = (32, 32, 16) -> store (16, M, 32, 32)
    return phantom_store(1, (32, 32, 16), seed=0, modalities=("t1", "flair"))


def _volume(store) -> torch.Tensor:
    img = store.image(store.case_ids("train")[0])  # (D, M, H, W)
    return torch.from_numpy(img.transpose(1, 0, 2, 3).copy())[None]  # (1, M, D, H, W)


def test_autoencoder_beats_mean_prediction_after_short_training(store, tmp_path):
    cfg = {**TINY, "stage1_steps": 50, "stage2_steps": 0, "lr": 2e-3, "tumour_fraction": 0.0}
    train_rmr_on_store(store, tmp_path, cfg, device="cpu", log=None)
    ck = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    net = RMRNet.from_config(ck["net_config"])
    net.load_state_dict(ck["model"])
    net.eval()
    x = _volume(store)
    with torch.no_grad():
        rec = net.reconstruct(x)
    mse = (rec - x).pow(2).mean().item()
    mean_mse = (x - x.mean(dim=(2, 3, 4), keepdim=True)).pow(2).mean().item()
    assert mse < 0.5 * mean_mse, (mse, mean_mse)


def test_stage2_leaves_stage1_weights_bit_identical(store, tmp_path):
    cfg = {**TINY, "stage1_steps": 2, "stage2_steps": 3, "lr": 1e-3}
    model_path = train_rmr_on_store(store, tmp_path, cfg, device="cpu", log=None)
    stage1 = torch.load(tmp_path / STAGE1_NAME, weights_only=True)["state_dict"]
    model = torch.load(model_path, weights_only=True)
    final = {**model["fusion"]["state_dict"], **model["segmentation"]["state_dict"]}
    assert stage1 and all(k.startswith(("encoders.", "decoder.")) for k in stage1)
    for k, v in stage1.items():
        assert torch.equal(final[k], v), k
    # and stage 2 did train the fusion module
    fresh = RMRNet.from_config(model["fusion"]["config"]).state_dict()
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert ckpt["stage"] == 3
    fusion_keys = [k for k in final if k.startswith("fusion.")]
    assert any(not torch.equal(final[k], fresh[k]) for k in fusion_keys)


def test_model_file_contract_and_loadable_wrapper(store, tmp_path):
    cfg = {**TINY, "stage1_steps": 1, "stage2_steps": 1}
    path = train_rmr_on_store(store, tmp_path, cfg, device="cpu", log=None)
    md = torch.load(path, weights_only=True)
    assert md["format"] == "fuse4seg-model" and md["format_version"] == 1
    assert md["method"] == "rmr3d" and md["spatial_dims"] == 3
    assert md["modalities"] == ["t1", "flair"] and md["num_classes"] == 4
    assert md["patch_size"] == [8, 16, 16] and md["fusion_rule"] is None
    assert md["segmentation"]["in_channels"] == 16
    assert md["train_config"]["stage1_steps"] == 1
    for key in ("fusion", "segmentation", "normalisation", "fuse4seg_version", "input_size"):
        assert key in md
    model = load_rmr_model(path, "cpu")
    x = _volume(store)
    with torch.no_grad():
        fused, logits = model(x)
    assert fused.shape == (1, 1, 16, 32, 32) and logits.shape == (1, 4, 16, 32, 32)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2


def test_resume_continues_bit_identically(store, tmp_path):
    cfg = {**TINY, "stage1_steps": 3, "stage2_steps": 2, "checkpoint_every": 1, "lr": 1e-3}
    ref = torch.load(
        train_rmr_on_store(store, tmp_path / "a", cfg, device="cpu", log=None), weights_only=True
    )

    class Stop(Exception):
        pass

    def stop_at_stage2(msg: str) -> None:
        if msg.startswith("stage 2 step 1/"):
            raise Stop  # interrupted after stage-2 step 1, before its checkpoint

    with pytest.raises(Stop):
        train_rmr_on_store(store, tmp_path / "b", cfg, device="cpu", log=stop_at_stage2)
    assert not (tmp_path / "b" / "model.pt").exists()
    ck = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)
    assert (ck["stage"], ck["step"]) == (2, 0)
    out = torch.load(
        train_rmr_on_store(store, tmp_path / "b", cfg, device="cpu", resume=True, log=None),
        weights_only=True,
    )
    for part in ("fusion", "segmentation"):
        for k, v in ref[part]["state_dict"].items():
            assert torch.equal(out[part]["state_dict"][k], v), k
    # the log of the resumed run is the uninterrupted run's (lines after the checkpoint redone)
    a, b = ((tmp_path / r / "metrics.jsonl").read_text() for r in ("a", "b"))
    assert a == b and a.count("\n") == 5


def test_run_folder_of_the_older_layout_is_refused_in_one_line(store, tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"old")  # checkpoint.pt, log.jsonl, ...
    with pytest.raises(InputError, match="older layout") as err:
        train_rmr_on_store(store, tmp_path, TINY, device="cpu", resume=True, log=None)
    assert "\n" not in str(err.value) and "checkpoint.pt" in str(err.value)


def test_config_yaml_overrides_and_errors(tmp_path, store):
    y = tmp_path / "c.yaml"
    y.write_text("preset: tiny\nalpha: 2.5\nmodalities: [t1, flair]\n")
    cfg = load_train_config(y, eta=0.5)
    assert isinstance(cfg, RMRTrainConfig)
    assert (cfg.preset, cfg.alpha, cfg.eta, cfg.delta) == ("tiny", 2.5, 0.5, 0.08)
    assert cfg.resolved_patch_size == (16, 32, 32)
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: tiny\nalhpa: 1\n")
    with pytest.raises(ConfigError, match="alhpa"):
        load_train_config(bad)
    with pytest.raises(InputError, match="config file not found"):
        load_train_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="visual_target"):
        load_train_config({"modalities": ["t1", "t2"]})
    with pytest.raises(InputError, match="not available"):
        train_rmr_on_store(
            store,
            tmp_path / "r",
            {**TINY, "modalities": ["t1", "t2"], "visual_target": "t2"},
            log=None,
        )
    with pytest.raises(InputError, match="no checkpoint"):
        train_rmr_on_store(store, tmp_path / "r2", TINY, resume=True, log=None)


def test_stage1_from_skips_stage1_and_starts_stage2_from_that_autoencoder(store, tmp_path):
    first = tmp_path / "first"
    train_rmr_on_store(
        store, first, {**TINY, "stage1_steps": 3, "stage2_steps": 0}, "cpu", log=None
    )
    source = torch.load(first / STAGE1_NAME, weights_only=True)
    lines: list[str] = []
    cfg = {**TINY, "stage1_steps": 500, "stage2_steps": 2, "stage1_from": str(first / STAGE1_NAME)}
    model_path = train_rmr_on_store(store, tmp_path / "second", cfg, "cpu", log=lines.append)
    assert any("stage 1 skipped" in line for line in lines)
    rows = (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and all('"stage": 2' in r for r in rows)  # no stage-1 step ran
    copied = torch.load(tmp_path / "second" / STAGE1_NAME, weights_only=True)
    model = torch.load(model_path, weights_only=True)["fusion"]["state_dict"]
    for k, v in source["state_dict"].items():
        assert torch.equal(copied["state_dict"][k], v) and torch.equal(model[k], v), k


def test_stage1_from_errors_name_the_file(store, tmp_path):
    first = tmp_path / "first"
    train_rmr_on_store(
        store, first, {**TINY, "stage1_steps": 1, "stage2_steps": 0}, "cpu", log=None
    )
    missing = tmp_path / "none.pt"
    with pytest.raises(InputError, match="none.pt.*not found"):
        train_rmr_on_store(store, tmp_path / "a", {**TINY, "stage1_from": str(missing)}, log=None)
    with pytest.raises(InputError, match="not an RMR-Fusion stage1.pt"):
        cfg = {**TINY, "stage1_from": str(first / CHECKPOINT_NAME)}
        train_rmr_on_store(store, tmp_path / "b", cfg, "cpu", log=None)
    with pytest.raises(InputError, match="do not match"):  # another encoder width
        cfg = {**TINY, "preset": "base", "stage1_from": str(first / STAGE1_NAME)}
        train_rmr_on_store(store, tmp_path / "c", cfg, "cpu", log=None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
