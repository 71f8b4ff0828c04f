"""Discriminative blocks and the GAN losses of the first-version Fuse4Seg.

Two adversarial losses, chosen by ``V1Config.gan_loss`` (:data:`GAN_LOSSES`):

* ``"lsgan"`` (default) — the **least-squares GAN** (Mao et al., 2017), better behaved for
  small discriminators:
  discriminator ``L_D = 1/2 E[(D(real) - 1)^2] + 1/2 E[D(fake)^2]``,
  generator (encoder/decoder or fusion net) ``L_G = 1/2 E[(D(fake) - 1)^2]``.
* ``"log"`` — the paper's log form (001, eqs. 9-12): with ``p = sigmoid(D(.))`` the
  discriminator maximises ``E[log p(real)] + E[log(1 - p(fake))]`` (it minimises
  ``L_D = E[-log p(real)] + E[-log(1 - p(fake))]``) and the generator minimises eq. 10 as
  written, ``L_G = E[log(1 - p(fake))]`` (the saturating minimax form: its gradient vanishes
  when the discriminator rejects the fakes confidently). Computed from the raw scores with
  ``softplus`` (``log p = -softplus(-s)``, ``log(1 - p) = -softplus(s)``), so it is finite
  for any score.

``D`` outputs a map of patch scores (PatchGAN), the expectation is the mean over the map.
In pre-training ``real`` is the source modality ``M`` and ``fake`` its reconstruction
``D(M)``; in cooperative training ``real`` is the source and ``fake`` the fused image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GAN_LOSSES",
    "Discriminator",
    "DiscriminatorPair",
    "gan_d_loss",
    "gan_g_loss",
    "log_d_loss",
    "log_g_loss",
    "lsgan_d_loss",
    "lsgan_g_loss",
]

#: adversarial losses, see the module docstring
GAN_LOSSES = ("lsgan", "log")


class Discriminator(nn.Module):
    """One discriminative block: a small PatchGAN.

    Data flow: [Conv 4x4 stride 2 -> (GroupNorm) -> LeakyReLU(0.2)] x ``depth`` -> Conv 3x3 -> 1.
    Input (B, 1, H, W) in [0, 1]; output patch scores (B, 1, H / 2^depth, W / 2^depth)
    (unbounded, no sigmoid: both GAN losses work on raw scores).
    """

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        if in_channels < 1 or width < 1 or depth < 1:
            raise ValueError(
                f"in_channels, width and depth must be >= 1, got {in_channels}, {width}, {depth}"
            )
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(depth):
            c_out = width * 2**i
            layers.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))
            if i > 0:
                layers.append(nn.GroupNorm(1, c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> patch scores (B, 1, h, w)."""
        if x.ndim != 4:
            raise ValueError(f"expected (B, C, H, W), got shape {tuple(x.shape)}")
        return self.net(x)


class DiscriminatorPair(nn.ModuleList):
    """One :class:`Discriminator` per modality (``D_M1``, ``D_M2``, ...)."""

    def __init__(self, num_modalities: int = 2, width: int = 16, depth: int = 3) -> None:
        if num_modalities < 1:
            raise ValueError(f"num_modalities must be >= 1, got {num_modalities}")
        super().__init__([Discriminator(1, width, depth) for _ in range(num_modalities)])


def lsgan_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss ``1/2 mean((D(real)-1)^2) + 1/2 mean(D(fake)^2)``."""
    return 0.5 * ((real_scores - 1.0) ** 2).mean() + 0.5 * (fake_scores**2).mean()


def lsgan_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Least-squares generator loss ``1/2 mean((D(fake)-1)^2)``."""
    return 0.5 * ((fake_scores - 1.0) ** 2).mean()


def log_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Log-GAN discriminator loss ``mean(-log sigmoid(real)) + mean(-log(1 - sigmoid(fake)))``."""
    return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()


def log_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Paper eq. 10 for one discriminator: ``mean(log(1 - sigmoid(fake)))`` (minimised)."""
    return -F.softplus(fake_scores).mean()


def _check_gan_loss(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"gan_loss must be one of {list(GAN_LOSSES)}, got {kind!r}")


def gan_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor, kind: str) -> torch.Tensor:
    """Discriminator loss of ``kind`` (``"lsgan"`` or ``"log"``)."""
    _check_gan_loss(kind)
    if kind == "lsgan":
        return lsgan_d_loss(real_scores, fake_scores)
    return log_d_loss(real_scores, fake_scores)


def gan_g_loss(fake_scores: torch.Tensor, kind: str) -> torch.Tensor:
    """Generator loss of ``kind`` (``"lsgan"`` or ``"log"``)."""
    _check_gan_loss(kind)
    return lsgan_g_loss(fake_scores) if kind == "lsgan" else log_g_loss(fake_scores)
