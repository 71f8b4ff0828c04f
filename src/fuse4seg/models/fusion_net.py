"""Fusion leader of Fuse4Seg: a frequency-decoupled fusion network (spec sec. 3.3).

Data flow for ``x (B, M, H, W)`` in [0, 1], with ``L = squeeze_levels``, ``C = dim``::

    pad H, W to a multiple of 2^(L + inn_haar)              (replicate)
    fold modalities into the batch                          (B*M, 1, H, W)
    Haar squeeze x L (lossless, orthonormal)                (B*M, 4^L, h, w), h = H / 2^L
    3x3 conv "overlapping patch embedding"                  (B*M, C, h, w)
    shared Restormer encoder (MDTA + GDFN) x encoder_blocks (B*M, C, h, w)
      |-- low branch: (MSA + MLP) x low_blocks    -> low    (B, M, C, h, w)
      '-- high branch: affine couplings x high_nodes -> high (B, M, C, h, w)  [invertible]
    H_low  = (MSA + MLP) x fuse_low_blocks on sum_m low_m   (B, C, h, w)
    H_high = couplings x fuse_high_nodes on sum_m high_m    (B, C, h, w)    [invertible]
    concat -> 1x1 conv -> Restormer decoder x decoder_blocks -> 3x3 convs -> (B, 4^L, h, w)
      + Haar squeeze of the modality mean (``mean_skip``)   (B, 4^L, h, w)
    Haar unsqueeze x L -> crop to H, W                      (B, 1, H, W)
    per-image min-max normalisation: (y - min) / (max - min + eps), clamped to [0, 1]

The MSA of the low-frequency branch and of H_low is spatial multi-head self-attention in
which every pixel attends to keys/values pooled to at most ``kv_size x kv_size`` tokens
(exact full attention with ``kv_size=None``); the Restormer blocks use channel attention.
Working at reduced resolution after the lossless Haar squeeze is what makes the ``tiny``
and ``base`` presets affordable on a CPU.

Two output modes (``output_mode``):

* ``"image"`` (``paper``): the head predicts the fused image's Haar coefficients (the image
  itself when ``squeeze_levels = 0``), as the CDDFuse-style decoder of the spec;
* ``"weights"`` (``tiny``, ``base``): the head predicts, at the feature resolution, one weight
  per modality and an offset, which are upsampled bilinearly to full resolution:
  ``y = sum_m (1/M + w_m) x_m + b`` (then min-max normalised). The fused image keeps the
  sources' full-resolution detail, cannot show the periodic (checkerboard) artefacts of an
  image predicted at 1/4 resolution in the Haar domain, and its weight maps show which
  modality the leader takes where ("glass box"). ``FusionNet.weight_maps(x)`` returns them.

With ``mean_skip`` (default) the decoder predicts a *correction* to the modality mean
``x_avg`` and its last convolution starts small (``head_init_scale``), so an untrained leader
outputs (almost exactly) min-max normalised ``x_avg``: the image the follower is warmed up on
in Algorithm 1's stage 1. The rollout then moves the leader away from ``x_avg`` only where the
segmentation gradients ask for it, instead of starting from a random (checkerboard-like)
image in the Haar domain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from ..errors import ConfigError
from ._padding import cpu_chunks, pad_to_multiple
from .layers import InvertibleSequence, RestormerBlock, TransferFunction, TransformerBlock
from .layers.haar import haar_squeeze, haar_unsqueeze
from .presets import FusionNetConfig, build_fusion_config

__all__ = ["FusionNet", "FusionOutput", "minmax_normalize"]


class FusionOutput(NamedTuple):
    """Output of :class:`FusionNet`.

    fused: ``(B, 1, H, W)`` in [0, 1]; low, high: per-modality features ``(B, M, C, h, w)``
    at the network's internal (padded, possibly squeezed) resolution.
    """

    fused: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor


def minmax_normalize(y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Differentiable per-image min-max normalisation of ``(B, C, H, W)`` to [0, 1];
    constant images map to 0 (no division by zero)."""
    lo = y.amin(dim=(-2, -1), keepdim=True)
    hi = y.amax(dim=(-2, -1), keepdim=True)
    return ((y - lo) / (hi - lo + eps)).clamp(0.0, 1.0)


