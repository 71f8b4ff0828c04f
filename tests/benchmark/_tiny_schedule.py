"""The tiny benchmark schedule shared by the `benchmark seg` tests (not a test module)."""

from __future__ import annotations

#: command-line flags: tiny preset, 1 + 1 epochs of 1 batch of 4 slices, K = 2, CPU
TINY = [
    "--preset", "tiny", "--warmup-epochs", "1", "--rollout-epochs", "1",
    "--steps-per-epoch", "1", "--inner-steps", "2", "--batch-size", "4", "--device", "cpu",
]  # fmt: skip
#: the same schedule as ``run_seg_benchmark`` overrides
TINY_OVERRIDES = {
    "warmup_epochs": 1,
    "rollout_epochs": 1,
    "steps_per_epoch": 1,
    "inner_steps": 2,
    "batch_size": 4,
}
