"""rmr3d in the method registry: registered from the plugin list, its own configuration."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fuse4seg.errors import ConfigError
from fuse4seg.plugins import PLUGINS
from fuse4seg.rmr.runner import configure_rmr


def test_rmr3d_is_registered_from_the_plugin_list():
    # a fresh interpreter: only the registry imported; reading METHODS loads the plugins
    code = (
        "import json, sys\n"
        "from fuse4seg.train.methods import METHODS\n"
        "before = 'fuse4seg.rmr' in sys.modules\n"
        "spec = METHODS['rmr3d']\n"
        "print(json.dumps({'before': before, 'runner': spec.runner,"
        " 'configure': spec.configure, 'cli': 'fuse4seg.cli.train' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert "fuse4seg.rmr" in PLUGINS
    assert info == {
        "before": False,
        "runner": "fuse4seg.rmr.runner:run_rmr_training",
        "configure": "fuse4seg.rmr.runner:configure_rmr",
        "cli": False,
    }


def test_registration_is_idempotent_and_the_hooks_load():
    from fuse4seg.rmr.runner import register_rmr, run_rmr_training
    from fuse4seg.train.methods import METHODS, get_method

    spec = get_method("rmr3d")
    register_rmr()
    assert METHODS["rmr3d"] is spec
    assert spec.load_runner() is run_rmr_training and spec.load_configure() is configure_rmr
    assert get_method("average").load_configure() is None


def _options(**over):
    base = {"config": None, "preset": "base", "max_steps": None, "fold": None}
    base.update({k: False for k in ("no_bilevel", "no_decomp", "no_grad", "no_ema")})
    return {**base, **over}


def test_configure_maps_the_train_options(tmp_path):
    from fuse4seg.rmr.train import RMRTrainConfig

    cfg, run = configure_rmr(_options(preset="tiny", max_steps=3))
    assert (
        isinstance(cfg, RMRTrainConfig)
        and cfg.preset == "tiny"
        and run == {"max_steps": 3, "fold": None}
    )
    yaml = tmp_path / "rmr.yaml"
    yaml.write_text("preset: tiny\nalpha: 2.0\n")
    # the default --preset (base) keeps the YAML's preset; another one overrides it
    assert configure_rmr(_options(config=str(yaml)))[0].preset == "tiny"
    assert configure_rmr(_options(config=str(yaml), preset="paper"))[0].preset == "paper"
    assert configure_rmr(_options(fold=2))[1]["fold"] == 2  # the store's CV fold, see train_rmr


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"no_ema": True}, "--no-ema cannot be used with method 'rmr3d'"),
        ({"no_grad": True, "no_bilevel": True}, "--no-bilevel, --no-grad cannot be used"),
    ],
)
def test_configure_rejects_options_of_the_2d_methods(over, message):
    with pytest.raises(ConfigError, match=message):
        configure_rmr(_options(**over))


def test_the_shipped_brats_cpu_config_loads():
    from pathlib import Path

    from fuse4seg.rmr.train import load_train_config

    path = Path(__file__).resolve().parents[2] / "configs" / "rmr_brats_cpu.yaml"
    cfg = load_train_config(path)
    assert cfg.preset == "tiny" and tuple(cfg.modalities) == ("t1ce", "flair")
    assert tuple(cfg.patch_size) == (16, 32, 32)
    assert (cfg.stage1_steps, cfg.stage2_steps) == (1500, 2500)
