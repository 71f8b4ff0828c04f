"""Cooperative training of the first-version Fuse4Seg (paper 001, "Training Strategy").

Fusion is the upper-level problem (leader), segmentation the lower-level problem
(follower). With the first-order (Gauss-Newton) approximation of eqs. 3-7 the objective

    min_{w_s, w_f}  L^s(Psi(theta*; w_s)) + lambda L^f(Phi(x, y; w_f)),  theta* = Phi(x, y; w_f)

gives the gradients of eq. 7: ``w_s`` receives ``dL^s/dw_s`` only; ``w_f`` receives
``dL^s/dw_f`` (through the fused image) plus ``lambda dL^f/dw_f``. Per batch
(:func:`cooperative_batch`):

1. discriminator step: ``D_m`` judges the source ``M_m`` (real) against the fused image
   (fake), LSGAN (or the paper's log-GAN, ``gan_loss: log``), Adam;
2. lower level: ``follower_steps`` SGD steps of the segmentation network on the fused image
   computed with the current fusion network (detached), ``L^s = alpha CE + beta Dice``
   (eq. 14);
3. upper level: one Adam step of the fusion network on ``L^s(Psi(F)) + lambda L^f(F)``
   with the segmentation network and the discriminators frozen (gradients flow through
   them to ``F`` but their weights do not change); ``L^f`` is eq. 13: the Sobel gradient
   term ``mean | |grad F| - max(|grad M1|, |grad M2|) |`` (``grad_convention``) plus
   ``adv_weight_fusion`` x the generator loss of ``F`` against each modality's
   discriminator.

Paper optimisers: Adam 1e-4 halved every 20 epochs (fusion, discriminators), SGD lr 0.01,
momentum 0.9, weight decay 1e-4 (segmentation). Shapes: ``x (B, 2, H, W)`` in [0, 1],
``y (B, H, W)`` int64 canonical labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fuse4seg.losses import DiceCELoss

from .config import V1Config
from .losses import fusion_text_loss
from .networks import FusionNetV1, FusionV1Output
from .pretrain import discriminator_loss, frozen_params

__all__ = [
    "CooperativeState",
    "make_seg_sgd",
    "coop_discriminator_step",
    "lower_level_step",
    "upper_level_step",
    "cooperative_batch",
    "seg_input",
    "V1_METHOD_NAME",
    "register_v1_method",
]

V1_METHOD_NAME = "fuse4seg-v1"


@dataclass
class CooperativeState:
    """Networks, optimisers and the segmentation loss of the cooperative stage."""

    fusion: FusionNetV1
    seg: nn.Module
    discriminators: nn.ModuleList
    opt_f: torch.optim.Optimizer
    opt_s: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    seg_loss: nn.Module


def make_seg_sgd(seg: nn.Module, cfg: V1Config) -> torch.optim.SGD:
    """Paper: SGD lr 0.01, momentum 0.9, weight decay 1e-4 (values from ``cfg``)."""
    return torch.optim.SGD(
        seg.parameters(),
        lr=cfg.seg_lr,
        momentum=cfg.seg_momentum,
        weight_decay=cfg.seg_weight_decay,
    )


def make_seg_loss(cfg: V1Config) -> DiceCELoss:
    """Eq. 14: ``alpha CE + beta Dice`` (``ce_weight``, ``dice_weight``)."""
    return DiceCELoss(cfg.num_classes, dice_weight=cfg.dice_weight, ce_weight=cfg.ce_weight)


def seg_input(out: FusionV1Output) -> torch.Tensor:
    """What the segmentation network reads: the fused image ``(B, 1, H, W)``, or the fused
    embedding ``(B, 2C, H, W)`` of a network without the reconstruction decoder."""
    return out.fused if out.seg_input is None else out.seg_input


def _check_finite(loss: torch.Tensor, what: str) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite {what} loss {float(loss)}")


def coop_discriminator_step(
    state: CooperativeState, x: torch.Tensor, gan_loss: str = "lsgan"
) -> float:
    """``D_m``: source ``M_m`` real vs. fused image fake; only discriminators change."""
    with torch.no_grad():
        fused = state.fusion(x).fused  # (B, 1, H, W)
    m = x.shape[1]
    loss = discriminator_loss(
        state.discriminators, [x[:, i : i + 1] for i in range(m)], [fused] * m, gan_loss
    )
    state.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    state.opt_d.step()
    return float(loss.detach())


def lower_level_step(state: CooperativeState, fused: torch.Tensor, y: torch.Tensor) -> float:
    """One segmentation (follower) SGD step on a detached fused image (B, 1, H, W) (or
    fused embedding, see :func:`seg_input`)."""
    state.seg.train()
    loss = state.seg_loss(state.seg(fused.detach()), y)
    _check_finite(loss, "segmentation")
    state.opt_s.zero_grad(set_to_none=True)
    loss.backward()
    state.opt_s.step()
    return float(loss.detach())


def upper_level_step(
    state: CooperativeState, x: torch.Tensor, y: torch.Tensor, cfg: V1Config
) -> dict[str, float]:
    """One fusion (leader) Adam step on ``L^s(Psi(F)) + lambda L^f(F)`` (eqs. 6, 7, 13);
    the segmentation network (eval mode) and discriminators are frozen."""
    was_training = state.seg.training
    state.seg.eval()
    try:
        with frozen_params(state.seg), frozen_params(state.discriminators):
            out = state.fusion(x)
            fused = out.fused
            seg_term = state.seg_loss(state.seg(seg_input(out)), y)
            text, grad, adv = fusion_text_loss(
                fused, x, state.discriminators, cfg.adv_weight_fusion, cfg.grad_convention,
                cfg.gan_loss,
            )  # fmt: skip
            loss = seg_term + cfg.fusion_weight * text
            _check_finite(loss, "fusion")
            state.opt_f.zero_grad(set_to_none=True)
            loss.backward()
            state.opt_f.step()
    finally:
        state.seg.train(was_training)
    return {
        "upper": float(loss.detach()),
        "upper_seg": float(seg_term.detach()),
        "grad": float(grad.detach()),
        "adv_f": float(adv.detach()),
    }


def cooperative_batch(
    state: CooperativeState, x: torch.Tensor, y: torch.Tensor, cfg: V1Config
) -> dict[str, float]:
    """Discriminator step, ``follower_steps`` lower-level steps, one upper-level step."""
    terms = {"adv_d": coop_discriminator_step(state, x, cfg.gan_loss)}
    with torch.no_grad():
        fused = seg_input(state.fusion(x))
    for _ in range(cfg.follower_steps):
        terms["seg"] = lower_level_step(state, fused, y)
    terms.update(upper_level_step(state, x, y, cfg))
    return terms


def register_v1_method() -> None:
    """Register ``fuse4seg-v1`` in the trainer's method registry (idempotent).

    The method has its own runner (:func:`fuse4seg.v1.runner.run_v1_training`): pre-training
    then cooperative training, writing the standard ``model.pt``.
    """
    from fuse4seg.train.methods import METHODS, MethodSpec, register_method

    if V1_METHOD_NAME in METHODS:
        return
    register_method(
        MethodSpec(
            V1_METHOD_NAME,
            "Fuse4Seg first version: discriminator pre-training, cross-attention fusion, "
            "cooperative training",
            has_leader=True,
            seg_input="fused",
            fusion_rule=None,
            warmup=None,
            rollout=None,
            steps_per_batch=None,
            runner="fuse4seg.v1.runner:run_v1_training",
        )
    )
