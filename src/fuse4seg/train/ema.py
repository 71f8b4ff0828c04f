"""Exponential moving average of the fusion leader's weights (paper eq. 4).

``theta_hat <- m * theta_hat + (1 - m) * theta`` after every leader update. The EMA copy is
what validation and ``model.pt`` use (unless ``--no-ema``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA", "ema_decay"]


def ema_decay(momentum: float, num_updates: int, warmup: bool = False) -> float:
    """Decay used for the ``num_updates``-th update (1-based).

    Plain EMA uses ``momentum``; with ``warmup`` the decay is ``min(m, (1 + t) / (10 + t))``
    so that an EMA of a short run is not dominated by the random initialisation.
    """
    if not warmup:
        return float(momentum)
    return float(min(momentum, (1.0 + num_updates) / (10.0 + num_updates)))


class EMA:
    """EMA copy of ``model`` (a frozen ``nn.Module`` in eval mode).

    Floating-point parameters and buffers are averaged; integer buffers (counters) are copied.

    Args:
        model: the network whose weights are tracked (the leader).
        momentum: m in [0, 1).
        warmup: use :func:`ema_decay` warm-up.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.99, warmup: bool = False) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """One EMA step from ``model``'s current weights; returns the decay used."""
        self.num_updates += 1
        decay = ema_decay(self.momentum, self.num_updates, self.warmup)
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                target.mul_(decay).add_(value.detach().to(target.dtype), alpha=1.0 - decay)
            else:
                target.copy_(value)
        return decay

    def state_dict(self) -> dict:
        """Plain dict: ``{"module": state_dict, "num_updates": int, "momentum": float}``."""
        return {
            "module": self.module.state_dict(),
            "num_updates": self.num_updates,
            "momentum": self.momentum,
            "warmup": self.warmup,
        }

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
        self.momentum = float(state["momentum"])
        self.warmup = bool(state.get("warmup", self.warmup))
