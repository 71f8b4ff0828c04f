"""Sobel gradients (2D and 3D) and total variation.

Conventions:

* Inputs are ``(B, C, H, W)`` (2D) or ``(B, C, D, H, W)`` (3D); the dimensionality is taken
  from ``x.ndim``.
* Borders are handled with replicate padding, so outputs keep the input size and a
  constant image has zero gradient everywhere (no artificial edge at the border).
* By default the Sobel kernels are normalised (divided by 8 in 2D, by 32 in 3D), so that on
  a linear ramp ``x = a * i`` the derivative along ``i`` is exactly ``a`` (the true slope).
  ``normalized=False`` gives the classic integer kernels (slope ``8a`` / ``32a``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sobel_gradients", "sobel_magnitude", "total_variation"]

_SMOOTH = (1.0, 2.0, 1.0)
_DERIV = (-1.0, 0.0, 1.0)


def _spatial_dims(x: torch.Tensor, name: str = "x") -> int:
    if x.ndim not in (4, 5):
        raise ValueError(
            f"{name} must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}"
        )
    return x.ndim - 2


def _sobel_kernels(dims: int, normalized: bool, dtype, device) -> torch.Tensor:
    """Kernels of shape (dims, 1, 3, 3[, 3]); kernel k differentiates along spatial axis k."""
    smooth = torch.tensor(_SMOOTH, dtype=dtype, device=device)
    deriv = torch.tensor(_DERIV, dtype=dtype, device=device)
    kernels = []
    for axis in range(dims):
        k = None
        for a in range(dims):
            v = deriv if a == axis else smooth
            shape = [1] * dims
            shape[a] = 3
            v = v.reshape(shape)
            k = v if k is None else k * v
        kernels.append(k)
    out = torch.stack(kernels).unsqueeze(1)  # (dims, 1, 3, ...)
    if normalized:
        out = out / (2.0 * 4.0 ** (dims - 1))  # 8 in 2D, 32 in 3D
    return out


def sobel_gradients(x: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Per-axis Sobel derivatives.

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        normalized: divide the kernels so a ramp of slope ``a`` gives ``a``.

    Returns:
        ``(B, C, 2, H, W)`` (d/dH, d/dW) or ``(B, C, 3, D, H, W)`` (d/dD, d/dH, d/dW).
    """
    dims = _spatial_dims(x)
    b, c = x.shape[:2]
    spatial = x.shape[2:]
    kernels = _sobel_kernels(dims, normalized, x.dtype, x.device)
    flat = x.reshape(b * c, 1, *spatial)  # (B*C, 1, *S)
    flat = F.pad(flat, (1, 1) * dims, mode="replicate")
    conv = F.conv2d if dims == 2 else F.conv3d
    grads = conv(flat, kernels)  # (B*C, dims, *S)
    return grads.reshape(b, c, dims, *spatial)


def sobel_magnitude(
    x: torch.Tensor, norm: str = "l2", normalized: bool = True, eps: float = 1e-12
) -> torch.Tensor:
    """Sobel gradient magnitude ``|Sobel x|`` per channel, same shape as ``x``.

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        norm: ``"l2"`` (Euclidean, ``sqrt(sum_k g_k^2 + eps)``) or ``"l1"`` (``sum_k |g_k|``,
            the CDDFuse convention in 2D).
        normalized: see :func:`sobel_gradients`.
        eps: keeps the square root differentiable at zero gradient.

    Returns:
        Tensor with the shape of ``x``.
    """
    grads = sobel_gradients(x, normalized=normalized)
    if norm == "l2":
        return torch.sqrt(grads.pow(2).sum(dim=2) + eps)
    if norm == "l1":
        return grads.abs().sum(dim=2)
    raise ValueError(f"norm must be 'l2' or 'l1', got {norm!r}")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: sum over spatial axes of the mean absolute difference
    between neighbours along that axis.

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.

    Returns:
        Scalar tensor. For ``x = a * i`` along one axis it equals ``|a|``.
    """
    dims = _spatial_dims(x)
    total = x.new_zeros(())
    for axis in range(2, 2 + dims):
        if x.shape[axis] > 1:
            total = total + x.diff(dim=axis).abs().mean()
    return total
