"""Algorithm 1 of Fuse4Seg: cooperative (Stackelberg) training of fusion leader and follower.

Read top to bottom:

1. helpers: modality mean ``x_avg``, freezing a network, one optimiser step;
2. the losses: ``L_seg`` (Dice + CE) and ``L_upper = L_seg + alpha L_decomp + beta L_grad +
   gamma L_recon`` (+ ``info L_info``, ``sep L_sep``, ``contrast_floor L_floor``: optional
   anchors of ours);
3. the update steps: follower step, leader step (follower frozen), EMA;
4. Stage 1, one warm-up batch: leader frozen, follower trained on ``x_avg``;
5. Stage 2, one asymmetric rollout cycle on a batch ``B``: split ``B`` by patient into D_tr /
   D_val; K follower steps on D_tr with the leader frozen (fused images computed once under
   ``no_grad``: the frozen leader gives the same ``x_f`` at every inner step); one leader
   step on D_val with the follower frozen (``requires_grad=False`` and eval mode, so neither
   its weights nor its buffers change); EMA update of the leader.

The steps used by the baselines (fusion-only leader step for ``disjoint``, joint step for
``--no-bilevel``) sit at the end; :mod:`fuse4seg.train.methods` composes all of them.
Shapes: ``x (B, M, H, W)`` in [0, 1], ``y (B, H, W)`` int64 canonical labels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fuse4seg.train.distributed import all_finite, allreduce_gradients
from fuse4seg.train.ema import EMA
from fuse4seg.train.sampler import split_by_patient

__all__ = [
    "NonFiniteLossError",
    "LossWeights",
    "TrainState",
    "modality_mean",
    "frozen",
    "seg_loss",
    "upper_loss",
    "follower_step",
    "leader_step",
    "warmup_input",
    "warmup_batch",
    "bilevel_cycle",
    "fusion_only_step",
    "cddfuse_step",
    "joint_step",
]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or Inf; the step was not applied."""


# ---------------------------------------------------------------------------------------------
# 1. helpers
# ---------------------------------------------------------------------------------------------


def modality_mean(x: torch.Tensor) -> torch.Tensor:
    """The deterministic prior ``x_avg``: ``(B, M, H, W) -> (B, 1, H, W)``."""
    return x.mean(dim=1, keepdim=True)


@contextlib.contextmanager
def frozen(module: nn.Module | None) -> Iterator[None]:
    """Freeze ``module`` for the block: eval mode and ``requires_grad=False``; then restore.

    Gradients still flow *through* a frozen module to its inputs (the follower in the leader
    step), but none of its parameters or buffers change.
    """
    if module is None:
        yield
        return
    was_training = module.training
    flags = [p.requires_grad for p in module.parameters()]
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        module.train(was_training)


@dataclass
class LossWeights:
    """Weights of ``L_upper`` (paper sec. 4.1: alpha 1.0, beta 5.0, gamma 0.05)."""

    alpha: float = 1.0  # L_decomp
    beta: float = 5.0  # L_grad
    gamma: float = 0.05  # L_recon
    info: float = 0.0  # L_info: sources recovered from the fused value (not in the paper)
    info_weighting: str = "uniform"  # L_info per pixel: "uniform" or "rarity" (rarity_weights)
    sep: float = 0.0  # L_sep: label classes kept apart in x_f's intensities (not in the paper)
    grad_convention: str = "unit"  # L_grad's Sobel magnitude: "unit" or "cddfuse" (last: the
    # weights above are often given positionally)
    contrast_floor: float = 0.0  # L_floor: no tumour class less contrasted than in x_avg (ours)
    contrast_spread: str = "healthy"  # L_floor's units: "healthy" sd or "pooled" sd (d')


