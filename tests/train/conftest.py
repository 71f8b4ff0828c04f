"""Fixtures of the training tests: a tiny prepared phantom store and tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """6 phantom cases 40x40x16 prepared at 32x32 (train 4 / val 1 / test 1)."""
    from fuse4seg.data.phantom import write_phantom_dataset
    from fuse4seg.data.prepare import PrepareOptions, prepare_dataset

    root = tmp_path_factory.mktemp("train_store")
    write_phantom_dataset(root / "phantom", cases=6, shape=(40, 40, 16), seed=0)
    options = PrepareOptions(modalities=("t1ce", "flair"), size=32, split=(0.6, 0.2, 0.2))
    result = prepare_dataset(root / "phantom", root / "prep", options, log=None)
    assert result.ok
    return root / "prep"


@pytest.fixture
def tiny_cfg():
    """Factory of tiny configs (see :func:`tiny_config`)."""
    return tiny_config


def tiny_config(**overrides):
    """A tiny, fast config: 1 warm-up + 1 rollout epoch of 2 batches of 4 slices, K = 2."""
    from fuse4seg.train.config import make_config

    values = dict(
        warmup_epochs=1,
        rollout_epochs=1,
        steps_per_epoch=2,
        batch_size=4,
        inner_steps=2,
        val_max_cases=1,
        leader_pretrain=False,  # Algorithm 1 as in the paper: leader frozen in stage 1
    )
    values.update(overrides)
    return make_config("tiny", **values)
