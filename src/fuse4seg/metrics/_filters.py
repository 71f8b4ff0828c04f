"""Small filtering kernels shared by the fusion metrics (private).

All functions take image batches ``(N, H, W)`` (or ``(N, D, H, W)`` for the 3D helpers) and
keep the input dtype, so callers choose float32 or float64 precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "separable_filter",
    "box_filter_valid",
    "gaussian_kernel_1d",
    "matlab_gaussian_1d",
    "sobel_same",
    "sobel_magnitude_3d",
    "central_gradient",
]


def _conv_axis(x: torch.Tensor, kernel: torch.Tensor, axis: int, step: int = 1) -> torch.Tensor:
    """'Valid' correlation of ``x`` (N, ..., H, W) with a 1D ``kernel`` along ``axis``.

    Implemented as one product and then one in-place multiply-add per tap on shifted views:
    on CPU this is several times faster than ``conv2d`` in float64, and it allocates a single
    output (temporaries of paired taps cost more in page faults than they save). ``step > 1``
    keeps only every ``step``-th output (filter, then subsample) without computing the others.
    """
    taps = [float(v) for v in kernel.tolist()]
    k = len(taps)
    n = x.shape[axis] - k + 1
    if n < 1:
        raise ValueError(f"axis of length {x.shape[axis]} is shorter than the {k}-tap filter")
    m = (n - 1) // step + 1
    axis = axis % x.ndim
    idx: list[slice] = [slice(None)] * x.ndim

    def shifted(i: int) -> torch.Tensor:
        idx[axis] = slice(i, i + (m - 1) * step + 1, step)
        return x[tuple(idx)]

    y = torch.mul(shifted(0), taps[0])
    for i in range(1, k):
        if taps[i] != 0.0:
            y.add_(shifted(i), alpha=taps[i])
    return y


def separable_filter(x: torch.Tensor, kernel: torch.Tensor, step: int = 1) -> torch.Tensor:
    """'Valid' separable filtering of ``x`` (N, H, W) with the outer product of ``kernel``.

    Filters along H first, then W, in the dtype of ``x``. ``step`` subsamples the result
    (``separable_filter(x, k, 2) == separable_filter(x, k)[:, ::2, ::2]``) at a quarter of
    the cost.

    Returns:
        (N, H - K + 1, W - K + 1) (divided by ``step`` along both axes, rounded up).
    """
    return _conv_axis(_conv_axis(x, kernel, -2, step), kernel, -1, step)


def _box_axis(x: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Window sums along ``axis`` ('valid'), accumulated in float64 whatever the input dtype."""
    n = x.shape[axis] - size + 1
    if n < 1:
        raise ValueError(f"axis of length {x.shape[axis]} is shorter than the window {size}")
    y = x.narrow(axis, 0, n).to(torch.float64, copy=True)
    for i in range(1, size):
        y.add_(x.narrow(axis, i, n))
    return y


def box_filter_valid(
    x: torch.Tensor, size: int, round_to: torch.dtype | None = None
) -> torch.Tensor:
    """Mean over ``size x size`` windows, 'valid' region: (N, H, W) -> (N, H-size+1, W-size+1).

    Window sums are accumulated in float64 (exact for 8-bit data, their products and float32
    window means). ``round_to=torch.float32`` rounds each axis pass to float32, reproducing
    SciPy's ``uniform_filter`` on float32 arrays (double accumulation, float32 storage between
    the two passes).
    """
    y = _box_axis(x, size, -2).div_(size)
    if round_to is not None:
        y = y.to(round_to)
    y = _box_axis(y, size, -1).div_(size)
    return y.to(round_to if round_to is not None else x.dtype)


def gaussian_kernel_1d(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1D Gaussian of odd ``size`` and standard deviation ``sigma`` (float64)."""
    if size % 2 != 1 or size < 1:
        raise ValueError(f"Gaussian window size must be odd and positive, got {size}")
    r = (size - 1) / 2.0
    t = torch.arange(size, dtype=torch.float64) - r
    g = torch.exp(-(t * t) / (2.0 * sigma * sigma))
    return g / g.sum()


def matlab_gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    """1D factor of MATLAB's ``fspecial('gaussian', size, sigma)`` (float64).

    ``fspecial`` zeroes values below ``eps * max``; for the windows used by VIF (sizes 3..17,
    sigma = size / 5) nothing is zeroed, so the 2D window is exactly separable.
    """
    g = gaussian_kernel_1d(size, sigma)
    g2 = torch.outer(g, g)
    if bool((g2 < torch.finfo(torch.float64).eps * g2.max()).any()):
        raise ValueError(f"Gaussian window {size} / {sigma} is not separable after thresholding")
    return g


def sobel_same(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel responses of ``x`` (N, H, W) with zero padding ('same' size).

    Equals ``scipy.signal.convolve2d(x, S, mode='same')`` for ``Sx = [[-1,0,1],[-2,0,2],
    [-1,0,1]]`` and ``Sy = [[1,2,1],[0,0,0],[-1,-2,-1]]`` (true convolution, kernel flipped).

    Returns:
        ``(sx, sy)``, each (N, H, W).
    """
    p = torch.nn.functional.pad(x, (1, 1, 1, 1))
    smooth = torch.tensor([1.0, 2.0, 1.0])
    diff = torch.tensor([1.0, 0.0, -1.0])  # flipped [-1, 0, 1]
    sx = _conv_axis(_conv_axis(p, smooth, -2), diff, -1)
    sy = _conv_axis(_conv_axis(p, diff.neg(), -2), smooth, -1)  # flipped [1, 0, -1] rows
    return sx, sy


def sobel_magnitude_3d(x: torch.Tensor) -> torch.Tensor:
    """3D Sobel gradient magnitude of ``x`` (N, D, H, W), zero padding: (N, D, H, W)."""
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    diff = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
    kernels = []
    for axis in range(3):
        parts = [diff if a == axis else smooth for a in range(3)]
        kernels.append(torch.einsum("i,j,k->ijk", *parts))
    weight = torch.stack(kernels).unsqueeze(1)  # (3, 1, 3, 3, 3)
    g = F.conv3d(x.unsqueeze(1), weight, padding=1)  # (N, 3, D, H, W)
    return torch.sqrt((g * g).sum(1))


def central_gradient(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Central differences along ``dim`` (one-sided at the borders), like ``np.gradient``."""
    n = x.shape[dim]
    if n < 2:
        return torch.zeros_like(x)
    g = torch.empty_like(x)
    g.narrow(dim, 1, n - 2).copy_((x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2)) / 2)
    g.narrow(dim, 0, 1).copy_(x.narrow(dim, 1, 1) - x.narrow(dim, 0, 1))
    g.narrow(dim, n - 1, 1).copy_(x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1))
    return g