@dataclass
class TrainState:
    """Everything the update steps read and change (networks, optimisers, counters).

    ``leader`` is ``None`` for methods without a fusion network (average, multichannel).
    ``step`` counts optimiser steps (follower + leader) of the whole run.
    """

    follower: nn.Module
    opt_follower: torch.optim.Optimizer
    seg_criterion: nn.Module
    # L_seg inside L_upper when it differs from the follower's (e.g. other class weights)
    leader_seg_criterion: nn.Module | None = None
    leader: nn.Module | None = None
    opt_leader: torch.optim.Optimizer | None = None
    ema: EMA | None = None
    sched_follower: Any = None
    sched_leader: Any = None
    scaler_follower: Any = None
    scaler_leader: Any = None
    weights: LossWeights = field(default_factory=LossWeights)
    val_fraction: float = 0.5
    inner_steps: int = 5
    grad_clip: float = 0.0
    amp_dtype: torch.dtype | None = None
    step: int = 0
    follower_steps: int = 0
    leader_steps: int = 0
    leader_total_steps: int = 0  # leader steps the run will make (scheduler length)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.amp_dtype)


def _check_finite(loss: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteLossError` if ``loss`` is NaN/Inf (on any DDP rank)."""
    if not all_finite(loss):
        raise NonFiniteLossError(f"{what} loss is {loss.item()} (NaN/Inf)")


def _optimiser_step(
    loss: torch.Tensor,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    params: Sequence[torch.nn.Parameter],
    grad_clip: float,
) -> None:
    """backward -> (unscale, clip) -> step -> scheduler step; AMP scaler when given."""
    optimiser.zero_grad(set_to_none=True)
    use_scaler = scaler is not None and scaler.is_enabled()
    if use_scaler:
        scaler.scale(loss).backward()
        allreduce_gradients(params)
        if grad_clip > 0:
            scaler.unscale_(optimiser)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(optimiser)
        scaler.update()
    else:
        loss.backward()
        allreduce_gradients(params)
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimiser.step()
    if scheduler is not None:
        scheduler.step()


# ---------------------------------------------------------------------------------------------
# 2. losses
# ---------------------------------------------------------------------------------------------


def seg_loss(state: TrainState, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``L_seg = L_Dice + L_CE`` (= L_lower); logits ``(B, C, H, W)``, y ``(B, H, W)``."""
    return state.seg_criterion(logits, y)


def upper_loss(
    state: TrainState,
    fusion_out: Any,
    x: torch.Tensor,
    logits: torch.Tensor | None,
    y: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``L_upper = L_seg + alpha L_decomp + beta L_grad + gamma L_recon`` (``+ info L_info +
    sep L_sep + contrast_floor L_floor``, anchors of ours).

    Args:
        fusion_out: the leader's ``FusionOutput`` (``fused (B, 1, H, W)``, ``low``/``high``
            ``(B, M, C, h, w)``).
        x: sources ``(B, M, H, W)``.
        logits, y: follower output on ``fused`` and labels; ``None`` leaves ``L_seg`` out
            (the fusion-only objective of the ``disjoint`` baseline). ``L_sep`` and ``L_floor``
            need ``y``.

    Returns:
        ``(total, terms)``; terms are floats for logging. A term whose weight is 0 is not
        computed.
    """
    from fuse4seg.losses import (
        class_separation_loss,
        contrast_floor_loss,
        decomposition_loss,
        gradient_loss,
        information_loss,
        rarity_weights,
        reconstruction_loss,
    )

    w = state.weights
    fused = fusion_out.fused.float()
    total = fused.new_zeros(())
    terms: dict[str, float] = {}
    if logits is not None and y is not None:
        if state.leader_seg_criterion is not None:
            l_seg = state.leader_seg_criterion(logits, y)
        else:
            l_seg = seg_loss(state, logits, y)
        total = total + l_seg
        terms["seg"] = float(l_seg.detach())
    if w.alpha > 0:
        l_dec = decomposition_loss(fusion_out.low.float(), fusion_out.high.float())
        total = total + w.alpha * l_dec
        terms["decomp"] = float(l_dec.detach())
    if w.beta > 0:
        l_grad = gradient_loss(fused, x.float(), convention=w.grad_convention)
        total = total + w.beta * l_grad
        terms["grad"] = float(l_grad.detach())
    if w.gamma > 0:
        l_rec = reconstruction_loss(fused, x.float())
        total = total + w.gamma * l_rec
        terms["recon"] = float(l_rec.detach())
    if w.info > 0:
        # information anchor: a per-pixel decoder must recover every source from x_f
        pixel_w = rarity_weights(x) if w.info_weighting == "rarity" else None
        l_info = information_loss(state.leader.decode_sources(fused), x.float(), pixel_w)
        total = total + w.info * l_info
        terms["info"] = float(l_info.detach())
    brain = x.amax(dim=1) > 0 if y is not None and (w.sep > 0 or w.contrast_floor > 0) else None
    if w.sep > 0 and y is not None:
        # separation anchor: healthy brain, NCR, ED, ET apart in the fused intensities
        l_sep = class_separation_loss(fused, y, brain)
        total = total + w.sep * l_sep
        terms["sep"] = float(l_sep.detach())
    if w.contrast_floor > 0 and y is not None:
        # contrast floor: no tumour class stands out less from healthy brain than in x_avg
        x_avg = x.float().mean(dim=1, keepdim=True)  # (B, 1, H, W)
        l_floor = contrast_floor_loss(fused, x_avg, y, brain, spread=w.contrast_spread)
        total = total + w.contrast_floor * l_floor
        terms["floor"] = float(l_floor.detach())
    terms["upper"] = float(total.detach())
    return total, terms


# ---------------------------------------------------------------------------------------------
# 3. update steps
# ---------------------------------------------------------------------------------------------


def follower_step(state: TrainState, x_in: torch.Tensor, y: torch.Tensor) -> float:
    """One follower update ``theta_s <- theta_s - eta_s grad L_seg(Psi(x_in), y)``.

    ``x_in`` ``(B, C_in, H, W)`` is a detached input (fused image, ``x_avg`` or the raw
    modalities). Returns the loss value.
    """
    state.follower.train()
    with state.autocast(x_in.device):
        logits = state.follower(x_in)
    loss = seg_loss(state, logits.float(), y)
    _check_finite(loss, "follower (L_seg)")
    _optimiser_step(
        loss,
        state.opt_follower,
        state.sched_follower,
        state.scaler_follower,
        list(state.follower.parameters()),
        state.grad_clip,
    )
    state.step += 1
    state.follower_steps += 1
    return float(loss.detach())


def _leader_update(state: TrainState, total: torch.Tensor) -> None:
    """One optimiser step of the leader on ``total``, then the EMA update (Alg. 1, l. 20-21)."""
    _optimiser_step(
        total,
        state.opt_leader,
        state.sched_leader,
        state.scaler_leader,
        list(state.leader.parameters()),
        state.grad_clip,
    )
    state.step += 1
    state.leader_steps += 1
    if state.ema is not None:
        state.ema.update(state.leader)


def leader_step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """One leader update on ``(x, y)`` (D_val) with the follower frozen (eq. 3).

    The semantic gradient of ``L_seg(Psi(Phi(x; theta_f); theta_s*), y)`` flows through the
    frozen follower into the leader; the follower's parameters get no gradient and its
    buffers are not updated (eval mode). Then the EMA of the leader is updated (eq. 4).
    """
    if state.leader is None or state.opt_leader is None:
        raise RuntimeError("leader_step needs a leader network and its optimiser")
    state.leader.train()
    with frozen(state.follower):
        with state.autocast(x.device):
            out = state.leader(x)
            logits = state.follower(out.fused)
        total, terms = upper_loss(state, out, x, logits.float(), y)
        _check_finite(total, "leader (L_upper)")
        _leader_update(state, total)
    return terms


@torch.no_grad()
def frozen_fusion(
    leader: nn.Module, x: torch.Tensor, state: TrainState | None = None
) -> torch.Tensor:
    """Fused image of a frozen leader, no graph: ``(B, M, H, W) -> (B, 1, H, W)`` detached."""
    with frozen(leader):
        ctx = state.autocast(x.device) if state is not None else contextlib.nullcontext()
        with ctx:
            fused = leader(x).fused
    return fused.float().detach()


# ---------------------------------------------------------------------------------------------
# 4. Stage 1: follower warm-up (Algorithm 1, lines 1-5)
# ---------------------------------------------------------------------------------------------


def warmup_input(state: TrainState, x: torch.Tensor) -> torch.Tensor:
    """The prior ``x_avg`` ``(B, 1, H, W)``, put into [0, 1] the way the leader normalises its
    output (min-max or clipping), so that the follower's input does not change character at
    the stage switch: an untrained leader outputs this image."""
    x_avg = modality_mean(x)
    normalise = getattr(state.leader, "normalise", None)
    return x_avg if normalise is None else normalise(x_avg)


def warmup_batch(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Leader frozen (untouched); one follower step on the prior ``x_avg = mean_m x_m``."""
    return {"seg": follower_step(state, warmup_input(state, x), y)}


# ---------------------------------------------------------------------------------------------
# 5. Stage 2: asymmetric bi-level rollout (Algorithm 1, lines 7-21)
# ---------------------------------------------------------------------------------------------


def bilevel_cycle(
    state: TrainState, x: torch.Tensor, y: torch.Tensor, case_ids: Sequence[str]
) -> dict[str, float]:
    """One rollout cycle on a batch: K follower steps on D_tr, one leader step on D_val.

    Args:
        x: ``(B, M, H, W)``; y: ``(B, H, W)``; case_ids: patient of each batch element
            (at least two distinct patients, see :class:`PatientBatchSampler`).

    Returns:
        Loss terms of the cycle (last inner ``seg`` loss, leader ``upper`` terms).
    """
    if state.leader is None:
        raise RuntimeError("bilevel_cycle needs a leader network")
    # line 8: split B into D_tr / D_val at patient level
    tr_idx, val_idx = split_by_patient(list(case_ids), state.val_fraction)
    tr = torch.as_tensor(tr_idx, device=x.device)
    val = torch.as_tensor(val_idx, device=x.device)
    x_tr, y_tr, x_val, y_val = x[tr], y[tr], x[val], y[val]

    # lines 9-14: inner loop, leader frozen, no graph through it
    fused_tr = frozen_fusion(state.leader, x_tr, state)  # (B_tr, 1, H, W), constant over k
    inner = 0.0
    for _ in range(state.inner_steps):
        inner = follower_step(state, fused_tr, y_tr)

    # lines 15-21: outer loop, follower frozen, leader step on D_val, EMA
    terms = leader_step(state, x_val, y_val)
    return {"inner_seg": inner, **{f"leader_{k}": v for k, v in terms.items()}}


# ---------------------------------------------------------------------------------------------
# Steps of the baselines / ablations
# ---------------------------------------------------------------------------------------------


def fusion_only_step(state: TrainState, x: torch.Tensor) -> dict[str, float]:
    """``disjoint`` stage 1: leader step on ``alpha L_decomp + beta L_grad + gamma L_recon``."""
    if state.leader is None or state.opt_leader is None:
        raise RuntimeError("fusion_only_step needs a leader network")
    state.leader.train()
    with state.autocast(x.device):
        out = state.leader(x)
    total, terms = upper_loss(state, out, x, None, None)
    _check_finite(total, "leader (fusion losses)")
    _leader_update(state, total)
    return {f"leader_{k}": v for k, v in terms.items()}


def cddfuse_step(state: TrainState, x: torch.Tensor, phase: int) -> dict[str, float]:
    """``disjoint`` stage 1 with CDDFuse's objective (:mod:`fuse4seg.losses.cddfuse`).

    Phase 1: every source encoded and decoded alone must come back; phase 2: the fused
    image is pulled to the sources' pixel-wise maximum and maximum gradient. Both add
    ``2 L_decomp`` (dropped by ``--no-decomp``, i.e. ``alpha = 0``).
    """
    from fuse4seg.losses import decomposition_loss
    from fuse4seg.losses.cddfuse import (
        CDDFUSE_DECOMP_WEIGHT,
        cddfuse_fusion_loss,
        cddfuse_reconstruction_loss,
    )

    if state.leader is None or state.opt_leader is None:
        raise RuntimeError("cddfuse_step needs a leader network")
    if phase not in (1, 2):
        raise ValueError(f"CDDFuse phase must be 1 or 2, got {phase!r}")
    state.leader.train()
    with state.autocast(x.device):
        if phase == 1:
            recon, low, high = state.leader.reconstruct_sources(x)
            name, main = "recon", cddfuse_reconstruction_loss(recon.float(), x.float())
        else:
            out = state.leader(x)
            low, high = out.low, out.high
            name, main = "fusion", cddfuse_fusion_loss(out.fused.float(), x.float())
    total = main
    terms = {f"leader_cddfuse{phase}_{name}": float(main.detach())}
    if state.weights.alpha > 0:
        l_dec = decomposition_loss(low.float(), high.float())
        total = total + CDDFUSE_DECOMP_WEIGHT * l_dec
        terms["leader_decomp"] = float(l_dec.detach())
    _check_finite(total, f"leader (CDDFuse phase {phase})")
    _leader_update(state, total)
    return terms


def joint_step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """``--no-bilevel``: one combined loss on the whole batch, both networks step.

    ``L = L_seg(Psi(Phi(x))) + alpha L_decomp + beta L_grad + gamma L_recon``; one backward
    gives both gradients (no inner loop, no D_tr/D_val split); two optimiser steps.
    """
    if state.leader is None or state.opt_leader is None:
        raise RuntimeError("joint_step needs a leader network")
    state.leader.train()
    state.follower.train()
    with state.autocast(x.device):
        out = state.leader(x)
        logits = state.follower(out.fused)
    total, terms = upper_loss(state, out, x, logits.float(), y)
    _check_finite(total, "joint")
    state.opt_leader.zero_grad(set_to_none=True)
    state.opt_follower.zero_grad(set_to_none=True)
    scalers = [s for s in (state.scaler_leader, state.scaler_follower) if s is not None]
    use_scaler = bool(scalers) and scalers[0].is_enabled()
    if use_scaler:
        # one scaler drives both optimisers (torch.amp allows several per update)
        scaler = state.scaler_leader
        scaler.scale(total).backward()
        allreduce_gradients(list(state.leader.parameters()) + list(state.follower.parameters()))
        for opt, net in ((state.opt_leader, state.leader), (state.opt_follower, state.follower)):
            if state.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(list(net.parameters()), state.grad_clip)
            scaler.step(opt)
        scaler.update()
    else:
        total.backward()
        allreduce_gradients(list(state.leader.parameters()) + list(state.follower.parameters()))
        for opt, net in ((state.opt_leader, state.leader), (state.opt_follower, state.follower)):
            if state.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(list(net.parameters()), state.grad_clip)
            opt.step()
    for sched in (state.sched_leader, state.sched_follower):
        if sched is not None:
            sched.step()
    state.step += 2
    state.leader_steps += 1
    state.follower_steps += 1
    if state.ema is not None:
        state.ema.update(state.leader)
    return {f"joint_{k}": v for k, v in terms.items()}


def cosine_factor(step: int, total: int, min_ratio: float = 0.0) -> float:
    """Cosine annealing multiplier: 1 at step 0, ``min_ratio`` at ``total``."""
    if total <= 0:
        return 1.0
    t = min(max(step, 0), total) / total
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
