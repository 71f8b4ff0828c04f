"""Haghighat's windowed feature mutual information (FMI) on wavelet, DCT, gradient, edge or
pixel features.

The metric of Haghighat, Aghagolzadeh & Seyedarabi (2011) as computed by the authors' Fast-FMI
code (Haghighat & Razian 2014, ``fmi.m``, shipped with MEFB as ``metricsFMI.m``). Features of
each source and of F are compared in every ``w x w`` window (w = 3): each window is min-max
normalised and read as a probability vector of w² cells (column-major order, as MATLAB's
``x(:)``); the joint distribution of a source's and F's vector is Nelsen's mixture of the
product of the marginals and the Fréchet bound (upper for a positive, lower for a negative
Pearson correlation of the two vectors), weighted so that its correlation equals the observed
one; the window's score is the normalised MI ``2 I / (H_S + H_F)``.

One batched tensor implementation for any torch device; the windows are processed in chunks.
``docs/metrics.md`` lists the formula, the conventions and the differences from the
gradient-feature global FMI of ``fusion.fmi``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from fuse4seg.metrics import fusion as fm

__all__ = [
    "FMI_FEATURES",
    "fmi_windowed",
    "fmi_wavelet",
    "fmi_dct",
    "fmi_gradient",
    "fmi_edge",
    "fmi_pixel",
    "matlab_gradient_x",
    "matlab_edge_sobel",
]

#: The feature extractions of ``fmi.m``, all implemented here.
FMI_FEATURES: tuple[str, ...] = ("wavelet", "dct", "gradient", "edge", "none")
Feature = Literal["wavelet", "dct", "gradient", "edge", "none"]

# MATLAB Wavelet Toolbox's discrete Meyer scaling filter (``dmey.mat``, 102 taps: symmetric
# about tap 50, the last tap 0). ``fmi.m`` decomposes with it (``dwt2(x, 'dmey')``); PyWavelets'
# 'dmey' is a different, 62-tap design and gives other sub-band sizes.
_DMEY_HALF = (
    -1.06754713e-06, 9.0422391e-07, 3.1790474e-07, -1.48249686e-06, 1.21850207e-06,
    4.9361831e-07, -2.03604729e-06, 1.68513902e-06, 6.9474288e-07, -2.98242491e-06,
    2.37128175e-06, 1.18420622e-06, -4.26703335e-06, 3.42066573e-06, 1.69867277e-06,
    -6.757326e-06, 5.10285152e-06, 3.42881336e-06, -1.004580737e-05, 7.42738297e-06,
    4.37527643e-06, -1.72802656e-05, 1.421735152e-05, 1.060201359e-05, -3.283006737e-05,
    2.286874237e-05, 2.645260683e-05, -7.267567236e-05, 1.72972015e-05, 0.00010586335588,
    -5.34521877e-05, -9.893345543e-05, -6.612354762e-05, 0.0001139783219, 0.00060775793536,
    -0.00040883876416, -0.0019107202819, 0.00155193926157, 0.00427481806225, -0.00451609544333,
    -0.00780973483285, 0.01078401534427, 0.01230639736499, -0.02269391137934, -0.01719808438302,
    0.04501954358581, 0.02165247163319, -0.09383060025865, -0.02478286152969, 0.31402235238643,
    0.52591095141626,
)  # fmt: skip
_CHUNK = 4096  # windows per chunk on CPU: (chunk, 81) float64 arrays of 2.7 MB


@functools.lru_cache(maxsize=4)
def _dmey_decomposition_filters() -> tuple[torch.Tensor, torch.Tensor]:
    """MATLAB's ``wfilters('dmey')`` Lo_D and Hi_D (float64, CPU): Lo_R = sqrt(2) W / sum(W),
    Hi_R = qmf(Lo_R), Lo_D and Hi_D their reversals."""
    w = torch.tensor(_DMEY_HALF + _DMEY_HALF[-2::-1] + (0.0,), dtype=torch.float64)
    lo_r = w * (math.sqrt(2.0) / w.sum())
    hi_d = lo_r.clone()
    hi_d[0::2] = -hi_d[0::2]  # Hi_D = wrev(qmf(Lo_R)): the even (0-based) taps change sign
    return lo_r.flip(0), hi_d


@functools.lru_cache(maxsize=16)
def _analysis_matrix(n: int) -> torch.Tensor:
    """One axis of MATLAB's ``dwt2(., 'dmey')`` as a matrix (float64, CPU): symmetric
    ('sym', half-point, repeated for short axes) extension by 101 samples, ``conv2(., f,
    'valid')``, outputs 2, 4, ... (1-based). Columns: the low-pass outputs, then the
    high-pass ones. (n, 2 m) with m = (n + 101) // 2."""
    lo, hi = _dmey_decomposition_filters()
    taps = lo.numel()
    ext = taps - 1
    m = (n + ext) // 2
    k = torch.arange(-ext, n + ext) % (2 * n)
    source = torch.where(k < n, k, 2 * n - 1 - k)  # extended position -> sample
    out = torch.zeros(n, 2 * m, dtype=torch.float64)
    t = torch.arange(m).view(-1, 1)
    j = torch.arange(taps).view(1, -1)
    rows = source[1 + 2 * t + j]  # (m, taps): sample under tap j of output t
    for band, kernel in enumerate((lo, hi)):
        cols = (t + band * m).expand(-1, taps)
        weights = kernel.flip(0).expand(m, -1)  # convolution: the flipped filter
        out.index_put_((rows.reshape(-1), cols.reshape(-1)), weights.reshape(-1), accumulate=True)
    return out


