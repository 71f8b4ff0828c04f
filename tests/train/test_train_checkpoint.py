from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from fuse4seg.errors import ModelFileError
from fuse4seg.models import create_fusion_net, create_seg_net
from fuse4seg.models.model_file import FusionSegModel, load_model_file, save_model_file
from fuse4seg.train.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _draw():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_state_round_trips_through_weights_only_checkpoint(tmp_path):
    state = capture_rng_state()
    first = _draw()
    save_checkpoint({"rng": state, "epoch": 3}, tmp_path / "c.pt")
    loaded = load_checkpoint(tmp_path / "c.pt")  # weights_only=True inside
    _draw()
    restore_rng_state(loaded["rng"])
    assert _draw() == first
    assert loaded["epoch"] == 3


def test_truncated_or_foreign_checkpoint_is_a_model_file_error(tmp_path):
    save_checkpoint({"x": torch.ones(100)}, tmp_path / "c.pt")
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="trunc.pt"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save({"a": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="not a fuse4seg training checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(ModelFileError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("kind", ["fusion", "rule", "multichannel"])
def test_model_file_round_trip(tmp_path, kind):
    torch.manual_seed(0)
    fusion = create_fusion_net("tiny", 2) if kind == "fusion" else None
    seg = create_seg_net("tiny", 2 if kind == "multichannel" else 1)
    model = FusionSegModel(
        method={"fusion": "fuse4seg", "rule": "average", "multichannel": "multichannel"}[kind],
        modalities=["t1ce", "flair"],
        seg_net=seg,
        fusion_net=fusion,
        fusion_rule="average" if kind == "rule" else None,
        preprocessing={"size": 16, "percentiles": [0.5, 99.5]},
        input_size=16,
        fusion_preset="tiny" if fusion else None,
        seg_preset="tiny",
        train_config={"method": "x"},
    ).eval()
    save_model_file(model, tmp_path / "model.pt")
    raw = torch.load(tmp_path / "model.pt", weights_only=True)
    assert raw["format"] == "fuse4seg-model" and raw["format_version"] == 1
    assert (raw["fusion"] is None) == (kind != "fusion")
    assert raw["segmentation"]["in_channels"] == (2 if kind == "multichannel" else 1)
    loaded = load_model_file(tmp_path / "model.pt")
    assert loaded.modalities == ["t1ce", "flair"] and loaded.spatial_dims == 2
    assert loaded.preprocessing["size"] == 16 and loaded.num_classes == 4
    x = torch.rand(2, 2, 16, 16)
    with torch.no_grad():
        f0, l0 = model(x)
        f1, l1 = loaded(x)
    assert torch.allclose(l0, l1, atol=1e-6)
    if kind == "multichannel":
        assert f0 is None and f1 is None
    else:
        assert f1.shape == (2, 1, 16, 16) and torch.allclose(f0, f1, atol=1e-6)
    if kind == "rule":
        assert torch.allclose(f1, x.mean(1, keepdim=True))
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        loaded(torch.rand(1, 3, 16, 16))


def test_bad_model_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="junk.pt"):
        load_model_file(tmp_path / "junk.pt")
    torch.save({"format": "fuse4seg-model", "format_version": 9}, tmp_path / "v9.pt")
    with pytest.raises(ModelFileError, match="version 9"):
        load_model_file(tmp_path / "v9.pt")
    with pytest.raises(ModelFileError, match="not found"):
        load_model_file(tmp_path / "none.pt")


def test_model_file_written_before_the_transfer_function_still_loads(tmp_path):
    """A model.pt whose leader config predates transfer_hidden / output_norm /
    source_decoder_hidden loads as the leader it was: min-max output, no transfer."""
    torch.manual_seed(0)
    old_leader = create_fusion_net(
        "tiny", 2, transfer_hidden=0, output_norm="minmax", source_decoder_hidden=0
    )
    model = FusionSegModel(
        method="fuse4seg",
        modalities=["t1ce", "flair"],
        seg_net=create_seg_net("tiny", 1),
        fusion_net=old_leader,
        fusion_rule=None,
        preprocessing={"size": 16},
        input_size=16,
        fusion_preset="tiny",
        seg_preset="tiny",
        train_config={"method": "fuse4seg"},
    ).eval()
    save_model_file(model, tmp_path / "model.pt")
    raw = torch.load(tmp_path / "model.pt", weights_only=True)
    for key in ("transfer_hidden", "output_norm", "source_decoder_hidden"):
        del raw["fusion"]["config"][key]  # as files written before these options
    torch.save(raw, tmp_path / "old.pt")
    loaded = load_model_file(tmp_path / "old.pt")
    assert loaded.fusion_net.transfer is None
    assert loaded.fusion_net.config.output_norm == "minmax"
    x = torch.rand(2, 2, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x)[0], loaded(x)[0], atol=1e-6)
