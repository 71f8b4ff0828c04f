"""Discriminative blocks and the least-squares GAN losses of the first-version Fuse4Seg.

The paper (001, eq. 10) writes the adversarial term in the original log form
``E[log(1 - D(M))]``. We use the **least-squares GAN** formulation (Mao et al., 2017),
which is better behaved for small discriminators and is what this module implements:

* discriminator: ``L_D = 1/2 E[(D(real) - 1)^2] + 1/2 E[D(fake)^2]``
* generator (encoder/decoder or fusion net): ``L_G = 1/2 E[(D(fake) - 1)^2]``

``D`` outputs a map of patch scores (PatchGAN), the expectation is the mean over the map.
In pre-training ``real`` is the source modality ``M`` and ``fake`` its reconstruction
``D(M)``; in cooperative training ``real`` is the source and ``fake`` the fused image.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Discriminator", "DiscriminatorPair", "lsgan_d_loss", "lsgan_g_loss"]


class Discriminator(nn.Module):
    """One discriminative block: a small PatchGAN.

    Data flow: [Conv 4x4 stride 2 -> (GroupNorm) -> LeakyReLU(0.2)] x ``depth`` -> Conv 3x3 -> 1.
    Input (B, 1, H, W) in [0, 1]; output patch scores (B, 1, H / 2^depth, W / 2^depth)
    (unbounded, no sigmoid: the LSGAN losses work on raw scores).
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
