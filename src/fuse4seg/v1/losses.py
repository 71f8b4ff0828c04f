"""Losses of the first-version Fuse4Seg (paper 001, eqs. 9-13).

* :func:`content_loss` (eq. 12): ``||M - D(M)||_2^2 + (1 - SSIM(M, D(M)))``, the squared
  L2 norm taken as the per-pixel mean (so the two terms have comparable scale), summed
  over modalities.
* :func:`pretrain_encoder_loss` (eq. 9): ``L_Enc = lambda L_adv + sigma L_corr +
  (1 - sigma) L_content`` with the correlation decomposition loss (eq. 11,
  :func:`fuse4seg.losses.decomposition_loss`, epsilon 1.01) and the adversarial loss of the
  reconstructions (eq. 10; least-squares by default, the paper's log form with
  ``gan_loss="log"``, see :mod:`fuse4seg.v1.discriminator`).
* :func:`fusion_text_loss` (eq. 13): ``1/(HW) || |grad F| - max(|grad M1|, |grad M2|) ||_1``
  (:func:`fuse4seg.losses.gradient_loss`, Sobel magnitude of the ``grad_convention``:
  ``"cddfuse"`` = raw kernels and ``|g_x| + |g_y|``, the convention of the CDDFuse code v1
  builds on, 8 a on a ramp of slope a; ``"unit"`` = normalised kernels, L2, a) plus
  ``adv_weight`` times the adversarial loss of the fused image against each modality's
  discriminator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from fuse4seg.losses import decomposition_loss, gradient_loss, ssim

from .discriminator import gan_g_loss

__all__ = [
    "PretrainLosses",
    "content_loss",
    "adversarial_generator_loss",
    "pretrain_encoder_loss",
    "fusion_text_loss",
]


class PretrainLosses(NamedTuple):
    """Terms of eq. 9 (scalars): ``total = lambda adv + sigma corr + (1 - sigma) content``."""

    total: torch.Tensor
    content: torch.Tensor
    correlation: torch.Tensor
    adversarial: torch.Tensor


def content_loss(source: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Eq. 12 summed over modalities.

    Args:
        source, recon: ``(B, M, H, W)`` images in [0, 1].

    Returns:
        Scalar ``sum_m [mean (M_m - D(M_m))^2 + 1 - SSIM(M_m, D(M_m))]``.
    """
    if source.shape != recon.shape or source.ndim != 4:
        raise ValueError(
            f"source and recon must be (B, M, H, W) of equal shape, "
            f"got {tuple(source.shape)} and {tuple(recon.shape)}"
        )
    total = source.new_zeros(())
    for m in range(source.shape[1]):
        s, r = source[:, m : m + 1], recon[:, m : m + 1]  # (B, 1, H, W)
        total = total + (s - r).pow(2).mean() + (1.0 - ssim(r, s))
    return total


def adversarial_generator_loss(
    discriminators: Sequence[nn.Module], fakes: Sequence[torch.Tensor], gan_loss: str = "lsgan"
) -> torch.Tensor:
    """Sum over modalities of the generator loss: LSGAN ``1/2 mean((D_m(fake_m) - 1)^2)`` or
    the paper's eq. 10 ``mean(log(1 - sigmoid(D_m(fake_m))))`` (``gan_loss="log"``).

    Args:
        discriminators: one discriminator per modality.
        fakes: one ``(B, 1, H, W)`` generated image per discriminator (the reconstruction of
            that modality in pre-training; the fused image for every modality in cooperative
            training).
        gan_loss: ``"lsgan"`` or ``"log"``.
    """
    if len(discriminators) != len(fakes):
        raise ValueError(f"{len(discriminators)} discriminators but {len(fakes)} images")
    return torch.stack(
        [gan_g_loss(d(f), gan_loss) for d, f in zip(discriminators, fakes, strict=True)]
    ).sum()


def pretrain_encoder_loss(
    source: torch.Tensor,
    recon: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    discriminators: Sequence[nn.Module],
    adv_weight: float,
    sigma: float,
    gan_loss: str = "lsgan",
) -> PretrainLosses:
    """Eq. 9 for the encoder/decoder update of the pre-training stage.

    Args:
        source: ``(B, M, H, W)``; recon: ``(B, M, H, W)`` reconstructions ``D(M)``.
        low, high: ``(B, M, C, h, w)`` low- / high-frequency features.
        discriminators: one per modality (their parameters are not updated here).
        adv_weight: ``lambda``; sigma: trade-off between correlation and content terms.
        gan_loss: ``"lsgan"`` or ``"log"`` (see :mod:`fuse4seg.v1.discriminator`).
    """
    if not 0.0 <= sigma <= 1.0:
        raise ValueError(f"sigma must be in [0, 1], got {sigma}")
    content = content_loss(source, recon)
    corr = decomposition_loss(low, high)
    fakes = [recon[:, m : m + 1] for m in range(recon.shape[1])]
    adv = adversarial_generator_loss(discriminators, fakes, gan_loss)
    total = adv_weight * adv + sigma * corr + (1.0 - sigma) * content
    return PretrainLosses(total, content, corr, adv)


def fusion_text_loss(
    fused: torch.Tensor,
    sources: torch.Tensor,
    discriminators: Sequence[nn.Module],
    adv_weight: float,
    grad_convention: str = "unit",
    gan_loss: str = "lsgan",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 13: gradient term + ``adv_weight`` x adversarial term of the fused image.

    Args:
        fused: ``(B, 1, H, W)``; sources: ``(B, M, H, W)``.
        discriminators: ``M`` discriminators; ``D_m`` judges the fused image against ``M_m``.
        grad_convention: ``"unit"`` or ``"cddfuse"`` (:func:`fuse4seg.losses.gradient_loss`).
        gan_loss: ``"lsgan"`` or ``"log"``.

    Returns:
        ``(total, gradient_term, adversarial_term)``, scalars.
    """
    grad = gradient_loss(fused, sources, convention=grad_convention)
    adv = adversarial_generator_loss(discriminators, [fused] * sources.shape[1], gan_loss)
    return grad + adv_weight * adv, grad, adv
