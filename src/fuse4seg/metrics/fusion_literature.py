"""The fusion literature's further metrics (VIFB, MEFB, SeAFusion, Liu et al. TPAMI 2012).

Nineteen metrics beyond the reference evaluator's: CE, EI, RMSE, MSE, CC, NMI, TE, Qncie, Qsf,
Qm, Piella's Qs / Qw / Qe, Qc, Qy, Qcv, Qcb and Petrovic's Nabf / Labf (Qp, MEF-SSIM and the
windowed FMI_w / FMI_dct have modules of their own: ``phase_congruency.py``, ``mef_ssim.py``,
``windowed_fmi.py``). Each is one batched tensor implementation that runs on any torch device
(on CPU it is the fast path too). Shapes and dtypes follow ``fusion.py``: sources
``(B, S, H, W)`` or a list of ``S`` tensors ``(B, H, W)``, fused ``(B, H, W)``; every function
returns float64 ``(B,)``.

``convention`` keeps the meaning it has in ``fusion.py``: ``"reference"`` reproduces the public
MATLAB toolbox that defines the metric (VIFB, MEFB or Liu's ``imageFusionMetrics``), quirks
included (e.g. the min-max stretch ``normalize1`` before MEFB's histogram metrics, VIFB's RMSE
``sqrt(SSE) / N``); ``"standard"`` uses the paper's formula on grey levels
``x * 255 / data_range``. Where the literature sums over the sources in one place and averages
in another, ``reduction="sum" | "mean"`` names the choice (default: the defining toolbox's).
``docs/metrics.md`` lists every formula, unit, direction and reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from fuse4seg.metrics import fusion as fm
from fuse4seg.metrics._filters import matlab_gaussian_1d, separable_filter

__all__ = [
    "cross_entropy",
    "edge_intensity",
    "rmse",
    "mse",
    "correlation_coefficient",
    "normalized_mutual_information",
    "tsallis_entropy",
    "q_ncie",
    "q_sf",
    "q_m",
    "piella",
    "q_s",
    "q_w",
    "q_e",
    "q_c",
    "q_y",
    "q_cv",
    "q_cb",
    "nabf",
    "labf",
    "petrovic",
]

Reduction = Literal["sum", "mean"]
_LEVELS = 256


# ----------------------------------------------------------------------------- helpers
def _prepare(sources, fused, spatial_dims: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    f = fm.as_fused(fused, spatial_dims)
    return f, fm.as_sources(sources, f, spatial_dims)


def _reduce(per_source: torch.Tensor, reduction: str) -> torch.Tensor:
    """(B, S) -> (B,) by ``"sum"`` or ``"mean"`` over the sources."""
    if reduction == "sum":
        return per_source.sum(1)
    if reduction == "mean":
        return per_source.mean(1)
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def _two_sources(src: torch.Tensor, name: str) -> None:
    if src.shape[1] != 2:
        raise ValueError(f"{name} is defined for exactly 2 sources, got {src.shape[1]}")


def _normalize1(x: torch.Tensor) -> torch.Tensor:
    """Liu's ``normalize1``: per image, round((x - min) / (max - min) * 255), half away from
    zero as MATLAB; an all-zero image is kept. A constant non-zero image gives NaN (0/0), as in
    the toolbox. (N, *spatial) -> same."""
    flat = x.flatten(1)
    shape = (-1,) + (1,) * (x.ndim - 1)
    lo, hi = flat.amin(1).view(shape), flat.amax(1).view(shape)
    y = torch.floor((x - lo) / (hi - lo) * 255.0 + 0.5)
    return torch.where((lo == 0) & (hi == 0), x, y)


def _grey(x: torch.Tensor, convention: str, data_range: float, stretch: bool) -> torch.Tensor:
    """Grey levels on 0-255: the toolbox's min-max stretch (reference, where it applies) or
    ``x * 255 / data_range`` (standard)."""
    if convention == "reference":
        return _normalize1(x) if stretch else x
    return x * (255.0 / data_range) if data_range != 255.0 else x


def _level_images(x: torch.Tensor, convention: str, data_range: float, stretch: bool):
    """Integer levels 0..255 (int64) of grey images for the histogram metrics."""
    g = _grey(x, convention, data_range, stretch)
    return torch.nan_to_num(g).round().clamp_(0, _LEVELS - 1).long()


def _joint_histogram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Joint probabilities p[a, b] of level images (N, ...) -> (N, 256, 256) float64."""
    n = a.shape[0]
    idx = a.flatten(1) * _LEVELS + b.flatten(1)
    idx = idx + torch.arange(n, device=a.device).view(-1, 1) * _LEVELS**2
    counts = torch.bincount(idx.flatten(), minlength=n * _LEVELS**2).view(n, _LEVELS, _LEVELS)
    counts = counts.to(torch.float64)
    return counts / counts.sum((1, 2), keepdim=True)


