"""``grad_convention`` of the 2D trainer: preset defaults, old configs, the L_grad it selects,
and ``v1_overrides`` for ``--method fuse4seg-v1``."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
import yaml

from fuse4seg.errors import ConfigError
from fuse4seg.losses import DiceCELoss, gradient_loss
from fuse4seg.models import create_seg_net
from fuse4seg.train.bilevel import LossWeights, TrainState, upper_loss
from fuse4seg.train.config import TrainConfig, make_config


@pytest.mark.parametrize(("preset", "convention"), [("tiny", "unit"), ("base", "unit"),
                                                    ("paper", "cddfuse")])  # fmt: skip
def test_preset_defaults(preset, convention):
    assert make_config(preset).grad_convention == convention


def test_yaml_override_bad_value_and_old_configs(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("grad_convention: cddfuse\n")
    assert make_config("tiny", y).grad_convention == "cddfuse"
    y.write_text("grad_convention: sobel8\n")
    with pytest.raises(ConfigError, match="grad_convention"):
        make_config("tiny", y)
    # a config.yaml / checkpoint config written before the key: the unit convention
    old = make_config("paper").to_dict()
    del old["grad_convention"], old["v1_overrides"]
    assert TrainConfig(**old).validate().grad_convention == "unit"
    y.write_text(yaml.safe_dump(old))
    assert make_config("base", y).grad_convention == "unit"


def _state(weights: LossWeights) -> TrainState:
    seg = create_seg_net("tiny", 1)
    return TrainState(seg, torch.optim.SGD(seg.parameters(), lr=0.1), DiceCELoss(4),
                      weights=weights)  # fmt: skip


def test_upper_loss_uses_the_configured_convention():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 12, 12, generator=g)
    fused = torch.rand(2, 1, 12, 12, generator=g)
    out = SimpleNamespace(fused=fused, low=None, high=None)
    values = {}
    for convention in ("unit", "cddfuse"):
        w = LossWeights(alpha=0.0, beta=5.0, gamma=0.0, grad_convention=convention)
        total, terms = upper_loss(_state(w), out, x, None, None)
        expected = gradient_loss(fused, x, convention=convention)
        assert terms["grad"] == pytest.approx(expected.item(), rel=1e-6)
        assert total.item() == pytest.approx(5.0 * expected.item(), rel=1e-6)
        values[convention] = terms["grad"]
    assert values["cddfuse"] > 4 * values["unit"]
    # the default LossWeights is the original convention (tiny / base runs unchanged)
    assert LossWeights().grad_convention == "unit"


def test_trainer_passes_the_convention_to_the_leader_loss(tmp_path):
    from fuse4seg.train.trainer import Trainer

    data = SimpleNamespace(case_ids_per_item=["a"] * 4 + ["b"] * 4)
    for preset, convention in (("tiny", "unit"), ("paper", "cddfuse")):
        cfg = make_config(preset, fusion_preset="tiny", seg_preset="tiny", batch_size=4,
                          tumour_fraction=None)  # fmt: skip
        trainer = Trainer(cfg, data, tmp_path / preset, device="cpu", progress=False)
        assert trainer.state.weights.grad_convention == convention


def test_v1_overrides_are_checked_and_reach_the_v1_config(tmp_path):
    cfg = make_config("tiny", method="fuse4seg-v1",
                      v1_overrides={"gan_loss": "log", "cross_attention": False})  # fmt: skip
    assert cfg.v1_overrides == {"gan_loss": "log", "cross_attention": False}
    with pytest.raises(ConfigError, match="gan_loss"):
        make_config("tiny", v1_overrides={"gan_loss": "wgan"})
    with pytest.raises(ConfigError, match="unknown fuse4seg-v1 config key"):
        make_config("tiny", v1_overrides={"cross_attn": False})
    y = tmp_path / "v1.yaml"
    y.write_text("v1_overrides: [gan_loss]\n")
    with pytest.raises(ConfigError, match="mapping"):
        make_config("tiny", y)
    assert dataclasses.replace(cfg, v1_overrides=None).validate().v1_overrides is None


def test_train_config_maps_onto_the_v1_config():
    from fuse4seg.v1.runner import v1_config_from_train_config

    cfg = make_config("tiny", method="fuse4seg-v1", v1_overrides={"gan_loss": "log"})
    v1 = v1_config_from_train_config(cfg)
    assert (v1.preset, v1.gan_loss, v1.cross_attention, v1.grad_convention) == (
        "tiny",
        "log",
        True,
        "unit",
    )
    # the explicit argument (the benchmark's schedule) wins over the YAML key
    v1 = v1_config_from_train_config(cfg, {"gan_loss": "lsgan", "cross_attention": False})
    assert (v1.gan_loss, v1.cross_attention) == ("lsgan", False)
    paper = v1_config_from_train_config(make_config("paper", method="fuse4seg-v1"))
    assert paper.grad_convention == "cddfuse"
    mixed = make_config("base", method="fuse4seg-v1", grad_convention="cddfuse")
    assert v1_config_from_train_config(mixed).grad_convention == "cddfuse"
