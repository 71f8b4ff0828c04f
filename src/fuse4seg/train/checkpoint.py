"""Training checkpoints (``last.pt`` / ``best.pt``): written atomically, read weights-only.

A checkpoint is a plain dict of tensors, dicts, lists, str, int and float so that
``torch.load(path, weights_only=True)`` reads it. It holds the networks, the EMA, the
optimisers, the LR schedulers, the AMP scalers, the RNG states (python, numpy, torch, cuda),
the epoch, the global step and the sampler position, so ``--resume`` continues exactly.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fuse4seg.io.atomic import load_tagged_torch, save_torch_atomic

__all__ = [
    "CHECKPOINT_FORMAT",
    "capture_rng_state",
    "restore_rng_state",
    "save_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "fuse4seg-checkpoint"


def capture_rng_state() -> dict[str, Any]:
    """RNG states as tensors / plain lists (weights_only-safe)."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (
            nps["name"],
            nps["keys"].numpy().astype(np.uint32),
            nps["pos"],
            nps["has_gauss"],
            nps["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (plus the format tag) atomically to ``path``."""
    save_torch_atomic({"format": CHECKPOINT_FORMAT, **state}, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        ModelFileError: missing, truncated or not a fuse4seg checkpoint.
    """
    return load_tagged_torch(
        path,
        CHECKPOINT_FORMAT,
        missing="checkpoint not found",
        unreadable="not a readable checkpoint",
        foreign="not a fuse4seg training checkpoint",
        map_location=map_location,
    )
