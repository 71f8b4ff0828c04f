"""Fusion quality metrics, batched over images, in two named conventions.

``convention="reference"`` reproduces the widely used Python fusion evaluator of the MIF
literature (the one shipped with the CDDFuse code), quirks included; ``"standard"`` uses the
textbook definitions. ``docs/metrics.md`` lists every formula and the differences.

Shapes: a fused batch is ``(B, H, W)`` (``(B, 1, H, W)`` and a single ``(H, W)`` image are
accepted); sources are ``(B, S, H, W)`` or a list of ``S`` tensors ``(B, H, W)``. In the
reference convention images hold grey levels in [0, 255]; in the standard convention they
may have any range, given by ``data_range`` (the peak value; levels are ``x * 255 /
data_range``). Every function returns a float64 tensor ``(B,)`` on the input's device.
Computations run in float64 (float32 where the reference evaluator itself is float32), so
metrics are exact to about 1e-10 on CPU and CUDA; on Apple MPS (no float64) they are float32.

On CPU most metrics run as compiled kernels (``_kernels.py``, Numba; same arithmetic, about
3x faster); the tensor code after each kernel branch is what runs on other devices, without
Numba, or with ``FUSE4SEG_METRICS_BACKEND=torch``.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from fuse4seg.metrics import _kernels
from fuse4seg.metrics._filters import (
    box_filter_valid,
    central_gradient,
    gaussian_kernel_1d,
    matlab_gaussian_1d,
    separable_filter,
    sobel_magnitude_3d,
    sobel_same,
)

__all__ = [
    "CONVENTIONS",
    "Convention",
    "entropy",
    "standard_deviation",
    "spatial_frequency",
    "average_gradient",
    "mutual_information",
    "scd",
    "vif",
    "qabf",
    "ssim_sum",
    "psnr",
    "fmi",
    "as_fused",
    "as_sources",
]

Convention = Literal["reference", "standard"]
CONVENTIONS: tuple[str, ...] = ("reference", "standard")
_LEVELS = 256


# ----------------------------------------------------------------------------- inputs
def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    return convention


def _check_spatial_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return spatial_dims


def as_fused(x: torch.Tensor, spatial_dims: int = 2, native: bool = False) -> torch.Tensor:
    """Normalise a fused batch to ``(B, *spatial)`` in the working float dtype.

    Accepts ``(*spatial)``, ``(B, *spatial)`` or ``(B, 1, *spatial)`` with 2 or 3 spatial dims.
    ``native=True`` keeps float32 and float64 CPU tensors as they are (for the compiled
    kernels, which read them in float64 themselves).
    """
    _check_spatial_dims(spatial_dims)
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.ndim == spatial_dims:
        x = x.unsqueeze(0)
    elif x.ndim == spatial_dims + 2 and x.shape[1] == 1:
        x = x.squeeze(1)
    if x.ndim != spatial_dims + 1:
        raise ValueError(
            f"expected a fused batch (B, {'D, ' if spatial_dims == 3 else ''}H, W), "
            f"got shape {tuple(x.shape)}"
        )
    if min(x.shape[1:]) < 2:
        raise ValueError(f"images must be at least 2 pixels along each axis, got {tuple(x.shape)}")
    if native and _is_native(x):
        return x
    return x.to(_work_dtype(x.device))


def _is_native(x: torch.Tensor) -> bool:
    return x.is_cpu and x.dtype in (torch.float32, torch.float64)


def as_sources(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    spatial_dims: int = 2,
    native: bool = False,
) -> torch.Tensor:
    """Normalise sources to ``(B, S, *spatial)`` matching the (normalised) ``fused`` batch.

    ``sources`` is ``(B, S, *spatial)`` or a sequence of ``S`` tensors shaped like ``fused``.
    ``native=True`` keeps float32 and float64 CPU tensors in their dtype (see ``as_fused``).
    """
    if isinstance(sources, torch.Tensor):
        if sources.ndim == spatial_dims + 1 and fused.shape[0] == 1:
            sources = sources.unsqueeze(0)  # (S, *spatial) for a single image
        src = sources
    else:
        src = torch.stack([as_fused(s, spatial_dims, native) for s in sources], dim=1)
    if src.ndim != spatial_dims + 2 or src.shape[0] != fused.shape[0]:
        raise ValueError(
            f"sources must be (B, S, *spatial) with B={fused.shape[0]}, got {tuple(src.shape)}"
        )
    if src.shape[2:] != fused.shape[1:]:
        raise ValueError(
            f"sources {tuple(src.shape[2:])} and fused {tuple(fused.shape[1:])} differ in size"
        )
    if src.shape[1] < 1:
        raise ValueError("at least one source image is needed")
    if native and _is_native(src) and src.device == fused.device:
        return src
    return src.to(device=fused.device, dtype=fused.dtype)


def _inputs(
    fused: torch.Tensor,
    sources: torch.Tensor | Sequence[torch.Tensor] | None = None,
    spatial_dims: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fused (B, *spatial), sources (B, S, *spatial))`` for a metric with a kernel.

    On CPU with the kernels, float32 and float64 inputs are passed on as they are (a mixed
    pair becomes float64); otherwise both are in the working dtype, as ``as_fused`` gives.
    Without ``sources`` the second element is an empty tensor.
    """
    f = as_fused(fused, spatial_dims, native=True)
    src = f.new_empty(0) if sources is None else as_sources(sources, f, spatial_dims, native=True)
    if sources is not None and src.dtype != f.dtype:
        f, src = f.double(), src.double()
    if not _use_kernels(f):
        work = _work_dtype(f.device)
        f, src = f.to(work), src.to(work)
    return f, src