class _ClampBackIntoRange(torch.autograd.Function):
    """``clamp(y, 0, 1)`` whose gradient, outside [0, 1], keeps only the part that moves ``y``
    back into the range.

    A plain clip gives clipped pixels no gradient: a leader pushed out of [0, 1] everywhere
    (seen with ``lr_leader: 1.0e-2``) outputs a constant image for good. Passing the whole
    gradient through (straight-through) is worse: it pushes clipped pixels further out with
    no effect on the loss, and the leader's features grew without bound (gradient norms of
    1e7 after a few hundred steps, L_seg rising under its own descent). One-sided: below 0,
    only gradients that raise ``y`` pass; above 1, only those that lower it.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(y)
        return y.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        # gradient descent moves y by -grad: below 0 keep grad < 0, above 1 keep grad > 0
        low, high = y < 0.0, y > 1.0
        return torch.where(low, grad.clamp(max=0.0), torch.where(high, grad.clamp(min=0.0), grad))


def _stack(blocks: list[nn.Module]) -> nn.Module:
    return nn.Sequential(*blocks) if blocks else nn.Identity()


class FusionNet(nn.Module):
    """Fuse ``M`` co-registered images into one (the Fuse4Seg leader).

    Args:
        num_modalities: ``M`` (1, 2, 3, 4, ...).
        preset: ``"tiny"``, ``"base"`` (default) or ``"paper"``; ``None`` = dataclass defaults.
        **overrides: any :class:`~fuse4seg.models.presets.FusionNetConfig` field.

    Raises:
        ConfigError: unknown preset or key, or an invalid value.
    """

    def __init__(self, num_modalities: int, preset: str | None = "base", **overrides: Any):
        super().__init__()
        cfg = build_fusion_config(preset, num_modalities=num_modalities, **overrides)
        self.config = cfg
        c, k = cfg.dim, 4**cfg.squeeze_levels
        self.pad_factor = 2 ** (cfg.squeeze_levels + int(cfg.inn_haar))
        self.embed = nn.Conv2d(k, c, 3, padding=1, padding_mode="reflect", bias=False)
        self.encoder = _stack(
            [RestormerBlock(c, cfg.heads, cfg.ffn_expansion) for _ in range(cfg.encoder_blocks)]
        )
        self.low_branch = _stack(
            [
                TransformerBlock(c, cfg.heads, cfg.mlp_ratio, cfg.kv_size)
                for _ in range(cfg.low_blocks)
            ]
        )
        self.high_branch = InvertibleSequence(
            c, cfg.high_nodes, haar=cfg.inn_haar, expansion=cfg.coupling_expansion
        )
        self.fuse_low = _stack(
            [
                TransformerBlock(c, cfg.heads, cfg.mlp_ratio, cfg.kv_size)
                for _ in range(cfg.fuse_low_blocks)
            ]
        )
        self.fuse_high = InvertibleSequence(
            c, cfg.fuse_high_nodes, haar=cfg.inn_haar, expansion=cfg.coupling_expansion
        )
        self.reduce = nn.Conv2d(2 * c, c, 1, bias=False)
        self.decoder = _stack(
            [RestormerBlock(c, cfg.heads, cfg.ffn_expansion) for _ in range(cfg.decoder_blocks)]
        )
        out_channels = cfg.num_modalities + 1 if cfg.output_mode == "weights" else k
        self.head = nn.Sequential(
            nn.Conv2d(c, c // 2, 3, padding=1, padding_mode="reflect", bias=False),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c // 2, out_channels, 3, padding=1, padding_mode="reflect", bias=False),
        )
        with torch.no_grad():
            self.head[-1].weight.mul_(cfg.head_init_scale)
        self.transfer = (
            TransferFunction(cfg.num_modalities, cfg.transfer_hidden)
            if cfg.transfer_hidden
            else None
        )
        self.source_decoder = None
        if cfg.source_decoder_hidden:
            h = cfg.source_decoder_hidden
            self.source_decoder = nn.Sequential(
                nn.Conv2d(1, h, 1), nn.GELU(), nn.Conv2d(h, h, 1), nn.GELU(),
                nn.Conv2d(h, cfg.num_modalities, 1),
            )  # fmt: skip

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | FusionNetConfig) -> FusionNet:
        """Rebuild a network from ``dataclasses.asdict(net.config)`` (or the dataclass)."""
        values = dataclasses.asdict(config) if isinstance(config, FusionNetConfig) else dict(config)
        if "num_modalities" not in values:
            raise ConfigError("fusion config lacks 'num_modalities'")
        return cls(values.pop("num_modalities"), preset=None, **values)

    @property
    def num_modalities(self) -> int:
        return self.config.num_modalities

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-modality features of a padded input ``(B, M, Hp, Wp)`` -> ``low, high``,
        each ``(B, M, C, h, w)``."""
        b, m, hp, wp = x.shape
        z = x.reshape(b * m, 1, hp, wp)  # (B*M, 1, Hp, Wp)
        for _ in range(self.config.squeeze_levels):
            z = haar_squeeze(z)  # (B*M, 4^l, Hp/2^l, Wp/2^l)
        if z.device.type == "cpu":  # NHWC: faster depthwise / 1x1 convs with oneDNN on CPU
            z = z.contiguous(memory_format=torch.channels_last)
        shared = self.encoder(self.embed(z))  # (B*M, C, h, w)
        low = self.low_branch(shared)
        high = self.high_branch(shared)
        c, h, w = shared.shape[1:]
        return low.reshape(b, m, c, h, w), high.reshape(b, m, c, h, w)

    def _head_output(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Fusion units H_low / H_high on the modality sums, decoder, head:
        ``(B, 4^L, h, w)`` (image mode) or ``(B, M + 1, h, w)`` (weights mode)."""
        f_low = self.fuse_low(low.sum(dim=1))  # (B, C, h, w)
        f_high = self.fuse_high(high.sum(dim=1))  # (B, C, h, w)
        y = self.reduce(torch.cat([f_low, f_high], dim=1))  # (B, C, h, w)
        return self.head(self.decoder(y))

    def decode(
        self, low: torch.Tensor, high: torch.Tensor, x: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Fuse ``low, high (B, M, C, h, w)`` -> raw (un-normalised) image ``(B, 1, Hp, Wp)``.

        ``x (B, M, Hp, Wp)``, the padded input, is needed for ``output_mode="weights"`` and
        when ``config.mean_skip`` is on.
        """
        y = self._head_output(low, high)
        if self.config.output_mode == "weights":
            if x is None:
                raise ValueError("decode() needs the padded input x when output_mode='weights'")
            return self._apply_weights(y, x)
        if self.config.mean_skip:
            if x is None:
                raise ValueError("decode() needs the padded input x when mean_skip is on")
            skip = x.mean(dim=1, keepdim=True)  # (B, 1, Hp, Wp)
            for _ in range(self.config.squeeze_levels):
                skip = haar_squeeze(skip)  # (B, 4^l, Hp/2^l, Wp/2^l)
            y = y + skip
        for _ in range(self.config.squeeze_levels):
            y = haar_unsqueeze(y)
        return y  # (B, 1, Hp, Wp)

    def _weights_and_offset(self, y: torch.Tensor, size: tuple[int, int]):
        """Head output ``(B, M + 1, h, w)`` -> full-resolution weights ``(B, M, Hp, Wp)``
        (``1/M + w_m``, or ``w_m`` without ``mean_skip``) and
        offset ``(B, 1, Hp, Wp)``."""
        m = self.num_modalities
        if y.shape[-2:] != size:
            y = nn.functional.interpolate(y, size=size, mode="bilinear", align_corners=False)
        prior = 1.0 / m if self.config.mean_skip else 0.0
        return prior + y[:, :m], y[:, m:]

    def _apply_weights(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        weights, offset = self._weights_and_offset(y, tuple(x.shape[-2:]))
        blend = (weights * x).sum(dim=1, keepdim=True) + offset  # (B, 1, Hp, Wp)
        if self.transfer is not None:
            blend = blend + self.transfer(x)  # learned per-pixel intensity mapping
        return blend

    @torch.no_grad()
    def weight_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-modality weight maps ``(B, M, H, W)`` of ``output_mode="weights"`` (before the
        final min-max normalisation): where the leader takes which modality."""
        if self.config.output_mode != "weights":
            raise ValueError("weight_maps() needs output_mode='weights'")
        xp, (h, w) = pad_to_multiple(x, self.pad_factor)
        y = self._head_output(*self.encode(xp))
        weights, _ = self._weights_and_offset(y, tuple(xp.shape[-2:]))
        return weights[..., :h, :w]

    def forward(self, x: torch.Tensor) -> FusionOutput:
        """``x (B, M, H, W)`` in [0, 1] -> ``FusionOutput(fused (B, 1, H, W), low, high)``."""
        if x.ndim != 4 or x.shape[1] != self.num_modalities:
            raise ValueError(
                f"FusionNet expects (B, {self.num_modalities}, H, W), got {tuple(x.shape)}"
            )
        chunks = cpu_chunks(x)
        if chunks is not None:  # CPU inference: a few slices at a time (cache-friendly)
            outs = [self._forward(c) for c in chunks]
            return FusionOutput(*(torch.cat(parts) for parts in zip(*outs, strict=True)))
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> FusionOutput:
        """Unchecked :meth:`forward` of ``x (B, M, H, W)``."""
        xp, (h, w) = pad_to_multiple(x, self.pad_factor)
        low, high = self.encode(xp)
        y = self.decode(low, high, xp)[..., :h, :w]  # (B, 1, H, W)
        return FusionOutput(self.normalise(y), low, high)

    def reconstruct_sources(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every source encoded and decoded *alone* (the autoencoder phase of CDDFuse's
        training, :mod:`fuse4seg.losses.cddfuse`).

        Source ``m``'s features go through the fusion units and the decoder without the other
        sources' (the modality sum holds one term); in ``weights`` mode and with
        ``mean_skip`` every input slot holds source ``m``.

        Args:
            x: ``(B, M, H, W)`` in [0, 1].

        Returns:
            ``(recon (B, M, H, W), low, high)``: the reconstructions, normalised like the
            fused image, and the features of :meth:`encode` ``(B, M, C, h, w)``.
        """
        xp, (h, w) = pad_to_multiple(x, self.pad_factor)
        low, high = self.encode(xp)
        m = self.num_modalities
        recon = []
        for i in range(m):
            alone = xp[:, i : i + 1].expand(-1, m, -1, -1)  # (B, M, Hp, Wp), all source i
            y = self.decode(low[:, i : i + 1], high[:, i : i + 1], alone)[..., :h, :w]
            recon.append(self.normalise(y))
        return torch.cat(recon, dim=1), low, high

    def decode_sources(self, fused: torch.Tensor) -> torch.Tensor:
        """Per-pixel estimate of the sources from the fused value alone:
        ``(B, 1, H, W) -> (B, M, H, W)`` (needs ``source_decoder_hidden > 0``).

        Training asks this to match the sources (the information anchor ``L_info``): the
        fused intensity must then tell the sources' tissue clusters apart, instead of
        mapping, e.g., edema and healthy tissue to one value.
        """
        if self.source_decoder is None:
            raise ValueError("decode_sources() needs source_decoder_hidden > 0")
        return self.source_decoder(fused)

    def normalise(self, y: torch.Tensor) -> torch.Tensor:
        """Put a raw fused image ``(B, 1, H, W)`` into [0, 1] as ``config.output_norm`` says
        (per-image min-max, or clipping whose gradient only leads back into the range)."""
        if self.config.output_norm == "clamp":
            return _ClampBackIntoRange.apply(y)
        return minmax_normalize(y, self.config.eps)