def _dwt2_dmey(x: torch.Tensor) -> torch.Tensor:
    """``[cA, cH; cV, cD]`` of MATLAB's ``dwt2(x, 'dmey')`` (extension mode 'sym'):
    (N, H, W) -> (N, 2h, 2w), h = (H + 101) // 2, w = (W + 101) // 2."""
    _, h, w = x.shape
    mw = _analysis_matrix(w).to(x)  # (W, 2 w')
    mh = _analysis_matrix(h).to(x)  # (H, 2 h')
    y = mh.T @ (x @ mw)  # [[rows lo of cols lo, rows lo of cols hi], [rows hi of ...]]
    hh, ww = mh.shape[1] // 2, mw.shape[1] // 2
    ca, cv = y[:, :hh, :ww], y[:, :hh, ww:]
    ch, cd = y[:, hh:, :ww], y[:, hh:, ww:]
    return torch.cat([torch.cat([ca, ch], 2), torch.cat([cv, cd], 2)], 1)


def _rerange(x: torch.Tensor) -> torch.Tensor:
    """``fmi.m``'s ``rerange``: per image (x - min) / (max - min), all ones if constant."""
    flat = x.flatten(1)
    lo = flat.amin(1).view(-1, 1, 1)
    hi = flat.amax(1).view(-1, 1, 1)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1.0), 1.0)


def _dct_matrix(n: int, dtype, device) -> torch.Tensor:
    """Orthonormal DCT-II matrix (MATLAB ``dct``): D[k, i] = a_k cos(pi (2i + 1) k / (2n))."""
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