def _levels(x: torch.Tensor, convention: str, data_range: float) -> torch.Tensor:
    """Integer grey levels 0..255 (int64, same shape) used by the histogram metrics.

    Reference: ``round(x)`` (half to even, like NumPy) clipped to [0, 255]; standard:
    ``round(x * 255 / data_range)`` clipped, i.e. 256 levels over [0, data_range].
    """
    if convention == "standard" and data_range != 255.0:
        x = x * (255.0 / data_range)
    return torch.round(x).clamp_(0, _LEVELS - 1).long()


def _levels_compiled(x: torch.Tensor, convention: str, data_range: float) -> np.ndarray:
    """``_levels`` of a CPU tensor as a uint8 array of the same shape (kernel)."""
    scale = 255.0 / data_range if convention == "standard" else 1.0
    arr = np.ascontiguousarray(x.detach().numpy())
    out = np.empty(arr.shape, dtype=np.uint8)
    _kernels.grey_levels(arr, scale, out)
    return out


class _Scratch(threading.local):
    """Scratch memory of the compiled kernels: one growing 1D buffer per dtype and thread,
    kept between calls (it holds no results; see "Scratch memory" in ``_kernels.py``)."""

    def __init__(self) -> None:
        self.buffers: dict[np.dtype, np.ndarray] = {}

    def get(self, n: int, dtype=np.float64) -> np.ndarray:
        """An uninitialised array (n,) of ``dtype``, valid until the thread's next ``get``."""
        dtype = np.dtype(dtype)
        buf = self.buffers.get(dtype)
        if buf is None or buf.size < n:
            buf = self.buffers[dtype] = np.empty(n, dtype=dtype)
        return buf[:n]


_SCRATCH = _Scratch()


def _arrays(x: torch.Tensor) -> list[np.ndarray]:
    """C-contiguous NumPy arrays (views where possible) of the images of a CPU batch (B, ...)."""
    return [np.ascontiguousarray(v) for v in x.detach().numpy()]


def _per_image(fn, *batches: torch.Tensor) -> torch.Tensor:
    """``fn(image_1, image_2, ...)`` for each image of the CPU batches (B, ...), as NumPy
    arrays, collected as a float64 tensor (B,)."""
    arrays = [_arrays(b) for b in batches]
    return torch.tensor(
        [float(fn(*items)) for items in zip(*arrays, strict=True)], dtype=torch.float64
    )


def _check_range(data_range: float) -> float:
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    return float(data_range)


def _to_255(x: torch.Tensor, convention: str, data_range: float) -> torch.Tensor:
    return x if convention == "reference" or data_range == 255.0 else x * (255.0 / data_range)


# ------------------------------------------------------------------------- histogram
def _histograms(levels: torch.Tensor) -> torch.Tensor:
    """Grey-level histograms of ``levels`` (N, ...) int64 -> counts (N, 256) float64."""
    n = levels.shape[0]
    offset = torch.arange(n, device=levels.device).view(-1, *([1] * (levels.ndim - 1))) * _LEVELS
    counts = torch.bincount((levels + offset).flatten(), minlength=n * _LEVELS)
    return counts.view(n, _LEVELS).to(torch.float64)


