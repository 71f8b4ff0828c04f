"""Command-line helpers shared by the `fuse4seg train` CLI tests (not a test module)."""

from __future__ import annotations

#: a tiny training schedule as a YAML config file's text
SMALL = (
    "warmup_epochs: 1\nrollout_epochs: 1\nsteps_per_epoch: 2\nbatch_size: 4\n"
    "inner_steps: 2\nval_max_cases: 1\n"
)


def train_args(store, run, cfg, *extra):
    """`fuse4seg train` arguments for the tiny preset on CPU, one thread, no progress bar."""
    return [
        "train", "-d", str(store), "-o", str(run), "--preset", "tiny", "--config", str(cfg),
        "--device", "cpu", "--threads", "1", "--no-progress", *extra,
    ]  # fmt: skip
