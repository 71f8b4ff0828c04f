"""Trainer methods ``rule-<name>``: the segmentation follower trained on a classical fusion
rule's fused image (the disjoint fuse-then-segment pipelines of the benchmark's Table 1).

One method per rule of :data:`fuse4seg.fusion_rules.FUSION_RULES` except the plain mean
(``average``), which is the trainer's own ``average`` method: ``rule-max``,
``rule-laplacian``, ``rule-dwt``, ``rule-pca``. No leader; per batch, the rule fuses the M
modalities (no gradient) and the follower makes one step in the warm-up and K
(``inner_steps``) steps in the rollout, so these methods make the same number of follower
steps as every other method. ``model.pt`` stores the rule as ``fusion_rule``, so
``fuse4seg predict`` applies the same rule before the follower.

This module is a plugin (:mod:`fuse4seg.plugins`): it registers the methods when imported,
and :data:`fuse4seg.train.methods.METHODS` imports it the first time it is read, so every
``fuse4seg train`` knows these methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fuse4seg.fusion_rules import FUSION_RULES, get_fusion_rule
from fuse4seg.train import bilevel
from fuse4seg.train.methods import METHODS, MethodSpec, register_method

__all__ = ["RULE_METHOD_PREFIX", "RULE_METHOD_RULES", "rule_method_fns", "register_rule_methods"]

RULE_METHOD_PREFIX = "rule-"

#: the classical rules with a ``rule-<name>`` method (all but the mean, which is ``average``)
RULE_METHOD_RULES: tuple[str, ...] = tuple(r for r in FUSION_RULES if r != "average")


def rule_method_fns(
    rule: str,
) -> tuple[Callable[..., dict], Callable[..., dict], Callable[[object, str], tuple[int, int]]]:
    """``(warmup, rollout, steps_per_batch)`` of the method ``rule-<rule>`` (see
    :class:`fuse4seg.train.methods.MethodSpec`); ConfigError for an unknown rule."""
    fuse = get_fusion_rule(rule)

    def warmup(state, x, y, case_ids, cfg) -> dict:
        with torch.no_grad():
            x_in = fuse(x)
        return {"seg": bilevel.follower_step(state, x_in, y)}

    def rollout(state, x, y, case_ids, cfg) -> dict:
        with torch.no_grad():
            x_in = fuse(x)  # the rule is deterministic: fused once for the K steps
        loss = 0.0
        for _ in range(cfg.inner_steps):
            loss = bilevel.follower_step(state, x_in, y)
        return {"seg": loss}

    def steps(cfg, stage: str) -> tuple[int, int]:
        return (0, 1) if stage == "warmup" else (0, cfg.inner_steps)

    return warmup, rollout, steps


def register_rule_methods(rules: Sequence[str] = RULE_METHOD_RULES) -> list[str]:
    """Register trainer methods ``rule-<name>``: the follower trained on a classical rule's
    fused image at every step (warm-up: 1 step per batch, rollout: K steps), the rule stored
    in ``model.pt`` as ``fusion_rule``. Idempotent; returns the method names."""
    names = []
    for rule in rules:
        name = f"{RULE_METHOD_PREFIX}{rule}"
        names.append(name)
        if name in METHODS:
            continue
        warmup, rollout, steps = rule_method_fns(rule)
        register_method(
            MethodSpec(
                name,
                f"follower on the classical {rule} fusion rule's image (disjoint pipeline)",
                has_leader=False,
                seg_input="mean",  # one input channel, like the mean
                fusion_rule=rule,
                warmup=warmup,
                rollout=rollout,
                steps_per_batch=steps,
            )
        )
    return names


register_rule_methods()  # plugin registration (fuse4seg.plugins)