def _plogp(p: torch.Tensor, dims) -> torch.Tensor:
    """-sum p log2 p over ``dims`` (0 log 0 = 0)."""
    return -(p * torch.log2(torch.where(p > 0, p, 1.0))).sum(dims)


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    y = y.flatten(1)
    xc = x - x.mean(1, keepdim=True)
    yc = y - y.mean(1, keepdim=True)
    return (xc * yc).sum(1) / torch.sqrt(xc.square().sum(1) * yc.square().sum(1))


def _correlate3(x: torch.Tensor, kernel, padding: str = "zeros") -> torch.Tensor:
    """3x3 correlation of (N, H, W), 'same' size with zero, replicate or reflect padding.

    One multiply-add per non-zero tap on shifted views of the padded image (several times
    faster than ``conv2d`` in float64 on CPU).
    """
    h, w = x.shape[-2:]
    if padding == "zeros":
        xp = F.pad(x, (1, 1, 1, 1))
    else:
        mode = {"replicate": "replicate", "reflect": "reflect"}[padding]
        xp = F.pad(x.unsqueeze(1), (1, 1, 1, 1), mode=mode).squeeze(1)
    out = None
    for i in range(3):
        for j in range(3):
            k = float(kernel[i][j])
            if k == 0.0:
                continue
            view = xp[..., i : i + h, j : j + w]
            out = view * k if out is None else out.add_(view, alpha=k)
    return out if out is not None else torch.zeros_like(x)


def _local_moments(x: torch.Tensor, y: torch.Tensor, win: torch.Tensor):
    """Gaussian-weighted local means, variances and covariance, 'valid' (MATLAB ``filter2``).

    x, y: (N, H, W). Returns ``mu_x, mu_y, var_x, var_y, cov`` each (N, H-K+1, W-K+1).
    """
    n = x.shape[0]
    stack = torch.cat([x, y, x * x, y * y, x * y], 0)  # (5N, H, W)
    filt = separable_filter(stack, win.to(x.dtype))
    mx, my, xx, yy, xy = filt.split(n, 0)
    return mx, my, xx - mx * mx, yy - my * my, xy - mx * my


def _ssim_map(mx, my, vx, vy, cxy, c1: float, c2: float) -> torch.Tensor:
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