def matlab_gradient_x(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's ``gradient(x)`` with one output, the derivative along the columns (dim 2 of
    an H x W matrix): (x[:, j+1] - x[:, j-1]) / 2 inside, one-sided differences x[:, 1] -
    x[:, 0] and x[:, W-1] - x[:, W-2] on the first and last column, zeros if W == 1.
    (..., H, W) -> (..., H, W)."""
    out = torch.zeros_like(x)
    if x.shape[-1] > 1:
        out[..., 0] = x[..., 1] - x[..., 0]
        out[..., -1] = x[..., -1] - x[..., -2]
    if x.shape[-1] > 2:
        out[..., 1:-1] = (x[..., 2:] - x[..., :-2]) / 2
    return out


_HUNDRED_EPS = 100 * 2.220446049250313e-16  # MATLAB's 100*eps (double) in edge's thinning


def matlab_edge_sobel(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's ``edge(x)`` (= ``edge(x, 'sobel')``: automatic threshold, direction 'both',
    thinning) for floating-point x, as 0/1 floats. (N, H, W) -> (N, H, W).

    Steps of the Image Processing Toolbox (``edge.m``, its portable code-generation path):
    bx, by = ``imfilter(x, op', 'replicate')``, ``imfilter(x, op, 'replicate')`` with
    op = ``fspecial('sobel') / 8`` = [1 2 1; 0 0 0; -1 -2 -1] / 8 (correlation);
    b = bx² + by²; cutoff = 4 · mean(b) (threshold sqrt(cutoff)); a pixel is an edge where
    b > cutoff and either (|bx| >= |by| - 100 eps and b(r, c-1) <= b(r, c) > b(r, c+1)) or
    (|by| >= |bx| - 100 eps and b(r-1, c) <= b(r, c) > b(r+1, c)); a neighbour outside the
    image passes its test.
    """
    pad = F.pad(x.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)  # (N, H+2, W+2)
    h, w = x.shape[-2:]

    def at(di: int, dj: int) -> torch.Tensor:  # pad shifted by (di, dj) in {-1, 0, 1}
        return pad[:, 1 + di : 1 + di + h, 1 + dj : 1 + dj + w]

    bx = (at(-1, -1) + 2 * at(0, -1) + at(1, -1) - at(-1, 1) - 2 * at(0, 1) - at(1, 1)) / 8
    by = (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1) - at(1, -1) - 2 * at(1, 0) - at(1, 1)) / 8
    b = bx * bx + by * by
    cutoff = (4 * b.flatten(1).sum(1) / (h * w)).view(-1, 1, 1)
    yes = torch.ones_like(b, dtype=torch.bool)
    left, right, up, down = yes.clone(), yes.clone(), yes.clone(), yes.clone()
    left[..., 1:] = b[..., :-1] <= b[..., 1:]  # b(r, c-1) <= b(r, c)
    right[..., :-1] = b[..., :-1] > b[..., 1:]  # b(r, c) > b(r, c+1)
    up[..., 1:, :] = b[..., :-1, :] <= b[..., 1:, :]
    down[..., :-1, :] = b[..., :-1, :] > b[..., 1:, :]
    ax, ay = bx.abs(), by.abs()
    across_columns = (ax >= ay - _HUNDRED_EPS) & left & right
    across_rows = (ay >= ax - _HUNDRED_EPS) & up & down
    return ((b > cutoff) & (across_columns | across_rows)).to(x.dtype)


def _features(x: torch.Tensor, feature: str) -> torch.Tensor:
    """Feature images of ``fmi.m``: (N, H, W) -> (N, H', W')."""
    if feature == "wavelet":
        return _rerange(_dwt2_dmey(x))
    if feature == "dct":
        h, w = x.shape[1:]
        return _dct_matrix(h, x.dtype, x.device) @ x @ _dct_matrix(w, x.dtype, x.device).T
    if feature == "gradient":
        return matlab_gradient_x(x)
    if feature == "edge":
        return matlab_edge_sobel(x)
    return x


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """All 'valid' size x size windows as vectors in MATLAB's column-major order:
    (N, H, W) -> (N * (H - size + 1) * (W - size + 1), size²)."""
    h, w = x.shape[1] - size + 1, x.shape[2] - size + 1
    cols = [x[:, di : di + h, dj : dj + w] for dj in range(size) for di in range(size)]
    return torch.stack(cols, -1).reshape(-1, size * size)  # (N h w, size²)