def _entropy_from_counts(counts: torch.Tensor, log=torch.log2) -> torch.Tensor:
    p = counts / counts.sum(-1, keepdim=True)
    return -torch.where(p > 0, p * log(torch.where(p > 0, p, 1.0)), 0.0).sum(-1)


def _joint_mi(a: torch.Tensor, b: torch.Tensor, log=torch.log) -> torch.Tensor:
    """Mutual information of level images ``a``, ``b`` (N, ...) int64 -> (N,) float64.

    One ``bincount`` builds all N joint histograms; only their non-empty bins are visited.
    """
    n = a.shape[0]
    size = a[0].numel()
    offset = torch.arange(n, device=a.device).view(-1, *([1] * (a.ndim - 1))) * _LEVELS**2
    joint = torch.bincount((a * _LEVELS + b + offset).flatten(), minlength=n * _LEVELS**2)
    idx = torch.nonzero(joint).squeeze(1)
    p = joint[idx].to(torch.float64) / size
    img = idx // _LEVELS**2
    pa = _histograms(a).flatten() / size  # (N * 256,)
    pb = _histograms(b).flatten() / size
    ia = img * _LEVELS + (idx // _LEVELS) % _LEVELS
    ib = img * _LEVELS + idx % _LEVELS
    terms = p * log(p / (pa[ia] * pb[ib]))
    mi = torch.zeros(n, dtype=torch.float64, device=a.device).index_add_(0, img, terms)
    return mi.clamp_min(0.0)


# ------------------------------------------------------------------- single image
def entropy(
    fused: torch.Tensor,
    convention: Convention = "reference",
    data_range: float = 255.0,
    spatial_dims: int = 2,
) -> torch.Tensor:
    """EN: Shannon entropy (bits) of the 256-level grey histogram.

    Args:
        fused: (B, H, W) or, with ``spatial_dims=3``, (B, D, H, W).
        convention: "reference" (levels ``round(F)``) or "standard" (levels over
            [0, data_range]).
        data_range: peak value of the data (standard convention only).

    Returns:
        (B,) float64.
    """
    _check_convention(convention)
    f, _ = _inputs(fused, None, spatial_dims)
    data_range = _check_range(data_range)
    if _use_kernels(f):
        lf = _levels_compiled(f, convention, data_range)
        return torch.tensor([_kernels.entropy_of_levels(v, True) for v in lf], dtype=torch.float64)
    levels = _levels(f, convention, data_range)
    return _entropy_from_counts(_histograms(levels))


def standard_deviation(fused: torch.Tensor, spatial_dims: int = 2) -> torch.Tensor:
    """SD: population standard deviation of ``fused`` (B, *spatial) -> (B,). Same in both."""
    f, _ = _inputs(fused, None, spatial_dims)
    if _use_kernels(f):
        return _per_image(_kernels.standard_deviation, f)
    return f.flatten(1).std(dim=1, correction=0).double()


def spatial_frequency(fused: torch.Tensor) -> torch.Tensor:
    """SF = sqrt(mean(row diffs^2) + mean(column diffs^2)); (B, H, W) -> (B,). Same in both."""
    f, _ = _inputs(fused)
    if _use_kernels(f):
        return _per_image(_kernels.spatial_frequency, f)
    rf = (f[:, :, 1:] - f[:, :, :-1]).square().mean((1, 2))
    cf = (f[:, 1:, :] - f[:, :-1, :]).square().mean((1, 2))
    return torch.sqrt(rf + cf).double()


def average_gradient(
    fused: torch.Tensor, convention: Convention = "reference", spatial_dims: int = 2
) -> torch.Tensor:
    """AG: mean of ``sqrt(sum_i G_i^2 / n)`` over the ``n`` spatial axes.

    Reference: central differences, one-sided at the borders (``np.gradient``), mean over all
    pixels. Standard (Cui et al. 2015): forward differences, mean over the (H-1)(W-1)
    [(D-1)(H-1)(W-1)] pixels that have both. ``spatial_dims=3`` takes (B, D, H, W).

    Returns:
        (B,) float64.
    """
    _check_convention(convention)
    f, _ = _inputs(fused, None, spatial_dims)
    if spatial_dims == 3:
        f = f.to(_work_dtype(f.device))
    if spatial_dims == 2 and _use_kernels(f):
        central = convention == "reference"
        return _per_image(lambda x: _kernels.average_gradient(x, central), f)
    dims = list(range(1, spatial_dims + 1))
    if convention == "reference":
        grads = [central_gradient(f, d) for d in dims]
    else:
        core = tuple(slice(0, -1) for _ in dims)
        grads = []
        for d in dims:
            g = f.narrow(d, 1, f.shape[d] - 1) - f.narrow(d, 0, f.shape[d] - 1)
            idx = [slice(None)] + [slice(None) if dd == d else core[0] for dd in dims]
            grads.append(g[tuple(idx)])
    sq = sum(g.square() for g in grads)
    return torch.sqrt(sq / spatial_dims).flatten(1).mean(1).double()


# ----------------------------------------------------------------- with sources
def mutual_information(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: Convention = "reference",
    data_range: float = 255.0,
    spatial_dims: int = 2,
) -> torch.Tensor:
    """MI = sum_s MI(F, S_s) over 256 grey levels.

    Reference: natural log (nats), levels ``round(x)`` (each 8-bit grey value its own bin,
    as ``sklearn.metrics.mutual_info_score`` on 8-bit images). Standard: bits (log2), levels
    over [0, data_range].

    Returns:
        (B,) float64.
    """
    _check_convention(convention)
    f, src = _inputs(fused, sources, spatial_dims)
    data_range = _check_range(data_range)
    if _use_kernels(f):
        lf = _levels_compiled(f, convention, data_range)
        bits = convention == "standard"
        joint = _SCRATCH.get(_LEVELS**2, np.int64).reshape(_LEVELS, _LEVELS)
        values = [
            sum(
                _kernels.mutual_information_of_levels(ls, lf[i], bits, joint)
                for ls in _levels_compiled(src[i], convention, data_range)
            )
            for i in range(f.shape[0])
        ]
        return torch.tensor(values, dtype=torch.float64)
    log = torch.log if convention == "reference" else torch.log2
    lf = _levels(f, convention, data_range)
    total = torch.zeros(f.shape[0], dtype=torch.float64, device=f.device)
    for s in range(src.shape[1]):
        total = total + _joint_mi(_levels(src[:, s], convention, data_range), lf, log)
    return total


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    y = y.flatten(1)
    xc = x - x.mean(1, keepdim=True)
    yc = y - y.mean(1, keepdim=True)
    return (xc * yc).sum(1) / torch.sqrt(xc.square().sum(1) * yc.square().sum(1))


def scd(
    sources: torch.Tensor | Sequence[torch.Tensor], fused: torch.Tensor, spatial_dims: int = 2
) -> torch.Tensor:
    """SCD (Aslantas & Bendes 2015) = corr(A, F - B) + corr(B, F - A); exactly 2 sources.

    Same in both conventions; works on (B, H, W) and, with ``spatial_dims=3``, (B, D, H, W).

    Returns:
        (B,) float64 (NaN where a correlation is undefined, e.g. a constant image).
    """
    f, src = _inputs(fused, sources, spatial_dims)
    if src.shape[1] != 2:
        raise ValueError(f"SCD is defined for exactly 2 sources, got {src.shape[1]}")
    if _use_kernels(f):
        return _per_image(lambda s, x: _kernels.scd(s[0], s[1], x), src, f)
    a, b = src[:, 0], src[:, 1]
    return (_pearson(a, f - b) + _pearson(b, f - a)).double()


_VIF_SIGMA_NSQ = 2.0
_VIF_EPS = 1e-10


def vif(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: Convention = "reference",
    data_range: float = 255.0,
) -> torch.Tensor:
    """VIF: sum over sources of pixel-domain VIF (VIFp, Sheikh & Bovik 2006) of (S_s, F).

    Four scales with Gaussian windows N = 17, 9, 5, 3 (sigma = N / 5), 'valid' filtering,
    scales > 1 filter then keep every 2nd pixel, sigma_nsq = 2 on 0-255 data; a NaN ratio
    (constant source) counts as 1. The standard convention first rescales to 0-255 with
    ``data_range``; the formula is the same.

    Returns:
        (B,) float64.
    """
    _check_convention(convention)
    f, src = _inputs(fused, sources)
    data_range = _check_range(data_range)
    _check_vif_size(tuple(f.shape[1:]))
    if _use_kernels(f):
        if convention == "standard" and data_range != 255.0:  # rescale in float64
            f, src = (
                _to_255(f.double(), convention, data_range),
                _to_255(src.double(), convention, data_range),
            )
        return _vif_compiled(src, f)
    x = torch.cat([src, f.unsqueeze(1)], 1)  # (B, S+1, H, W)
    x = _to_255(x, convention, data_range)
    b, s1 = x.shape[0], x.shape[1]
    n_src = s1 - 1
    num = torch.zeros(b, n_src, dtype=x.dtype, device=x.device)
    den = torch.zeros_like(num)
    eps = _VIF_EPS
    for scale in range(1, 5):
        size = 2 ** (5 - scale) + 1
        win = matlab_gaussian_1d(size, size / 5.0)
        if scale > 1:
            x = separable_filter(x.flatten(0, 1), win, step=2)
            x = x.reshape(b, s1, *x.shape[1:])
        h, w = x.shape[2:]
        # x, x^2 (sources and F) and source * F, filtered in one stack
        maps = torch.empty(b, 2 * s1 + n_src, h, w, dtype=x.dtype, device=x.device)
        maps[:, :s1] = x
        torch.mul(x, x, out=maps[:, s1 : 2 * s1])
        torch.mul(x[:, :n_src], x[:, n_src:], out=maps[:, 2 * s1 :])
        filt = separable_filter(maps.view(-1, h, w), win)
        filt = filt.view(b, maps.shape[1], *filt.shape[1:])
        mu1, mu2 = filt[:, :n_src], filt[:, n_src:s1]
        sig1 = (filt[:, s1 : s1 + n_src] - mu1 * mu1).clamp_min_(0.0)
        sig2 = (filt[:, s1 + n_src : 2 * s1] - mu2 * mu2).clamp_min_(0.0)
        sig12 = filt[:, 2 * s1 :] - mu1 * mu2
        # The evaluator's guards, reduced to what changes the two log terms: where
        # sig1 < eps both terms are 0 (sig1 := 0); where sig2 < eps or g < 0, g := 0 so the
        # numerator term is 0; elsewhere sv = max(sig2 - g * sig12, eps).
        g = sig12 / (sig1 + eps)
        sv = (sig2 - g * sig12).clamp_min_(eps).add_(_VIF_SIGMA_NSQ)
        sig1.masked_fill_(sig1 < eps, 0.0)
        g.clamp_min_(0.0).masked_fill_((sig2 < eps).expand_as(g), 0.0)
        terms = torch.stack([g.square_().mul_(sig1).div_(sv), sig1.div_(_VIF_SIGMA_NSQ)])
        sums = terms.add_(1.0).log10_().sum((-2, -1))
        num = num + sums[0]
        den = den + sums[1]
    ratio = num / den
    ratio = torch.where(torch.isnan(ratio), 1.0, ratio)
    return ratio.sum(1).double()


def _vif_scales(size: int) -> list[tuple[int, int]]:
    """(window, side length) of one image axis at each VIF scale."""
    out = []
    for scale in range(1, 5):
        win = 2 ** (5 - scale) + 1
        if scale > 1:
            size = (size - win) // 2 + 1 if size >= win else 0
        out.append((win, size))
    return out


def _check_vif_size(shape: tuple[int, ...]) -> None:
    for side in shape:
        if any(n < win for win, n in _vif_scales(side)):
            raise ValueError(f"images {shape} are too small for the 4-scale VIF (need >= 41 px)")


def _use_kernels(x: torch.Tensor) -> bool:
    return _is_native(x) and _kernels.available()


@functools.cache
def _vif_windows() -> tuple[np.ndarray, np.ndarray]:
    """(4, 17) Gaussian taps of the four VIF scales (zero padded) and their sizes (4,)."""
    sizes = np.array([win for win, _ in _vif_scales(0)], dtype=np.int64)
    taps = np.zeros((4, int(sizes[0])))
    for i, size in enumerate(sizes):
        taps[i, :size] = matlab_gaussian_1d(int(size), size / 5.0).numpy()
    if not np.array_equal(taps[0], taps[0, ::-1]):  # the 17-tap kernel sums symmetric pairs
        raise RuntimeError("VIF's 17-tap Gaussian window is not symmetric")
    return taps, sizes


def _vif_compiled(src: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """VIF of CPU sources (B, S, H, W) and fused images (B, H, W) on 0-255 with the kernel."""
    taps, sizes = _vif_windows()
    ss, fs = _arrays(src), _arrays(f)
    out = torch.empty(f.shape[0], dtype=torch.float64)
    work = _SCRATCH.get(_kernels.vif_work_size(*src.shape[1:]))
    for i in range(f.shape[0]):
        num, den = _kernels.vif_num_den(ss[i], fs[i], taps, sizes, _VIF_SIGMA_NSQ, _VIF_EPS, work)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = num / den
        out[i] = float(np.where(np.isnan(ratio), 1.0, ratio).sum())
    return out


def _gradient_angle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sobel magnitude, squared magnitude and angle atan(Sy/Sx) (pi/2 where Sx = 0)."""
    sx, sy = sobel_same(x)
    g2 = sx * sx + sy * sy
    angle = torch.atan(sy / sx).masked_fill_(sx == 0, math.pi / 2)
    return torch.sqrt(g2), g2, angle


def qabf(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: Convention = "reference",
) -> torch.Tensor:
    """Qabf (Xydeas & Petrovic 2000): edge-information preservation, in [0, 1].

    ``Q = sum_s sum(Q_sF * g_s) / sum_s sum(g_s)`` with Sobel (zero padded) magnitudes g and
    angles alpha, ``Q_sF = Qg(G) * Qa(A)``, ``A = 1 - |alpha_s - alpha_F| / (pi/2)``,
    ``Qg = 0.9994 / (1 + exp(-15 (G - 0.5)))``, ``Qa = 0.9879 / (1 + exp(-22 (A - 0.8)))``.
    G = min(g_s, g_F) / max(g_s, g_F); where g_s == g_F the reference evaluator sets
    G = g_F (its quirk), the standard convention G = 1. Scale invariant, so no data range.
    The reference convention computes in float32 like the evaluator (Sobel responses of
    8-bit data are exact there), the standard one in float64; sums are float64.

    Returns:
        (B,) float64 (NaN if every source is constant).
    """
    _check_convention(convention)
    f, src = _inputs(fused, sources)
    use_kernels = _use_kernels(f)
    if convention == "reference":  # float32, as the reference evaluator
        src, f = src.float(), f.float()
    else:
        src, f = src.to(_work_dtype(f.device)), f.to(_work_dtype(f.device))
    if use_kernels:
        return _qabf_compiled(src, f, convention == "reference")
    b, n_src = src.shape[:2]
    x = torch.cat([src, f.unsqueeze(1)], 1)  # (B, S+1, H, W): all Sobel responses at once
    g, g2, ang = (t.view(x.shape) for t in _gradient_angle(x.flatten(0, 1)))
    g_s, g2_s, a_s = g[:, :n_src], g2[:, :n_src], ang[:, :n_src]
    g_f, g2_f, a_f = g[:, n_src:], g2[:, n_src:], ang[:, n_src:]
    # min/max ratio; the g^2 comparison decides which is larger (as before); equal -> quirk
    big_g = torch.minimum(g_s, g_f).div_(torch.maximum(g_s, g_f))
    equal = g2_s == g2_f
    if convention == "reference":
        big_g = torch.where(equal, g_f, big_g)
    else:
        big_g.masked_fill_(equal, 1.0)
    big_a = (a_s - a_f).abs_().div_(math.pi / 2)
    big_a = 1.0 - big_a
    q_g = 0.9994 / big_g.sub_(0.5).mul_(-15.0).exp_().add_(1.0)
    q_a = 0.9879 / big_a.sub_(0.8).mul_(-22.0).exp_().add_(1.0)
    nume = q_g.mul_(q_a).mul_(g_s).double().sum((1, 2, 3))
    deno = g_s.double().sum((1, 2, 3))
    return nume / deno


_QABF_BAND = 64  # image rows per pass: its temporaries stay in the L2 cache


def _qabf_compiled(src: torch.Tensor, f: torch.Tensor, quirk: bool) -> torch.Tensor:
    """Qabf of CPU sources (B, S, H, W) and fused images (B, H, W) of one dtype, with the
    kernels, in bands of ``_QABF_BAND`` rows.

    Same arithmetic as the tensor code, in the dtype of the images; the arctangent and the
    exponentials are NumPy's vectorised ones (as in the reference evaluator).
    """
    sources, fused = src.detach().numpy(), f.detach().numpy()
    dtype = fused.dtype
    b, n_src, h, w = sources.shape
    consts = np.array([1.0, 0.5, 0.8, -15.0, -22.0, math.pi / 2], dtype=dtype)
    c_g, c_a, two = dtype.type(0.9994), dtype.type(0.9879), dtype.type(2.0)
    out = torch.empty(b, dtype=torch.float64)
    sums = np.empty(2)  # sum of Q_sF g_s and of g_s
    band = min(_QABF_BAND, h)
    n_work = (n_src + 1) * ((band + 2) * (w + 2) + 3 * band * w) + 2 * n_src * band * w
    work = _SCRATCH.get(n_work, dtype)

    def buffers(rows: int) -> list[np.ndarray]:
        """padded (S+1, R+2, W+2); g, g2, angle (S+1, R, W); e (2, S, R, W), from ``work``."""
        shapes = [(n_src + 1, rows + 2, w + 2)] + [(n_src + 1, rows, w)] * 3 + [(2, n_src, rows, w)]
        views, start = [], 0
        for shape in shapes:
            views.append(work[start : start + math.prod(shape)].reshape(shape))
            start += math.prod(shape)
        return views

    full = buffers(band)
    for i in range(b):
        sums[:] = 0.0
        for r0 in range(0, h, band):
            rows = min(band, h - r0)  # the last band may be shorter
            padded, g, g2, angle, e = full if rows == band else buffers(rows)
            _kernels.qabf_pad_band(sources[i], fused[i], r0, padded)  # zero border
            _kernels.sobel_gradients(padded, two, g, g2, angle)
            np.arctan(angle, out=angle)
            _kernels.qabf_exponents(g, g2, angle, n_src, quirk, consts, e)
            np.exp(e, out=e)
            _kernels.qabf_sums(g, e, n_src, c_g, c_a, sums)
        nume, deno = float(sums[0]), float(sums[1])
        out[i] = nume / deno if deno != 0.0 else math.nan  # no edges at all: 0 / 0
    return out


def _ssim_maps(x: torch.Tensor, y: torch.Tensor, convention: str, data_range: float):
    """Mean SSIM of fused ``x`` (B, H, W) against each source ``y`` (B, S, H, W) -> (B, S)."""
    b, n_src = y.shape[:2]
    if convention == "reference":
        # skimage 0.19+: float32 arithmetic, 7x7 uniform window, sample covariance.
        use_kernels = _use_kernels(x) and _use_kernels(y)
        x, y = x.float(), y.float()
        if use_kernels:
            return _ssim_reference_compiled(x, y)
    xs = x.unsqueeze(1)
    stack = torch.cat([xs, y, xs * xs, y * y, xs * y], 1)  # (B, 1+S+1+S+S, H, W)
    if convention == "reference":
        filt = box_filter_valid(stack.flatten(0, 1), 7, round_to=torch.float32)
        cov_norm = 49.0 / 48.0
        big_r = 2.0
    else:
        win = gaussian_kernel_1d(11, 1.5)
        filt = separable_filter(stack.flatten(0, 1), win)
        cov_norm = 1.0
        big_r = data_range
    filt = filt.view(b, stack.shape[1], *filt.shape[1:])
    ux, uy = filt[:, :1], filt[:, 1 : 1 + n_src]
    uxx, uyy = filt[:, 1 + n_src : 2 + n_src], filt[:, 2 + n_src : 2 + 2 * n_src]
    uxy = filt[:, 2 + 2 * n_src :]
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (0.01 * big_r) ** 2
    c2 = (0.03 * big_r) ** 2
    a1 = 2 * ux * uy + c1
    a2 = 2 * vxy + c2
    b1 = ux**2 + uy**2 + c1
    b2 = vx + vy + c2
    smap = (a1 * a2) / (b1 * b2)
    return smap.double().mean((-2, -1))


def _ssim_reference_compiled(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reference SSIM of float32 CPU ``x`` (B, H, W) against ``y`` (B, S, H, W) -> (B, S)."""
    c = np.float32
    consts = (c(49.0 / 48.0), c((0.01 * 2.0) ** 2), c((0.03 * 2.0) ** 2))
    work = _SCRATCH.get(_kernels.ssim_work_size(*y.shape[1:]), np.float32)
    rows = [
        _kernels.ssim_reference_means(xi, yi, *consts, work)
        for xi, yi in zip(_arrays(x), _arrays(y), strict=True)
    ]
    return torch.from_numpy(np.stack(rows))


def ssim_sum(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: Convention = "reference",
    data_range: float = 255.0,
) -> torch.Tensor:
    """SSIM = sum_s SSIM(F, S_s) (Wang et al. 2004), mean over the 'valid' SSIM map.

    Reference (scikit-image ``structural_similarity`` defaults of the time, float32): 7x7
    uniform window, sample covariance (x 49/48), K1 0.01, K2 0.03, **data_range 2** on 0-255
    data, map cropped by 3 px. Standard: 11x11 Gaussian window (sigma 1.5), population
    covariance, the true ``data_range``, map cropped by 5 px. Each term is 1 for F == S_s.

    Returns:
        (B,) float64.
    """
    _check_convention(convention)
    f, src = _inputs(fused, sources)
    if convention == "standard" or not _use_kernels(f):
        f, src = f.to(_work_dtype(f.device)), src.to(_work_dtype(f.device))
    need = 7 if convention == "reference" else 11
    if min(f.shape[1:]) < need:
        raise ValueError(f"images must be at least {need} px for SSIM, got {tuple(f.shape[1:])}")
    return _ssim_maps(f, src, convention, _check_range(data_range)).sum(1)


def psnr(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: Convention = "reference",
    data_range: float = 255.0,
    spatial_dims: int = 2,
) -> torch.Tensor:
    """PSNR (dB) = 10 log10(peak^2 / MSE), MSE = mean over sources of mean((S_s - F)^2).

    Reference: peak = max(F) of each fused image; standard: peak = ``data_range``.
    Infinite when every source equals F.

    Returns:
        (B,) float64.
    """
    _check_convention(convention)
    f, src = _inputs(fused, sources, spatial_dims)
    if _use_kernels(f):
        mse = _per_image(_kernels.mean_squared_error, src, f)
    else:
        mse = (src - f.unsqueeze(1)).square().flatten(2).mean(2).mean(1)
    if convention == "reference":
        peak2 = f.flatten(1).amax(1).double().square()
    else:
        peak2 = torch.full_like(mse, _check_range(data_range) ** 2)
    return (10.0 * torch.log10(peak2 / mse)).double()


def fmi(
    sources: torch.Tensor | Sequence[torch.Tensor], fused: torch.Tensor, spatial_dims: int = 2
) -> torch.Tensor:
    """FMI: feature mutual information on gradient features (global variant), in [0, S/2].

    Features are Sobel gradient magnitudes (2D, or 3D Sobel with ``spatial_dims=3``),
    quantised jointly per image to 256 levels over [0, max of the S + 1 feature images];
    ``FMI = sum_s I(g_s, g_F) / (H(g_s) + H(g_F))`` (Haghighat et al. 2011, normalisation of
    their eq. 9, computed over the whole image rather than over sliding windows). F == S_s
    for both of 2 sources gives 1. Same in both conventions.

    Returns:
        (B,) float64.
    """
    f = as_fused(fused, spatial_dims)
    src = as_sources(sources, f, spatial_dims)
    x = torch.cat([src, f.unsqueeze(1)], 1)  # (B, S+1, *spatial)
    flat = x.flatten(0, 1)
    if spatial_dims == 2:
        sx, sy = sobel_same(flat)
        feats = torch.sqrt(sx * sx + sy * sy)
    else:
        feats = sobel_magnitude_3d(flat)
    feats = feats.view(x.shape)
    peak = feats.flatten(1).amax(1).clamp_min(torch.finfo(feats.dtype).tiny)
    levels = torch.round(feats / peak.view(-1, *([1] * (feats.ndim - 1))) * (_LEVELS - 1)).long()
    lf = levels[:, -1]
    h_f = _entropy_from_counts(_histograms(lf), torch.log)
    total = torch.zeros(f.shape[0], dtype=torch.float64, device=f.device)
    for s in range(src.shape[1]):
        ls = levels[:, s]
        h_s = _entropy_from_counts(_histograms(ls), torch.log)
        mi = _joint_mi(ls, lf, torch.log)
        denom = h_s + h_f
        total = total + torch.where(denom > 0, mi / torch.where(denom > 0, denom, 1.0), 1.0 / 2)
    return total
