"""Normalisations for ``(B, C, H, W)`` feature maps: channels-first LayerNorm (per pixel, over
channels) and InstanceNorm (per sample and channel, over the pixels)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "NORM_KINDS",
    "InstanceNorm2d",
    "LayerNorm2d",
    "is_channels_last",
    "make_norm2d",
    "match_memory_format",
    "pointwise",
]


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4D ``(B, C, H, W)`` tensor stored channels-last (NHWC) but not also NCHW."""
    return (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not (x.is_contiguous())
    )


def pointwise(conv: nn.Conv2d, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """1x1 ``conv`` of ``x (B, C_in, H, W)`` -> ``(B, C_out, H, W)``, times the per-channel
    ``scale (C_out, 1, 1)`` if given. A channels-last ``x`` runs as one GEMM with the bias
    (and scale) folded in, on its ``(B, H, W, C)`` view (faster on CPU than oneDNN's 1x1
    conv); the result is the same up to rounding and stays channels-last."""
    if not is_channels_last(x):
        y = conv(x)
        return y * scale if scale is not None else y
    weight, bias = conv.weight.flatten(1), conv.bias  # (C_out, C_in), (C_out,)
    if scale is not None:
        weight = weight * scale.reshape(-1, 1)
        bias = bias * scale.reshape(-1) if bias is not None else None
    return F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)


def match_memory_format(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``y (B, C, H, W)`` made channels-last when ``like (B, C', H, W)`` is (and is not also
    plain contiguous), so a network's layout stays NHWC across reshapes; otherwise ``y``."""
    return y.contiguous(memory_format=torch.channels_last) if is_channels_last(like) else y


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of ``(B, C, H, W)`` (per pixel), with affine weight
    and bias, as used by Restormer and ConvNeXt.

    A channels-last input is normalised by one fused ``F.layer_norm`` on its ``(B, H, W, C)``
    view (and stays channels-last); other inputs use element-wise ops (same result)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        if is_channels_last(x):
            y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)  # (B, C, H, W), channels-last
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class InstanceNorm2d(nn.Module):
    """Instance normalisation with affine weight and bias: every channel of every sample is
    standardised over its ``H x W`` pixels (as in nnU-Net / DynUNet). ``(B, C, H, W)``.

    Unlike :class:`LayerNorm2d` it keeps the per-pixel magnitude of a feature vector, which a
    narrow network (few channels per pixel) needs: see ``SegNetConfig.norm``. Runs as one
    ``F.group_norm`` with ``C`` groups (channels-last inputs stay channels-last)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        if x.shape[-2] * x.shape[-1] == 1:  # one pixel: x - mean = 0 (group_norm refuses it)
            return torch.zeros_like(x) + self.bias[:, None, None].to(x.dtype)
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)


#: ``norm`` names accepted by :func:`make_norm2d`.
NORM_KINDS: tuple[str, ...] = ("layer", "instance")


def make_norm2d(kind: str, channels: int) -> nn.Module:
    """``"layer"`` -> :class:`LayerNorm2d`, ``"instance"`` -> :class:`InstanceNorm2d`."""
    if kind == "layer":
        return LayerNorm2d(channels)
    if kind == "instance":
        return InstanceNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORM_KINDS)}")
