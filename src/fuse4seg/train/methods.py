"""Registry of training methods: Fuse4Seg (bi-level), its ablations and the baselines.

Every 2D method shares the data, the follower (SegNet) architecture, the schedule and the
evaluation; they differ only in what one batch of each stage does:

==============  ===================================  ==========================================
method          stage 1 (warm-up), per batch          stage 2 (rollout), per batch
==============  ===================================  ==========================================
fuse4seg        follower step on x_avg (and, with     bi-level cycle: K follower steps on D_tr,
                ``leader_pretrain``, a fusion-only    1 leader step on D_val, EMA
                leader step)
  --no-bilevel  follower step on x_avg               K joint steps (leader + follower, one loss,
                                                     whole batch)
disjoint        leader step on CDDFuse's objective   K follower steps on the frozen leader's
                (phase I autoencoder, then fusion;   output (whole batch)
                ``disjoint_objective``) + follower
                step on x_avg
average         follower step on x_avg               K follower steps on x_avg (whole batch)
multichannel    follower step on the M modalities    K follower steps on the M modalities
rule-<name>     follower step on a classical rule's  K follower steps on the rule's image
                fused image (max, laplacian, dwt,    (:mod:`fuse4seg.train.rule_methods`)
                pca)
==============  ===================================  ==========================================

So every method makes the same number of follower optimiser steps (``warm-up batches + K x
rollout batches``). ``--no-decomp`` / ``--no-grad`` zero alpha / beta; ``--no-ema`` validates
and exports the raw leader.

This module is only the registry (plus the four methods above, which are the shared
trainer's own). Other methods register a :class:`MethodSpec` from their own packages with
:func:`register_method` when those are imported: ``rule-<name>``
(:mod:`fuse4seg.train.rule_methods`), ``fuse4seg-v1`` (:mod:`fuse4seg.v1`, with its own
``runner``, ``"module:function"`` called as ``runner(config, prep_dir, run_dir, **options)``)
and ``rmr3d`` (:mod:`fuse4seg.rmr`, with its own runner and its own configuration,
``configure``).
:data:`METHODS` imports the plugin packages of :mod:`fuse4seg.plugins` the first time it is
read, so importing this module is enough to see every method.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fuse4seg.errors import ConfigError
from fuse4seg.losses.cddfuse import CDDFUSE_PHASE1_FRACTION
from fuse4seg.plugins import load_plugins
from fuse4seg.train import bilevel
from fuse4seg.train.bilevel import TrainState

__all__ = [
    "MethodSpec",
    "METHODS",
    "ABLATION_FLAGS",
    "register_method",
    "get_method",
    "check_method_options",
]

BatchFn = Callable[[TrainState, torch.Tensor, torch.Tensor, Sequence[str], Any], dict]

#: ablation flag (config field) -> CLI flag
ABLATION_FLAGS: dict[str, str] = {
    "bilevel": "--no-bilevel",
    "use_decomp": "--no-decomp",
    "use_grad": "--no-grad",
    "use_ema": "--no-ema",
}


@dataclass(frozen=True)
class MethodSpec:
    """How one method trains.

    Attributes:
        name: the ``--method`` value.
        description: one line for ``--help`` and reports.
        has_leader: trains a FusionNet leader (else ``None``).
        seg_input: follower input: ``"fused"`` (leader output), ``"mean"`` (x_avg) or
            ``"channels"`` (the M modalities).
        fusion_rule: classical rule stored in ``model.pt`` when there is no leader.
        warmup, rollout: per-batch functions ``(state, x, y, case_ids, cfg) -> loss terms``.
        steps_per_batch: ``(cfg, stage) -> (leader_steps, follower_steps)`` per batch, for
            the LR schedules (stage is ``"warmup"`` or ``"rollout"``).
        ablations: config flags (see :data:`ABLATION_FLAGS`) this method accepts.
        runner: ``"module:function"`` that runs a whole training, called as
            ``runner(config, prep_dir, run_dir, device=..., resume=..., progress=...,
            **options)`` and returning a :class:`~fuse4seg.train.trainer.TrainResult`.
        configure: ``"module:function"`` for a method with a configuration of its own (not a
            :class:`~fuse4seg.train.config.TrainConfig`), called as ``configure(options)``
            with the ``fuse4seg train`` options (a dict: ``preset``, ``config`` (YAML path or
            None), ``max_steps``, ``fold``, ``seed``, the ablation flags ``no_bilevel`` ...);
            returns ``(config, runner options)`` and raises ConfigError for options the method
            does not take. None: the shared TrainConfig (``make_config``).
    """

    name: str
    description: str
    has_leader: bool
    seg_input: str
    fusion_rule: str | None
    warmup: BatchFn | None
    rollout: BatchFn | None
    steps_per_batch: Callable[[Any, str], tuple[int, int]] | None
    ablations: frozenset[str] = field(default_factory=frozenset)
    runner: str = "fuse4seg.train.trainer:run_training"
    configure: str | None = None

    def load_runner(self) -> Callable[..., Any]:
        return _load_function(self.runner)

    def load_configure(self) -> Callable[..., Any] | None:
        return None if self.configure is None else _load_function(self.configure)


def _load_function(target: str) -> Callable[..., Any]:
    """The function of a ``"module:function"`` string."""
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


# --- per-batch functions ------------------------------------------------------------------


def _fuse4seg_warmup(state, x, y, case_ids, cfg) -> dict:
    terms = {}
    if getattr(cfg, "leader_pretrain", False) and state.leader is not None:
        terms = bilevel.fusion_only_step(state, x)  # leader starts the rollout as a fuser
    terms.update(bilevel.warmup_batch(state, x, y))
    return terms


def _average_warmup(state, x, y, case_ids, cfg) -> dict:
    return bilevel.warmup_batch(state, x, y)


def _fuse4seg_rollout(state, x, y, case_ids, cfg) -> dict:
    if cfg.bilevel:
        return bilevel.bilevel_cycle(state, x, y, case_ids)
    terms: dict = {}
    for _ in range(cfg.inner_steps):
        terms = bilevel.joint_step(state, x, y)
    return terms


def _fuse4seg_steps(cfg, stage: str) -> tuple[int, int]:
    if stage == "warmup":
        return (1 if cfg.leader_pretrain else 0), 1
    return (1, cfg.inner_steps) if cfg.bilevel else (cfg.inner_steps, cfg.inner_steps)


def _disjoint_warmup(state, x, y, case_ids, cfg) -> dict:
    if cfg.disjoint_objective == "cddfuse":
        phase1 = state.leader_steps < CDDFUSE_PHASE1_FRACTION * state.leader_total_steps
        terms = bilevel.cddfuse_step(state, x, 1 if phase1 else 2)
    else:  # "regularisers": alpha L_decomp + beta L_grad + gamma L_recon (+ info L_info)
        terms = bilevel.fusion_only_step(state, x)
    terms.update(bilevel.warmup_batch(state, x, y))
    return terms


def _disjoint_rollout(state, x, y, case_ids, cfg) -> dict:
    fused = bilevel.frozen_fusion(state.leader, x, state)  # leader frozen for good
    loss = 0.0
    for _ in range(cfg.inner_steps):
        loss = bilevel.follower_step(state, fused, y)
    return {"seg": loss}


def _disjoint_steps(cfg, stage: str) -> tuple[int, int]:
    return (1, 1) if stage == "warmup" else (0, cfg.inner_steps)


def _single_input_rollout(make_input: Callable[[torch.Tensor], torch.Tensor]) -> BatchFn:
    def rollout(state, x, y, case_ids, cfg) -> dict:
        x_in = make_input(x)
        loss = 0.0
        for _ in range(cfg.inner_steps):
            loss = bilevel.follower_step(state, x_in, y)
        return {"seg": loss}

    return rollout


def _multichannel_warmup(state, x, y, case_ids, cfg) -> dict:
    return {"seg": bilevel.follower_step(state, x, y)}


def _follower_only_steps(cfg, stage: str) -> tuple[int, int]:
    return (0, 1) if stage == "warmup" else (0, cfg.inner_steps)


class MethodRegistry(Mapping[str, MethodSpec]):
    """Read-only ``name -> MethodSpec`` mapping that imports the plugin packages
    (:func:`fuse4seg.plugins.load_plugins`) before it is first read; written only by
    :func:`register_method`."""

    def __init__(self) -> None:
        self._specs: dict[str, MethodSpec] = {}

    def __getitem__(self, name: str) -> MethodSpec:
        load_plugins()
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(self._specs)

    def __len__(self) -> int:
        load_plugins()
        return len(self._specs)


#: every training method, by ``--method`` name
METHODS = MethodRegistry()


def register_method(spec: MethodSpec, overwrite: bool = False) -> MethodSpec:
    """Add ``spec`` to :data:`METHODS` (``overwrite`` to replace an existing name)."""
    if spec.name in METHODS._specs and not overwrite:
        raise ValueError(f"method {spec.name!r} is already registered")
    if spec.seg_input not in ("fused", "mean", "channels"):
        raise ValueError(f"seg_input must be fused, mean or channels, got {spec.seg_input!r}")
    METHODS._specs[spec.name] = spec
    return spec


register_method(
    MethodSpec(
        "fuse4seg",
        "Fuse4Seg: bi-level leader/follower training (Algorithm 1)",
        has_leader=True,
        seg_input="fused",
        fusion_rule=None,
        warmup=_fuse4seg_warmup,
        rollout=_fuse4seg_rollout,
        steps_per_batch=_fuse4seg_steps,
        ablations=frozenset(ABLATION_FLAGS),
    )
)
register_method(
    MethodSpec(
        "disjoint",
        "fusion network trained on CDDFuse's objective, frozen, then the follower on its output",
        has_leader=True,
        seg_input="fused",
        fusion_rule=None,
        warmup=_disjoint_warmup,
        rollout=_disjoint_rollout,
        steps_per_batch=_disjoint_steps,
        ablations=frozenset({"use_decomp", "use_grad", "use_ema"}),
    )
)
register_method(
    MethodSpec(
        "average",
        "follower on the modality mean x_avg (no fusion network)",
        has_leader=False,
        seg_input="mean",
        fusion_rule="average",
        warmup=_average_warmup,
        rollout=_single_input_rollout(bilevel.modality_mean),
        steps_per_batch=_follower_only_steps,
    )
)
register_method(
    MethodSpec(
        "multichannel",
        "follower with the M modalities as input channels (no fusion)",
        has_leader=False,
        seg_input="channels",
        fusion_rule=None,
        warmup=_multichannel_warmup,
        rollout=_single_input_rollout(lambda x: x),
        steps_per_batch=_follower_only_steps,
    )
)


def get_method(name: str) -> MethodSpec:
    """The registered method ``name`` (ConfigError listing the valid ones otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(
            f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}"
        ) from None


def check_method_options(cfg: Any) -> MethodSpec:
    """Reject ablation flags the method does not have (e.g. ``--no-ema`` with ``average``)."""
    spec = get_method(cfg.method)
    for flag, cli in ABLATION_FLAGS.items():
        if not getattr(cfg, flag) and flag not in spec.ablations:
            raise ConfigError(f"{cli} does not apply to method {cfg.method!r}")
    return spec
