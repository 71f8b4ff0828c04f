"""Pre-training stage of the first-version Fuse4Seg (paper 001, eqs. 9-12).

The dual-stream decomposition encoder and the decoder of :class:`FusionNetV1` learn to
reconstruct each modality; one discriminator per modality judges real ``M_m`` against
its reconstruction ``D(M_m)``. Per batch the two players alternate (LSGAN, or the paper's
log-GAN with ``gan_loss: log``, see :mod:`fuse4seg.v1.discriminator`):

1. :func:`discriminator_step` — reconstructions computed under ``no_grad``; only the
   discriminators' parameters change (Adam).
2. :func:`generator_step` — eq. 9 ``L_Enc = lambda L_adv + sigma L_corr + (1 - sigma)
   L_content``; the discriminators are frozen (``requires_grad=False``), only the encoder
   and decoder change (Adam). The fusion layers (cross-attention etc.) are not used here.

Paper schedule (``paper`` preset of :class:`~fuse4seg.v1.config.V1Config`): 80 epochs,
Adam lr 1e-4 halved every 20 epochs for both players, 224x224 random crops, batch 16.
Shapes: ``x (B, M, H, W)`` in [0, 1].
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .config import V1Config
from .discriminator import gan_d_loss
from .losses import pretrain_encoder_loss
from .networks import FusionNetV1

__all__ = [
    "frozen_params",
    "pretrain_parameters",
    "make_adam",
    "random_crop",
    "discriminator_loss",
    "discriminator_step",
    "generator_step",
    "pretrain_batch",
]


@contextlib.contextmanager
def frozen_params(module: nn.Module) -> Iterator[None]:
    """``requires_grad=False`` on ``module``'s parameters for the block (gradients still flow
    through it to its inputs), then restored."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(f)


def pretrain_parameters(net: FusionNetV1) -> list[nn.Parameter]:
    """Parameters trained in pre-training: the encoder and the decoder."""
    return [*net.encoder.parameters(), *net.decoder.parameters()]


def make_adam(
    params: Sequence[nn.Parameter], cfg: V1Config, lr: float
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.StepLR]:
    """Adam(lr) with ``StepLR(step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)``, stepped
    once per epoch (paper: lr 1e-4 halved every 20 epochs)."""
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
    return opt, sched


def random_crop(
    x: torch.Tensor,
    size: int,
    y: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One random ``size x size`` crop per sample (the whole slice if it is smaller).

    Args:
        x: ``(B, M, H, W)``; y: optional labels ``(B, H, W)`` cropped identically.

    Returns:
        ``(x_crop (B, M, s, s), y_crop (B, s, s) | None)``, ``s = min(size, H, W)``.
    """
    h, w = x.shape[-2:]
    s_h, s_w = min(size, h), min(size, w)
    if (s_h, s_w) == (h, w):
        return x, y
    tops = torch.randint(0, h - s_h + 1, (x.shape[0],), generator=generator).tolist()
    lefts = torch.randint(0, w - s_w + 1, (x.shape[0],), generator=generator).tolist()
    xs = [
        x[i, :, t : t + s_h, l : l + s_w] for i, (t, l) in enumerate(zip(tops, lefts, strict=True))
    ]
    ys = None
    if y is not None:
        ys = torch.stack(
            [
                y[i, t : t + s_h, l : l + s_w]
                for i, (t, l) in enumerate(zip(tops, lefts, strict=True))
            ]
        )
    return torch.stack(xs), ys


def discriminator_loss(
    discriminators: Sequence[nn.Module],
    reals: Sequence[torch.Tensor],
    fakes: Sequence[torch.Tensor],
    gan_loss: str = "lsgan",
) -> torch.Tensor:
    """Sum over modalities of the discriminator loss (``gan_loss``: ``"lsgan"`` or ``"log"``)
    of ``D_m`` on ``(real_m, fake_m)``."""
    if not len(discriminators) == len(reals) == len(fakes):
        raise ValueError("need one real and one fake image per discriminator")
    terms = [
        gan_d_loss(d(r), d(f.detach()), gan_loss)
        for d, r, f in zip(discriminators, reals, fakes, strict=True)
    ]
    return torch.stack(terms).sum()


def discriminator_step(
    net: FusionNetV1,
    discriminators: nn.ModuleList,
    opt_d: torch.optim.Optimizer,
    x: torch.Tensor,
    gan_loss: str = "lsgan",
) -> float:
    """Update the discriminators on real ``M_m`` vs. reconstruction ``D(M_m)``; returns L_D."""
    with torch.no_grad():
        recon = net.reconstruct(x).recon  # (B, M, H, W)
    m = x.shape[1]
    loss = discriminator_loss(
        discriminators,
        [x[:, i : i + 1] for i in range(m)],
        [recon[:, i : i + 1] for i in range(m)],
        gan_loss,
    )
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    return float(loss.detach())


def generator_step(
    net: FusionNetV1,
    discriminators: nn.ModuleList,
    opt_g: torch.optim.Optimizer,
    x: torch.Tensor,
    cfg: V1Config,
) -> dict[str, float]:
    """Update encoder + decoder with eq. 9 (discriminators frozen); returns the loss terms."""
    with frozen_params(discriminators):
        out = net.reconstruct(x)
        terms = pretrain_encoder_loss(
            x, out.recon, out.low, out.high, discriminators, cfg.adv_weight_pretrain, cfg.sigma,
            cfg.gan_loss,
        )  # fmt: skip
        if not torch.isfinite(terms.total):
            raise FloatingPointError(f"non-finite pre-training loss {float(terms.total)}")
        opt_g.zero_grad(set_to_none=True)
        terms.total.backward()
        opt_g.step()
    return {
        "enc": float(terms.total.detach()),
        "content": float(terms.content.detach()),
        "corr": float(terms.correlation.detach()),
        "adv_g": float(terms.adversarial.detach()),
    }


def pretrain_batch(
    net: FusionNetV1,
    discriminators: nn.ModuleList,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    x: torch.Tensor,
    cfg: V1Config,
) -> dict[str, float]:
    """One alternation on a batch: discriminator step, then encoder/decoder step."""
    terms = {"adv_d": discriminator_step(net, discriminators, opt_d, x, cfg.gan_loss)}
    terms.update(generator_step(net, discriminators, opt_g, x, cfg))
    return terms