# ------------------------------------------------------------------ per-source error terms
def cross_entropy(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    data_range: float = 255.0,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """CE (VIFB; Bulanon et al. 2009): ``sum_i p_S(i) log2(p_S(i) / p_F(i))`` per source,
    256 grey levels, bins empty in either histogram skipped (as VIFB). Lower is better.

    ``reduction="mean"`` over the sources (VIFB) or ``"sum"``. Levels are ``round(x)``
    (reference) or over [0, data_range] (standard).
    """
    fm._check_convention(convention)
    f, src = _prepare(sources, fused)
    b, s = src.shape[:2]
    levels = _level_images(
        torch.cat([src, f.unsqueeze(1)], 1).flatten(0, 1),
        convention,
        fm._check_range(data_range),
        stretch=False,
    )
    counts = fm._histograms(levels).view(b, s + 1, _LEVELS)
    p = counts / counts.sum(-1, keepdim=True)
    ps, pf = p[:, :s], p[:, s:]
    ok = (ps > 0) & (pf > 0)
    terms = torch.where(
        ok, ps * torch.log2(torch.where(ok, ps / torch.where(ok, pf, 1.0), 1.0)), 0.0
    )
    return _reduce(terms.sum(-1), reduction)


def edge_intensity(fused: torch.Tensor) -> torch.Tensor:
    """EI (VIFB; Rajalingam & Priya 2018): mean Sobel gradient magnitude ``sqrt(gx^2 + gy^2)``,
    3x3 Sobel [[1,2,1],[0,0,0],[-1,-2,-1]] and its transpose, replicate padding (MATLAB
    ``imfilter(..., 'replicate')``). Grey-level units, same in both conventions. Higher is
    better."""
    f = fm.as_fused(fused)
    sob = [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]
    gx = _correlate3(f, sob, "replicate")
    gy = _correlate3(f, [list(r) for r in zip(*sob, strict=True)], "replicate")
    return torch.sqrt(gx * gx + gy * gy).flatten(1).mean(1).double()


def rmse(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """RMSE between each source and F, averaged over the sources (VIFB). Lower is better.

    Standard: ``sqrt(mean((S - F)^2))`` in grey levels. Reference (VIFB's code):
    ``sqrt(sum((S - F)^2)) / N``, which is the RMSE divided by ``sqrt(N)`` (N pixels).
    """
    fm._check_convention(convention)
    f, src = _prepare(sources, fused)
    sse = (src - f.unsqueeze(1)).square().flatten(2).sum(2)  # (B, S)
    n = f[0].numel()
    per = torch.sqrt(sse) / n if convention == "reference" else torch.sqrt(sse / n)
    return _reduce(per, reduction).double()


def mse(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    data_range: float = 255.0,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """MSE between each source and F, mean over the sources. Lower is better.

    Reference (the reference evaluator's ``MSE``, the MSE inside its PSNR):
    ``mean((S - F)^2)`` in grey levels squared. Standard (SeAFusion and its Python ports):
    on images scaled to [0, 1], ``mean((S - F)^2) / data_range^2``.
    """
    fm._check_convention(convention)
    f, src = _prepare(sources, fused)
    per = (src - f.unsqueeze(1)).square().flatten(2).mean(2)
    if convention == "standard":
        r = fm._check_range(data_range)
        per = per / (r * r)
    return _reduce(per, reduction).double()


def correlation_coefficient(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """CC (the reference evaluator, SeAFusion): Pearson correlation of each source with F,
    mean over the sources, in [-1, 1]. Same in both conventions. Higher is better."""
    f, src = _prepare(sources, fused)
    per = torch.stack([_pearson(src[:, s], f) for s in range(src.shape[1])], 1)
    return _reduce(per, reduction).double()


# ----------------------------------------------------------------------- information
def normalized_mutual_information(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    data_range: float = 255.0,
    reduction: Reduction = "sum",
) -> torch.Tensor:
    """NMI / Q_MI (Hossny et al. 2008; MEFB, Liu's Q_MI):
    ``2 * MI(S, F) / (H(S) + H(F))`` per source, summed (``[0, S]``; 2 for F = A = B with two
    sources) or averaged (``reduction="mean"``, [0, 1]). 256 levels; the reference convention
    first stretches every image to 0-255 (MEFB's ``normalize1``). Higher is better."""
    fm._check_convention(convention)
    f, src = _prepare(sources, fused)
    data_range = fm._check_range(data_range)
    lf = _level_images(f, convention, data_range, stretch=True)
    per = []
    for s in range(src.shape[1]):
        ls = _level_images(src[:, s], convention, data_range, stretch=True)
        p = _joint_histogram(ls, lf)
        h_s, h_f, h_sf = _plogp(p.sum(2), 1), _plogp(p.sum(1), 1), _plogp(p, (1, 2))
        per.append(2.0 * (h_s + h_f - h_sf) / (h_s + h_f))
    return _reduce(torch.stack(per, 1), reduction)


def tsallis_entropy(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    data_range: float = 255.0,
    q: float = 1.85,
    reduction: Reduction = "sum",
) -> torch.Tensor:
    """TE / Q_TE (Cvejic et al. 2006): Tsallis mutual information of order q (1.85),
    ``I_q(S, F) = (1 - sum p(s, f)^q / (p(s) p(f))^(q - 1)) / (1 - q)``, summed over the
    sources. Higher is better.

    Reference (MEFB's / Liu's ``tsallis.m``): images stretched to 0-255 and the marginals
    indexed transposed, ``p(s, f)^q / (p_F(s) p_S(f))^(q - 1)``, skipping cells whose
    product is 0. Standard: the formula above, levels over [0, data_range].
    """
    fm._check_convention(convention)
    if q == 1.0:
        raise ValueError("q must differ from 1 (q = 1 is Shannon mutual information)")
    f, src = _prepare(sources, fused)
    data_range = fm._check_range(data_range)
    lf = _level_images(f, convention, data_range, stretch=True)
    per = []
    for s in range(src.shape[1]):
        ls = _level_images(src[:, s], convention, data_range, stretch=True)
        p = _joint_histogram(ls, lf)  # p[s_level, f_level]
        p_s, p_f = p.sum(2), p.sum(1)
        if convention == "reference":
            prod = p_f.unsqueeze(2) * p_s.unsqueeze(1)  # [i, j] = p_F(i) p_S(j)
        else:
            prod = p_s.unsqueeze(2) * p_f.unsqueeze(1)
        ok = (prod != 0) & (p > 0)
        terms = torch.where(ok, p.pow(q) / torch.where(ok, prod, 1.0).pow(q - 1.0), 0.0)
        per.append((1.0 - terms.sum((1, 2))) / (1.0 - q))
    return _reduce(torch.stack(per, 1), reduction)


def q_ncie(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    data_range: float = 255.0,
) -> torch.Tensor:
    """Q_NCIE (Wang et al. 2005, 2008): nonlinear correlation information entropy of the
    S + 1 images, in [0, 1]; higher is better.

    ``NCC(X, Y) = (H(X) + H(Y) - H(X, Y)) / log2(256)`` on 256 levels; R is the (S+1)x(S+1)
    matrix with ones on the diagonal and the pairwise NCC elsewhere, with eigenvalues l_i;
    ``Q = 1 + sum_i (l_i / K) log_256(l_i / K)``, K = S + 1 (non-positive eigenvalues add 0).
    Reference (Liu / MEFB): images stretched to 0-255 first.
    """
    fm._check_convention(convention)
    f, src = _prepare(sources, fused)
    data_range = fm._check_range(data_range)
    imgs = torch.cat([src, f.unsqueeze(1)], 1)
    b, k = imgs.shape[:2]
    levels = [_level_images(imgs[:, i], convention, data_range, stretch=True) for i in range(k)]
    r = torch.eye(k, dtype=torch.float64, device=f.device).repeat(b, 1, 1)
    for i in range(k):
        for j in range(i + 1, k):
            p = _joint_histogram(levels[i], levels[j])
            ncc = (_plogp(p.sum(2), 1) + _plogp(p.sum(1), 1) - _plogp(p, (1, 2))) / 8.0
            r[:, i, j] = ncc
            r[:, j, i] = ncc
    lam = torch.linalg.eigvalsh(r.cpu()).to(f.device) / k  # (B, K)
    terms = torch.where(lam > 0, lam * torch.log2(torch.where(lam > 0, lam, 1.0)), 0.0)
    return 1.0 + terms.sum(1) / 8.0


# ------------------------------------------------------------------------- gradients
def q_sf(sources: torch.Tensor | Sequence[torch.Tensor], fused: torch.Tensor) -> torch.Tensor:
    """Q_SF (Zheng et al. 2007, as Liu's ``metricZheng.m``): ``(SF_F - SF_R) / SF_R``.

    SF over four directions, each squared difference summed and divided by the pixel count
    N = H W: row, column, main diagonal and secondary diagonal (the diagonals weighted by
    sqrt(2)/2). SF_R uses, per pixel and direction, the largest absolute difference over the
    sources. 0 is ideal; negative means detail lost, positive detail added. Same in both
    conventions.
    """
    f, src = _prepare(sources, fused)
    n = f[0].numel()
    wd = math.sqrt(2.0) / 2.0

    def diffs(x: torch.Tensor) -> list[torch.Tensor]:  # (..., H, W)
        return [
            x[..., :, :-1] - x[..., :, 1:],  # row (horizontal)
            x[..., :-1, :] - x[..., 1:, :],  # column (vertical)
            x[..., 1:, 1:] - x[..., :-1, :-1],  # main diagonal
            x[..., 1:, :-1] - x[..., :-1, 1:],  # secondary diagonal
        ]

    weights = (1.0, 1.0, wd, wd)
    sf_f = sum(w * d.square().flatten(1).sum(1) for w, d in zip(weights, diffs(f), strict=True))
    sf_r = sum(
        w * d.abs().amax(1).square().flatten(1).sum(1)
        for w, d in zip(weights, diffs(src), strict=True)
    )
    sf_f, sf_r = torch.sqrt(sf_f / n), torch.sqrt(sf_r / n)
    return ((sf_f - sf_r) / sf_r).double()


def _haar_level(x: torch.Tensor):
    """One level of matlabPyrTools' ``buildWpyr(x, ., 'haar')`` (filter [1, 1]/sqrt(2),
    sampling from the second sample, so an odd last row / column is dropped):
    (N, H, W) -> lolo, (lohi, hilo, hihi), each (N, H // 2, W // 2)."""
    c = 1.0 / math.sqrt(2.0)
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    top, bottom = x[..., 0:h:2, :w], x[..., 1:h:2, :w]
    lo, hi = top * c + bottom * c, bottom * c - top * c  # rows: [1, 1] / sqrt 2, [-1, 1] / sqrt 2

    def cols(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        left, right = y[..., 0::2], y[..., 1::2]
        return left * c + right * c, right * c - left * c

    lolo, hilo = cols(lo)
    lohi, hihi = cols(hi)
    return lolo, (lohi, hilo, hihi)


def q_m(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    data_range: float = 255.0,
) -> torch.Tensor:
    """Q_M (Wang & Liu 2008, multiscale wavelet edge preservation; Liu's ``metricPWW.m``), in
    [0, 3], higher is better.

    Two-level Haar wavelet pyramid (matlabPyrTools' ``buildWpyr``, 'haar') of every image. At
    level l, with the detail bands (H, V, D): edge strength ``W_s = H_s^2 + V_s^2 + D_s^2``,
    edge preservation ``EP_s = exp(-|H_s - H_F|) + exp(-|V_s - V_F|) + exp(-|D_s - D_F|)``
    (each term at most 1, so EP <= 3), and
    ``Q_l = sum_s sum EP_s W_s / sum_s sum W_s``; ``Q_M = Q_1^(2/3) Q_2^(1/3)``. F = every
    source gives 3. Odd sizes drop the last row / column at each level (as ``buildWpyr``).

    Reference: the images as given (grey levels 0-255, as the toolbox reads them); standard:
    ``x * 255 / data_range`` (EP depends on the absolute coefficient differences).

    Args:
        sources: (B, S, H, W) or a sequence of S tensors (B, H, W).
        fused: (B, H, W) or (B, 1, H, W); at least 4 px along each axis.

    Returns:
        (B,) float64; NaN for images without detail (0/0).
    """
    fm._check_convention(convention)
    f, src = _prepare(sources, fused)
    if min(f.shape[1:]) < 4:
        raise ValueError(f"Q_M needs images of at least 4 px (2 levels), got {tuple(f.shape)}")
    b, s = src.shape[:2]
    x = _grey(torch.cat([src, f.unsqueeze(1)], 1), convention, fm._check_range(data_range), False)
    x = x.flatten(0, 1)  # (B (S+1), H, W)
    out = torch.ones(b, dtype=x.dtype, device=x.device)
    for exponent in (2.0 / 3.0, 1.0 / 3.0):
        x, bands = _haar_level(x)
        bands = [band.view(b, s + 1, *band.shape[1:]) for band in bands]
        strength = sum(band[:, :s].square() for band in bands)  # (B, S, h, w)
        keep = sum(torch.exp(-(band[:, :s] - band[:, s:]).abs()) for band in bands)
        q = (keep * strength).flatten(1).sum(1) / strength.flatten(1).sum(1)
        out = out * q.pow(exponent)
    return out.double()


_NABF_PARAMS = {"Td": 2.0, "Lg": 1.5, "Nrg": 0.9999, "kg": 19.0, "sg": 0.5, "Nra": 0.9995,
                "ka": 22.0, "sa": 0.5}  # fmt: skip


def _petrovic_terms(src: torch.Tensor, f: torch.Tensor, weak_edge_weight: float):
    """Kumar's Petrovic terms: (g_s, g_F, Q_sF, w_s) with g: (B, S, H, W) etc."""
    b, s = src.shape[:2]
    x = torch.cat([src, f.unsqueeze(1)], 1).flatten(0, 1)  # (B(S+1), H, W)
    # Kumar's sobel_fn: kernels / 8, periodic (mirror) extension by one pixel
    gv = _correlate3(x, [[0.125, 0.0, -0.125], [0.25, 0.0, -0.25], [0.125, 0.0, -0.125]], "reflect")
    gh = _correlate3(x, [[0.125, 0.25, 0.125], [0.0, 0.0, 0.0], [-0.125, -0.25, -0.125]], "reflect")
    g = torch.sqrt(gh * gh + gv * gv).view(b, s + 1, *x.shape[1:])
    ang = torch.atan(gv / gh).masked_fill_((gv == 0) & (gh == 0), 0.0)
    ang = ang.view(b, s + 1, *x.shape[1:])
    g_s, g_f = g[:, :s], g[:, s:]
    a_s, a_f = ang[:, :s], ang[:, s:]
    ratio = torch.where(
        g_s > g_f, g_f / torch.where(g_s > 0, g_s, 1.0), g_s / torch.where(g_f > 0, g_f, 1.0)
    )
    ratio = torch.where((g_s == 0) | (g_f == 0), 0.0, ratio)
    orient = ((a_s - a_f).abs() - math.pi / 2).abs() * (2.0 / math.pi)
    p = _NABF_PARAMS
    q_g = p["Nrg"] / (1.0 + torch.exp(-p["kg"] * (ratio - p["sg"])))
    q_a = p["Nra"] / (1.0 + torch.exp(-p["ka"] * (orient - p["sa"])))
    q = torch.sqrt(q_g * q_a)
    w = torch.where(g_s >= p["Td"], g_s.pow(p["Lg"]), weak_edge_weight)
    return g_s, g_f, q, w


def petrovic(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    weak_edge_weight: float = 0.001,
) -> dict[str, torch.Tensor]:
    """N_abf and L_abf from one pass over the Petrovic terms (see :func:`nabf`, :func:`labf`).

    Returns:
        ``{"Nabf": (B,), "Labf": (B,)}`` float64.
    """
    f, src = _prepare(sources, fused)
    g_s, g_f, q, w = _petrovic_terms(src, f, weak_edge_weight)
    loss = (1.0 - q) * w
    am = (g_f > g_s).all(1, keepdim=True)  # artefacts: F stronger than every source
    r = (g_f <= g_s).any(1, keepdim=True)  # loss: F not stronger than some source
    total = w.flatten(1).sum(1)
    return {
        "Nabf": ((am * loss).flatten(1).sum(1) / total).double(),
        "Labf": ((r * loss).flatten(1).sum(1) / total).double(),
    }


def nabf(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    weak_edge_weight: float = 0.001,
) -> torch.Tensor:
    """N_abf, fusion artefacts (Petrovic & Xydeas 2005, modified by Shreyamsha Kumar 2013; the
    SeAFusion / Kumar MATLAB code), in [0, 1]. **Lower is better.**

    ``N = sum(AM * sum_s (1 - Q_sF) w_s) / sum_s sum(w_s)`` with AM = 1 where g_F exceeds the
    edge strength of every source. Sobel / 8 with mirrored borders; Q_sF = sqrt(Qg Qa) with
    Qg = 0.9999 / (1 + e^(-19 (G - 0.5))), Qa = 0.9995 / (1 + e^(-22 (A - 0.5))),
    G = min/max of the edge strengths (0 where one is 0), A = ||a_s - a_F| - pi/2| 2/pi;
    w_s = g_s^1.5 where g_s >= 2, else ``weak_edge_weight`` (0.001 in the MATLAB code; the
    common Python port uses 0). Same in both conventions.
    """
    return petrovic(sources, fused, weak_edge_weight)["Nabf"]


def labf(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    weak_edge_weight: float = 0.001,
) -> torch.Tensor:
    """L_abf, edge information lost (Petrovic & Xydeas 2005; Kumar's MATLAB code), [0, 1].
    **Lower is better.** Same terms as :func:`nabf`, counted where g_F <= g_s for some
    source: ``sum(r * sum_s (1 - Q_sF) w_s) / sum_s sum(w_s)``."""
    return petrovic(sources, fused, weak_edge_weight)["Labf"]


# ------------------------------------------------------------- structural similarity
def _piella_maps(src: torch.Tensor, f: torch.Tensor, c1: float, c2: float):
    """Per-window SSIM of F with each source (B, S, h, w), the saliency weights lambda_s
    (B, S, h, w) and the window weights c (B, h, w), 11x11 Gaussian window (sigma 1.5)."""
    b, s = src.shape[:2]
    win = matlab_gaussian_1d(11, 1.5)
    mf, ms, vf, vs, cfs = _local_moments(
        f.unsqueeze(1).expand_as(src).flatten(0, 1), src.flatten(0, 1), win
    )
    smap = _ssim_map(mf, ms, vf, vs, cfs, c1, c2).view(b, s, *mf.shape[1:])
    var = vs.view(b, s, *mf.shape[1:])
    total = var.sum(1, keepdim=True)
    var = var + (total == 0) * 0.5  # as Liu's code: flat windows weigh the sources equally
    lam = var / var.sum(1, keepdim=True)
    c = var.amax(1)
    return smap, lam, c


def piella(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    data_range: float = 255.0,
    alpha: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Piella & Heijmans (2003) fusion quality indices Qs, Qw and Qe in one pass.

    Local SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K = 0.01 / 0.03, L = 255
    (reference) or ``data_range`` (standard), 'valid') between F and each source;
    lambda_s = sigma_s^2 / sum_t sigma_t^2 (1/S where all are 0);
    ``Qs = mean_w sum_s lambda_s SSIM(F, S_s | w)``;
    ``Qw = sum_w c(w) sum_s lambda_s SSIM(F, S_s | w)``, c = max_s sigma_s^2 normalised to sum 1;
    ``Qe = Qw^(1 - alpha) * Qw(F', S')^alpha`` on Prewitt edge magnitudes (zero padding);
    alpha = 1 (Liu's toolbox and MEFB, whose "Qw" column is this Qe). Higher is better.

    Returns:
        ``{"Qs": (B,), "Qw": (B,), "Qe": (B,)}`` float64.
    """
    fm._check_convention(convention)
    f, src = _prepare(sources, fused)
    if min(f.shape[1:]) < 11:
        raise ValueError(f"Piella's indices need images of at least 11 px, got {tuple(f.shape)}")
    big_l = 255.0 if convention == "reference" else fm._check_range(data_range)
    c1, c2 = (0.01 * big_l) ** 2, (0.03 * big_l) ** 2
    smap, lam, c = _piella_maps(src, f, c1, c2)
    q_map = (lam * smap).sum(1)
    qs = q_map.flatten(1).mean(1)
    qw = (c * q_map).flatten(1).sum(1) / c.flatten(1).sum(1)
    px = [[1.0, 0.0, -1.0]] * 3
    py = [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]]
    x = torch.cat([src, f.unsqueeze(1)], 1).flatten(0, 1)
    ex, ey = _correlate3(x, px), _correlate3(x, py)
    edges = torch.sqrt(ex * ex + ey * ey).view(f.shape[0], -1, *f.shape[1:])
    e_smap, e_lam, e_c = _piella_maps(edges[:, :-1], edges[:, -1], c1, c2)
    e_q = (e_lam * e_smap).sum(1)
    qw_edge = (e_c * e_q).flatten(1).sum(1) / e_c.flatten(1).sum(1)
    qe = qw_edge if alpha == 1.0 else qw.pow(1.0 - alpha) * qw_edge.pow(alpha)
    return {"Qs": qs.double(), "Qw": qw.double(), "Qe": qe.double()}


def q_s(sources, fused, convention: fm.Convention = "reference", data_range: float = 255.0):
    """Piella's fusion quality index Qs (see :func:`piella`). Higher is better."""
    return piella(sources, fused, convention, data_range)["Qs"]


def q_w(sources, fused, convention: fm.Convention = "reference", data_range: float = 255.0):
    """Piella's weighted fusion quality index Qw (see :func:`piella`). Higher is better."""
    return piella(sources, fused, convention, data_range)["Qw"]


def q_e(
    sources,
    fused,
    convention: fm.Convention = "reference",
    data_range: float = 255.0,
    alpha: float = 1.0,
):
    """Piella's edge-dependent fusion quality index Qe (see :func:`piella`). Higher is better."""
    return piella(sources, fused, convention, data_range, alpha)["Qe"]


_YANG_C = 2e-16  # the toolbox's ssim_yang: a 7x7 Gaussian (sigma 1.5) and C1 = C2 = 2e-16


def _yang_moments(x: torch.Tensor, y: torch.Tensor):
    if min(x.shape[1:]) < 11:
        raise ValueError(f"Qc and Qy need images of at least 11 px, got {tuple(x.shape)}")
    return _local_moments(x, y, matlab_gaussian_1d(7, 1.5))


def q_c(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
) -> torch.Tensor:
    """Q_C (Cvejic et al. 2005/2006; Liu's ``metricCvejic.m``, MEFB), exactly 2 sources.

    Per 7x7 Gaussian window (sigma 1.5, 'valid'), ``w = s_AF / (s_AF + s_BF)`` (local
    covariances) and ``Q = mean(w Q(A, F) + (1 - w) Q(B, F))`` with the universal quality index
    Q (SSIM with C1 = C2 = 2e-16); windows where w is undefined (0/0) are left out.
    Reference (the toolbox): where w < 0 the window scores 0, where w > 1 it scores 1.
    Standard (the paper): w is clipped to [0, 1]. Higher is better.
    """
    fm._check_convention(convention)
    f, src = _prepare(sources, fused)
    _two_sources(src, "Qc")
    m_af = _yang_moments(src[:, 0], f)
    m_bf = _yang_moments(src[:, 1], f)
    q_af = _ssim_map(*m_af, _YANG_C, _YANG_C)
    q_bf = _ssim_map(*m_bf, _YANG_C, _YANG_C)
    w = m_af[4] / (m_af[4] + m_bf[4])
    if convention == "reference":
        sim = w * q_af + (1 - w) * q_bf
        sim = torch.where(w < 0, 0.0, torch.where(w > 1, 1.0, sim))
    else:
        wc = w.clamp(0.0, 1.0)
        sim = wc * q_af + (1 - wc) * q_bf
    return _nanmean(sim)


def _nanmean(x: torch.Tensor) -> torch.Tensor:
    """Mean over everything but the batch axis, NaN left out: (B, ...) -> (B,) float64."""
    flat = x.flatten(1)
    ok = ~torch.isnan(flat)
    return (torch.where(ok, flat, 0.0).sum(1) / ok.sum(1)).double()


def q_y(sources: torch.Tensor | Sequence[torch.Tensor], fused: torch.Tensor) -> torch.Tensor:
    """Q_Y (Yang et al. 2008; Liu's ``metricYang.m``, MEFB), exactly 2 sources.

    Per 7x7 Gaussian window (sigma 1.5, 'valid', C1 = C2 = 2e-16): where SSIM(A, B) >= 0.75,
    ``l SSIM(A, F) + (1 - l) SSIM(B, F)`` with l = s_A^2 / (s_A^2 + s_B^2); elsewhere
    ``max(SSIM(A, F), SSIM(B, F))``; mean over the windows, windows with an undefined l
    (both sources flat) left out as in the toolbox. Same in both conventions. Higher is
    better.
    """
    f, src = _prepare(sources, fused)
    _two_sources(src, "Qy")
    a, b = src[:, 0], src[:, 1]
    m_ab = _yang_moments(a, b)
    s_ab = _ssim_map(*m_ab, _YANG_C, _YANG_C)
    s_af = _ssim_map(*_yang_moments(a, f), _YANG_C, _YANG_C)
    s_bf = _ssim_map(*_yang_moments(b, f), _YANG_C, _YANG_C)
    lam = m_ab[2] / (m_ab[2] + m_ab[3])
    close = s_ab >= 0.75
    # NaN * 0 stays NaN, as in the toolbox: windows with an undefined lambda are dropped
    q = (lam * s_af + (1 - lam) * s_bf) * close + torch.maximum(s_af, s_bf) * (~close)
    return _nanmean(q)


# --------------------------------------------------------------- human perception
def _freq_radius(h: int, w: int, scale_h: float, scale_w: float, device) -> torch.Tensor:
    """MATLAB ``freqspace([h, w], 'meshgrid')`` scaled by (scale_w, scale_h), as radius
    sqrt(u^2 + v^2), rearranged to FFT order (ifftshift). (h, w) float64."""
    fv = (torch.arange(h, dtype=torch.float64, device=device) - h // 2) * (2.0 / h) * scale_h
    fu = (torch.arange(w, dtype=torch.float64, device=device) - w // 2) * (2.0 / w) * scale_w
    r = torch.sqrt(fv.view(-1, 1).square() + fu.view(1, -1).square())
    return torch.fft.ifftshift(r)


def _fft_filter(x: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """Real part of ifft2(fft2(x) * response) for (N, H, W)."""
    return torch.fft.ifft2(torch.fft.fft2(x) * response).real


def _blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W) -> (N, nh, nw, size*size) blocks, zero padded at the far edges (blkproc)."""
    n, h, w = x.shape
    ph, pw = -h % size, -w % size
    x = F.pad(x, (0, pw, 0, ph))
    nh, nw = x.shape[1] // size, x.shape[2] // size
    return x.view(n, nh, size, nw, size).permute(0, 1, 3, 2, 4).reshape(n, nh, nw, size * size)


def q_cv(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    data_range: float = 255.0,
    alpha: float = 5.0,
    window: int = 16,
) -> torch.Tensor:
    """Q_CV (Chen & Varshney 2007; Liu's ``metricChen.m``, VIFB). **Lower is better.**

    On 16x16 blocks (zero padded at the far edges): saliency l_s = sum of g_s^alpha (Sobel
    magnitude, zero padding, alpha = 5); the difference S_s - F filtered in the frequency
    domain by the Mannos-Sakrison CSF ``2.6 (0.0192 + 0.144 r) exp(-(0.144 r)^1.1)`` with
    r the radius of MATLAB's ``freqspace`` grid times (W/8, H/8);
    D_s = block mean of the filtered difference squared;
    ``Q = sum_blocks sum_s l_s D_s / sum_blocks sum_s l_s``.
    Reference: images stretched to 0-255 first (``normalize1``); standard: ``x * 255 /
    data_range``.
    """
    fm._check_convention(convention)
    f, src = _prepare(sources, fused)
    data_range = fm._check_range(data_range)
    b, s = src.shape[:2]
    x = torch.cat([src, f.unsqueeze(1)], 1).flatten(0, 1)
    x = _grey(x, convention, data_range, stretch=True).view(b, s + 1, *f.shape[1:])
    src_g, f_g = x[:, :s].flatten(0, 1), x[:, s]
    sob_x = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]
    sob_y = [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]
    gx, gy = _correlate3(src_g, sob_x), _correlate3(src_g, sob_y)
    sal = _blocks(torch.sqrt(gx * gx + gy * gy).pow(alpha), window).sum(-1)  # (BS, nh, nw)
    h, w = f.shape[1:]
    r = _freq_radius(h, w, h / 8.0, w / 8.0, f.device)
    csf = 2.6 * (0.0192 + 0.144 * r) * torch.exp(-torch.pow(0.144 * r, 1.1))
    diff = src_g - f_g.repeat_interleave(s, 0)
    d = _blocks(_fft_filter(diff, csf).square(), window).mean(-1)  # (BS, nh, nw)
    sal, d = sal.view(b, -1), d.view(b, -1)
    return ((sal * d).sum(1) / sal.sum(1)).double()


def q_cb(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    data_range: float = 255.0,
) -> torch.Tensor:
    """Q_CB (Chen & Blum 2009; Liu's ``metricChenBlum.m``, VIFB), in [0, 1]. Higher is better.

    Each image is filtered in the frequency domain by the CSF
    ``exp(-(r / 15.3870)^2) - 0.7622 exp(-(r / 1.3456)^2)`` (r: MATLAB ``freqspace`` radius
    times (W/30, H/30)); local contrast ``C = |G2 * I / G4 * I - 1|`` with unnormalised 31x31
    Gaussians (sigma 2 and 4, zero padding); masked contrast ``C' = C^3 / (C^2 + 1e-4)``;
    ``Q_sF = min(C'_s, C'_F) / max(C'_s, C'_F)`` (the toolbox computes it as a masked sum,
    which is NaN where a C' is exactly 0: reproduced in the reference convention);
    saliency l_s = C'_s^2 / sum_t C'_t^2 (NaN where all are 0, as in the toolbox);
    ``Q = mean(sum_s l_s Q_sF)``. Reference: images stretched to 0-255 (``normalize1``).
    """
    fm._check_convention(convention)
    f, src = _prepare(sources, fused)
    data_range = fm._check_range(data_range)
    b, s = src.shape[:2]
    h, w = f.shape[1:]
    x = torch.cat([src, f.unsqueeze(1)], 1).flatten(0, 1)
    x = _grey(x, convention, data_range, stretch=True)
    r = _freq_radius(h, w, h / 30.0, w / 30.0, f.device)
    csf = torch.exp(-(r / 15.3870).square()) - 0.7622 * torch.exp(-(r / 1.3456).square())
    x = _fft_filter(x, csf)
    xp = F.pad(x, (15, 15, 15, 15))
    t = torch.arange(-15, 16, dtype=torch.float64, device=f.device)

    def gauss(sigma: float) -> torch.Tensor:
        g = torch.exp(-(t * t) / (2 * sigma * sigma))
        return separable_filter(xp, g) / (2 * math.pi * sigma * sigma)

    c = (gauss(2.0) / gauss(4.0) - 1.0).abs()
    cp = c.pow(3) / (c.square() + 1e-4)
    cp = cp.view(b, s + 1, h, w)
    c_s, c_f = cp[:, :s], cp[:, s:]
    if convention == "reference":  # the toolbox's masked sum: 0 * inf = NaN where C' = 0
        mask = (c_s < c_f).to(c_s.dtype)
        q = (c_s / c_f) * mask + (c_f / c_s) * (1 - mask)
    else:
        q = torch.where(c_s < c_f, c_s / c_f, c_f / c_s)
    lam = c_s.square() / c_s.square().sum(1, keepdim=True)
    return (lam * q).sum(1).flatten(1).mean(1).double()
