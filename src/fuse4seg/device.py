"""Device selection and mixed precision."""

from __future__ import annotations

import torch

from fuse4seg.errors import ConfigError

__all__ = ["resolve_device", "autocast_dtype"]


def resolve_device(name: str = "auto") -> torch.device:
    """Return the torch device for ``name``.

    ``auto`` picks CUDA, then Apple MPS, then CPU. ``cpu``, ``cuda``, ``cuda:N`` and ``mps``
    are accepted as given; asking for an unavailable device raises :class:`ConfigError`.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available")
    return device


def autocast_dtype(device: torch.device, amp: bool | str = True) -> torch.dtype | None:
    """Mixed-precision dtype for ``device``: bf16 on CUDA if supported, else fp16; None on CPU.

    ``amp`` may be False (off), True (auto), ``"bf16"`` or ``"fp16"``.
    """
    if not amp or device.type != "cuda":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16
