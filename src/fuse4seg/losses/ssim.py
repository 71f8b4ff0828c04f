"""Structural similarity (SSIM) with a Gaussian window, 2D and 3D.

Wang et al. (2004) SSIM: ``((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2
+ s_y^2 + C2))``, ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with ``L = data_range``. Local
statistics use a separable Gaussian window (default 11 taps, sigma 1.5) in ``valid`` mode
(no padding), population (biased) moments, and the map is averaged. A spatial side shorter
than the window uses the largest odd window that fits on that axis.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ssim", "SSIMLoss"]


def _gaussian(size: int, sigma: float, dtype, device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, windows: list[torch.Tensor]) -> torch.Tensor:
    """Separable valid-mode filtering of ``(N, 1, *S)`` with one 1D window per axis."""
    dims = len(windows)
    conv = F.conv2d if dims == 2 else F.conv3d
    for axis, w in enumerate(windows):
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = w.numel()
        x = conv(x, w.reshape(shape))
    return x


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """SSIM between ``x`` and ``y``.

    Args:
        x, y: ``(B, C, H, W)`` or ``(B, C, D, H, W)``, same shape.
        data_range: dynamic range ``L`` of the data (1.0 for images in [0, 1]).
        window: Gaussian window length (odd).
        sigma: Gaussian standard deviation in pixels.
        reduction: ``"mean"`` (scalar) or ``"none"`` (one value per sample, shape ``(B,)``).

    Returns:
        SSIM, 1.0 for identical inputs.
    """
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.ndim not in (4, 5):
        raise ValueError(f"x must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window}")
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    b, c = x.shape[:2]
    spatial = x.shape[2:]
    windows = []
    for size in spatial:
        n = min(window, size if size % 2 == 1 else size - 1)
        n = max(n, 1)
        windows.append(_gaussian(n, sigma, x.dtype, x.device))
    xf = x.reshape(b * c, 1, *spatial)  # (B*C, 1, *S)
    yf = y.reshape(b * c, 1, *spatial)
    # centre each image first (moments are shift-invariant): less float32 cancellation
    # in E[x^2] - E[x]^2 for nearly flat regions
    dims = tuple(range(2, xf.ndim))
    off_x = xf.detach().mean(dim=dims, keepdim=True)
    off_y = yf.detach().mean(dim=dims, keepdim=True)
    xc, yc = xf - off_x, yf - off_y
    stacked = torch.cat([xc, yc, xc * xc, yc * yc, xc * yc], dim=0)  # (5*B*C, 1, *S)
    mc_x, mc_y, exx, eyy, exy = _blur(stacked, windows).chunk(5, dim=0)
    var_x = exx - mc_x**2
    var_y = eyy - mc_y**2
    cov = exy - mc_x * mc_y
    mu_x, mu_y = mc_x + off_x, mc_y + off_y
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    ssim_map = num / den  # (B*C, 1, *S')
    per_sample = ssim_map.reshape(b, -1).mean(dim=1)  # (B,)
    return per_sample.mean() if reduction == "mean" else per_sample


class SSIMLoss(nn.Module):
    """``1 - ssim(x, y)`` as a module (2D or 3D from the input rank)."""

    def __init__(self, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> None:
        super().__init__()
        self.data_range = data_range
        self.window = window
        self.sigma = sigma

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` -> scalar loss in [0, 2]."""
        return 1.0 - ssim(x, y, self.data_range, self.window, self.sigma)
