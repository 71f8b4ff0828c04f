from __future__ import annotations

from pathlib import Path

import pytest

from fuse4seg.errors import ConfigError
from fuse4seg.train.config import PRESETS, TrainConfig, make_config, save_config


def test_paper_preset_has_section_4_1_defaults():
    cfg = make_config("paper")
    assert (cfg.warmup_epochs, cfg.rollout_epochs, cfg.inner_steps) == (40, 120, 5)
    assert (cfg.lr_leader, cfg.lr_follower, cfg.weight_decay) == (1e-4, 3e-4, 1e-5)
    assert (cfg.alpha, cfg.beta, cfg.gamma, cfg.ema_momentum) == (1.0, 5.0, 0.05, 0.99)
    assert cfg.batch_size == 8 and cfg.amp and cfg.schedule == "cosine"
    assert cfg.fusion_preset == cfg.seg_preset == "paper"


def test_presets_are_valid_and_tiny_is_small():
    for name in PRESETS:
        assert make_config(name).preset == name
    tiny = make_config("tiny")
    assert tiny.fusion_preset == "tiny" and tiny.steps_per_epoch is not None


def test_yaml_overrides_and_cli_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "inner_steps: 3\nlr_leader: 0.002\nclass_weights: [1, 2, 2, 3]\n"
        "leader_class_weights: [1, 1, 1, 1]\n"
    )
    cfg = make_config("base", path, inner_steps=7, seed=None)
    assert cfg.inner_steps == 7  # command line wins over the file
    assert cfg.lr_leader == 0.002 and cfg.class_weights == [1.0, 2.0, 2.0, 3.0]
    assert cfg.leader_class_weights == [1.0, 1.0, 1.0, 1.0]
    assert cfg.seed == 0  # None = not given


def test_unknown_key_is_rejected_with_file_name(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("inner_step: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'inner_step'"):
        make_config("base", path)


@pytest.mark.parametrize(
    "text, match",
    [
        ("batch_size: two\n", "integer"),
        ("patients_per_batch: 1\n", "patients_per_batch"),
        ("ema_momentum: 1.0\n", "ema_momentum"),
        ("- a\n- b\n", "mapping"),
        ("amp: 3\n", "true/false"),
        ("sep: -1.0\n", "sep"),
        ("leader_class_weights: yes\n", "leader_class_weights"),
    ],
)
def test_bad_values_are_rejected(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        make_config("base", path)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="preset"):
        make_config("huge")
    with pytest.raises(ConfigError, match="cannot read"):
        make_config("base", tmp_path / "missing.yaml")


def test_saved_config_round_trips(tmp_path):
    import yaml

    cfg = make_config("tiny", method="average")
    save_config(cfg, tmp_path / "config.yaml")
    loaded = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert TrainConfig(**loaded) == cfg


_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _follower_steps(cfg: TrainConfig) -> int:
    return cfg.steps_per_epoch * (cfg.warmup_epochs + cfg.inner_steps * cfg.rollout_epochs)


def test_shipped_2d_configs_build_the_documented_runs():
    """The YAML files the benchmark docs name give the schedules and leaders they describe."""
    from fuse4seg.models import FusionNet

    base = make_config("tiny", _CONFIGS / "brats_cpu_schedule.yaml")
    assert (base.warmup_epochs, base.rollout_epochs, base.steps_per_epoch) == (10, 30, 25)
    assert _follower_steps(base) == 2500

    long = make_config("tiny", _CONFIGS / "brats_cpu_schedule_x3.yaml")
    assert _follower_steps(long) == 7500

    free = make_config("tiny", _CONFIGS / "free_leader.yaml")
    assert (free.alpha, free.beta, free.gamma, free.info) == (0.0, 0.0, 0.0, 0.0)
    leader = FusionNet(2, free.fusion_preset, **free.fusion_overrides)
    assert leader.config.output_mode == "image" and leader.transfer is None
