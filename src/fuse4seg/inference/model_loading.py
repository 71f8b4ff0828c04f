"""Loading a trained ``model.pt`` for inference (thin wrapper over the trainer's loader)."""

from __future__ import annotations

from pathlib import Path

import torch

from fuse4seg.errors import ModelFileError

__all__ = ["load_model"]


def load_model(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Load a fuse4seg model file onto ``device`` in eval mode.

    Raises:
        ModelFileError: missing, truncated or foreign file (from the trainer's loader).
    """
    from fuse4seg.train.model_file import load_model_file

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "model file not found")
    model = load_model_file(path, map_location="cpu")
    return model.to(torch.device(device)).eval()