def _normalise(v: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each window (rows of (M, L)); a flat window becomes all ones."""
    lo = v.amin(1, keepdim=True)
    hi = v.amax(1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (v - lo) / torch.where(span > 0, span, 1.0), 1.0)


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    """-sum p log2|p| over the last axis, zero cells skipped (MATLAB's real(-p log2 p)):
    (M, K) -> (M,)."""
    logs = p.abs().clamp_min_(1e-300).log2_()  # zero cells: 0 * log2(1e-300) = 0
    return -logs.mul_(p).sum(-1)


def _window_fmi(a: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Normalised MI of ``fmi.m`` for each window pair: a (source), f (fused), normalised
    windows (M, L) -> (M,). Shortcuts for identical windows are applied by the caller."""
    m, length = a.shape
    pa = a / a.sum(1, keepdim=True)
    pf = f / f.sum(1, keepdim=True)
    ca, cf = pa.cumsum(1), pf.cumsum(1)
    # Pearson correlation of the two probability vectors; exactly 0 if their product sum is 0
    ta, tf = pa - pa.mean(1, keepdim=True), pf - pf.mean(1, keepdim=True)
    num = (ta * tf).sum(1)
    corr = torch.where(
        num == 0, 0.0, num / torch.sqrt((ta * ta).sum(1) * (tf * tf).sum(1)).clamp_min(1e-300)
    )
    idx = torch.arange(1, length + 1, dtype=a.dtype, device=a.device)

    def sd(p: torch.Tensor) -> torch.Tensor:  # std of the cell index under p
        e, e2 = (p * idx).sum(1), (p * idx * idx).sum(1)
        return torch.sqrt((e2 - e * e).clamp_min(0.0))

    sd_prod = sd(pa) * sd(pf)
    # Cell masses of the Fréchet bound C(i, j) (its second differences, C(0, .) = C(., 0) = 0):
    # the overlap of F's interval (F_i-1, F_i] with A's (A_j-1, A_j] for the upper bound
    # min(F_i, A_j) (corr >= 0), with (1 - A_j, 1 - A_j-1] for the lower bound
    # max(F_i + A_j - 1, 0) (corr < 0).
    positive = (corr >= 0).view(-1, 1)
    ca0 = F.pad(ca, (1, 0))  # (M, L + 1): A_0 = 0, A_1, ..., A_L
    lo = torch.where(positive, ca0[:, :-1], 1.0 - ca0[:, 1:])
    hi = torch.where(positive, ca0[:, 1:], 1.0 - ca0[:, :-1])
    cf0 = F.pad(cf, (1, 0))
    cell = torch.minimum(cf0[:, 1:, None], hi[:, None, :])
    cell.sub_(torch.maximum(cf0[:, :-1, None], lo[:, None, :])).clamp_(min=0.0)  # (M, L, L)
    # covariance of the bound (Hoeffding): sum_ij C(i, j) - F_i A_j, where sum_ij C(i, j)
    # weighs each cell (i, j) by the (L - i + 1)(L - j + 1) sums it enters (1-based)
    rank = torch.arange(length, 0, -1, dtype=a.dtype, device=a.device)
    cov = cell.view(m, -1) @ torch.outer(rank, rank).view(-1) - cf.sum(1) * ca.sum(1)
    ok = (corr != 0) & (sd_prod != 0)
    weight = torch.where(ok, corr * sd_prod / torch.where(ok, cov, 1.0), 0.0)  # phi / theta
    # joint = weight * cell + (1 - weight) * pF_i pA_j  [i over F, j over A]
    joint = cell.mul_(weight.view(-1, 1, 1))
    joint.addcmul_(((1.0 - weight).unsqueeze(1) * pf).unsqueeze(2), pa.unsqueeze(1))
    h_joint = _entropy_bits(joint.view(m, -1))
    h_a, h_f = _entropy_bits(pa), _entropy_bits(pf)
    mi = h_a + h_f - h_joint
    return torch.where(mi == 0, 0.0, 2.0 * mi / torch.where(mi == 0, 1.0, h_a + h_f))


def fmi_windowed(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    feature: Feature = "wavelet",
    convention: fm.Convention = "reference",
    window: int = 3,
    reduction: Literal["sum", "mean"] = "mean",
) -> torch.Tensor:
    """Haghighat's windowed feature mutual information (``fmi.m``, MEFB), higher is better.

    Features: ``"wavelet"`` (MATLAB ``dwt2(x, 'dmey')``, mode 'sym', sub-bands tiled as
    ``[cA, cH; cV, cD]`` and min-max rescaled per image: FMI_w), ``"dct"`` (orthonormal 2D
    DCT-II of the whole image, MATLAB ``dct2``: FMI_dct), ``"gradient"`` (MATLAB
    ``gradient(x)``, the horizontal derivative only: :func:`matlab_gradient_x`, FMI_g),
    ``"edge"`` (MATLAB's binary Sobel edge map ``edge(x)``: :func:`matlab_edge_sobel`,
    FMI_edge) or ``"none"`` (the pixels: FMI_pixel). In every
    'valid' ``window x window`` window of the feature images, ``fmi.m`` scores a source against
    F with the normalised MI of Nelsen's joint distribution (see the module docstring); a
    window whose raw source and F features are identical scores 1. The per-source map is
    averaged over the windows; the sources are averaged (``fmi.m``: (FMI_AF + FMI_BF) / 2) or
    summed (``reduction="sum"``).

    There is no data range: ``"standard"`` values are invariant to a common positive scaling
    of the images. ``convention``: ``"reference"`` reproduces a quirk of ``fmi.m``: F's window
    is overwritten by its normalised version as soon as one source differs from it, so later
    sources are tested for identity against the normalised F (e.g. a flat background window
    in both B and F then scores 0 instead of 1). As a raw B window of values in [0, 1] can
    equal that normalised window, ``"reference"`` pixel and gradient values depend on the
    scale; ``fmi.m`` and MEFB see grey levels 0-255, which is what ``evaluate-fusion`` passes.
    ``"standard"`` tests every source against the raw F window.

    Args:
        sources: (B, S, H, W) or a sequence of S tensors (B, H, W).
        fused: (B, H, W) or (B, 1, H, W).
        feature: "wavelet", "dct", "gradient", "edge" or "none".
        convention: "reference" or "standard" (see above).
        window: odd window size (3 in ``fmi.m``).
        reduction: "mean" (``fmi.m``) or "sum" over the sources.

    Returns:
        (B,) float64 in [0, 1] ("mean") or [0, S] ("sum"); 1 where F equals every source.

    Raises:
        ValueError: unknown feature, convention or reduction, even or too large window.
    """
    fm._check_convention(convention)
    if feature not in FMI_FEATURES:
        raise ValueError(f"feature must be one of {FMI_FEATURES}, got {feature!r}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    if window < 1 or window % 2 != 1:
        raise ValueError(f"window must be an odd positive size, got {window}")
    f = fm.as_fused(fused)
    src = fm.as_sources(sources, f)
    b, s = src.shape[:2]
    feats = _features(torch.cat([src, f.unsqueeze(1)], 1).flatten(0, 1), feature)
    if min(feats.shape[1:]) < window:
        raise ValueError(
            f"feature images {tuple(feats.shape[1:])} are smaller than the window {window}"
        )
    feats = feats.view(b, s + 1, *feats.shape[1:])
    chunk = _CHUNK if f.device.type == "cpu" else 64 * _CHUNK
    per_source = torch.empty(b, s, dtype=feats.dtype, device=feats.device)
    for i in range(b):
        raw_f = _windows(feats[i, s : s + 1], window)  # (n, L)
        raw_src = [_windows(feats[i, k : k + 1], window) for k in range(s)]
        total = torch.zeros(s, dtype=feats.dtype, device=feats.device)
        for start in range(0, raw_f.shape[0], chunk):
            f_raw = raw_f[start : start + chunk]
            f_norm = _normalise(f_raw)
            f_replaced = torch.zeros(f_raw.shape[0], dtype=torch.bool, device=f_raw.device)
            for k in range(s):
                a_raw = raw_src[k][start : start + chunk]
                same = (a_raw == f_raw).all(1)
                if convention == "reference":  # fmi.m compares with F as it stands in its loop
                    same = torch.where(f_replaced, (a_raw == f_norm).all(1), same)
                    f_replaced = f_replaced | ~same
                value = _window_fmi(_normalise(a_raw), f_norm)
                total[k] += torch.where(same, 1.0, value).sum()
        per_source[i] = total / raw_f.shape[0]
    out = per_source.sum(1) if reduction == "sum" else per_source.mean(1)
    return out.double()


def fmi_wavelet(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    reduction: Literal["sum", "mean"] = "mean",
) -> torch.Tensor:
    """FMI_w: :func:`fmi_windowed` on discrete Meyer wavelet features, (B,) float64."""
    return fmi_windowed(sources, fused, "wavelet", convention, reduction=reduction)


def fmi_dct(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    reduction: Literal["sum", "mean"] = "mean",
) -> torch.Tensor:
    """FMI_dct: :func:`fmi_windowed` on 2D DCT features, (B,) float64."""
    return fmi_windowed(sources, fused, "dct", convention, reduction=reduction)


def fmi_gradient(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    reduction: Literal["sum", "mean"] = "mean",
) -> torch.Tensor:
    """FMI_g: :func:`fmi_windowed` on ``fmi.m``'s gradient features (MATLAB ``gradient``,
    horizontal derivative), (B,) float64."""
    return fmi_windowed(sources, fused, "gradient", convention, reduction=reduction)


def fmi_edge(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    reduction: Literal["sum", "mean"] = "mean",
) -> torch.Tensor:
    """FMI_edge: :func:`fmi_windowed` on MATLAB's binary Sobel edge maps, (B,) float64."""
    return fmi_windowed(sources, fused, "edge", convention, reduction=reduction)


def fmi_pixel(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    reduction: Literal["sum", "mean"] = "mean",
) -> torch.Tensor:
    """FMI_pixel: :func:`fmi_windowed` on the pixels (``fmi.m`` feature 'none'), (B,)
    float64."""
    return fmi_windowed(sources, fused, "none", convention, reduction=reduction)
