"""MEF-SSIM: the structural similarity of a fused image with the best structure its sources
offer (Ma, Zeng & Wang 2015, IEEE TIP 24(11), "Perceptual quality assessment for
multi-exposure image fusion"; the authors' ``mef_ms_ssim.m`` / ``mef_ssim.m``, MEFB's
``metricsMEF_SSIM.m``).

In every 11x11 window the sources' mean-removed patches are combined into one desired patch
(strength: the largest patch norm; structure: a weighted mean of the normalised structures,
weights set by a consistency measure of the sources), which is compared with F's patch by the
SSIM contrast-structure term. Three scales, pooled by a weighted product. The window
statistics come from separable box and Gaussian filters of the images and their pairwise
products, so one batched tensor implementation serves any torch device. ``docs/metrics.md``
lists the formula and conventions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fuse4seg.metrics import fusion as fm
from fuse4seg.metrics._filters import box_filter_valid, matlab_gaussian_1d, separable_filter

__all__ = ["mef_ssim", "MEF_SSIM_WEIGHTS"]

#: Scale weights of ``mef_ms_ssim.m`` (finest first), normalised to sum 1 there.
MEF_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001)
_WIN = 11  # the 11x11 windows of mef_ssim.m
_EPS = 2.220446049250313e-16  # MATLAB eps


def _single_scale(src: torch.Tensor, f: torch.Tensor, c: float) -> torch.Tensor:
    """``mef_ssim.m`` at one scale: src (B, S, H, W), f (B, H, W) -> (B,) mean quality."""
    b, s, h, w = src.shape
    n = _WIN * _WIN
    gauss = matlab_gaussian_1d(_WIN, 1.5).to(f)
    pairs = [(k, m) for k in range(s) for m in range(k, s)]
    prods = torch.stack([src[:, k] * src[:, m] for k, m in pairs], 1)  # (B, P, H, W)
    # box (the code's square window) statistics: means and n * covariances of the sources
    box_mu = box_filter_valid(src.flatten(0, 1), _WIN).view(b, s, h - _WIN + 1, -1)
    box_prod = box_filter_valid(prods.flatten(0, 1), _WIN).view(b, len(pairs), *box_mu.shape[2:])
    gram = torch.empty(b, s, s, *box_mu.shape[2:], dtype=f.dtype, device=f.device)
    for p, (k, m) in enumerate(pairs):  # <c_k, c_m> of the mean-removed patches
        g = n * (box_prod[:, p] - box_mu[:, k] * box_mu[:, m])
        gram[:, k, m] = g
        gram[:, m, k] = g
    norms = torch.sqrt(torch.diagonal(gram, dim1=1, dim2=2).movedim(-1, 1).clamp_min(0.0))
    ed = norms + 0.001  # patch strength, (B, S, h, w)
    # consistency R = ||sum_k c_k|| / sum_k ||c_k|| -> exponent p = tan(pi R / 2), at most 10
    total = torch.sqrt(gram.sum((1, 2)).clamp_min(0.0))
    r = (total + _EPS) / (norms.sum(1) + _EPS)
    r = torch.where(r > 1, 1.0 - _EPS, r)
    p = torch.tan(math.pi / 2 * r).clamp_max(10.0)
    weights = (ed / _WIN).pow(p.unsqueeze(1)) + _EPS
    weights = weights / weights.sum(1, keepdim=True)
    a = weights / ed  # desired patch: sum_k a_k c_k, rescaled to norm max_k ed_k
    norm_r = torch.sqrt(torch.einsum("bkhw,bkmhw,bmhw->bhw", a, gram, a).clamp_min(0.0))
    scale = torch.where(norm_r > 0, ed.amax(1) / torch.where(norm_r > 0, norm_r, 1.0), 1.0)
    coef = a * scale.unsqueeze(1)  # (B, S, h, w)
    # Gaussian-weighted (co)variances of the desired patch and F's patch
    g_src = separable_filter(src.flatten(0, 1), gauss).view(b, s, *coef.shape[2:])
    g_prod = separable_filter(prods.flatten(0, 1), gauss).view(b, len(pairs), *coef.shape[2:])
    g_f = separable_filter(f, gauss)
    var_f = separable_filter(f * f, gauss) - g_f * g_f
    cov_f = separable_filter((src * f.unsqueeze(1)).flatten(0, 1), gauss).view(g_src.shape)
    cov_f = cov_f - g_src * g_f.unsqueeze(1)
    var_r = torch.zeros_like(var_f)
    for p_idx, (k, m) in enumerate(pairs):
        term = coef[:, k] * coef[:, m] * (g_prod[:, p_idx] - g_src[:, k] * g_src[:, m])
        var_r = var_r + (term if k == m else 2.0 * term)
    cov_rf = (coef * cov_f).sum(1)
    q = (2.0 * cov_rf + c) / (var_r + var_f + c)
    return q.flatten(1).mean(1)


def _downsample(x: torch.Tensor) -> torch.Tensor:
    """``imfilter(x, ones(2)/4, 'symmetric', 'same')`` then every 2nd pixel from the first:
    2x2 block means, an odd last row/column averaged with its mirror. (N, H, W) ->
    (N, ceil(H/2), ceil(W/2))."""
    h, w = x.shape[-2:]
    x = F.pad(x.unsqueeze(1), (0, w % 2, 0, h % 2), mode="replicate").squeeze(1)
    return 0.25 * (
        x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]
    )


def mef_ssim(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    data_range: float = 255.0,
    weights: Sequence[float] = MEF_SSIM_WEIGHTS,
    k: float = 0.03,
) -> torch.Tensor:
    """MEF-SSIM (Ma, Zeng & Wang 2015; ``mef_ms_ssim.m``, MEFB's "MEF_SSIM" column), higher is
    better, at most 1.

    Per 11x11 window (every 'valid' position) with the sources' mean-removed patches c_k:
    strength ``ed_k = ||c_k|| + 0.001``; consistency ``R = ||sum c_k|| / sum ||c_k||``
    (with MATLAB's eps), exponent ``p = min(tan(pi R / 2), 10)``; weights
    ``(ed_k / 11)^p + eps`` normalised over k; desired patch
    ``r = sum_k w_k c_k / ed_k`` rescaled to norm ``max_k ed_k``; score
    ``q = (2 s_rF + C) / (s_r^2 + s_F^2 + C)`` with Gaussian (11x11, sigma 1.5) weighted
    (co)variances and ``C = (k 255)^2``. Q_l is the mean of q at scale l; scale l + 1 is scale
    l filtered by a 2x2 mean ('symmetric') and subsampled; ``MEF-SSIM = prod_l Q_l^beta_l``,
    beta = ``weights`` normalised to sum 1 (3 scales). A negative Q_l gives NaN (MATLAB: a
    complex number).

    Reference: the images as given (grey levels 0-255, for which C and the strength constants
    are set); standard: ``x * 255 / data_range``.

    Args:
        sources: (B, S, H, W) or a sequence of S tensors (B, H, W); S >= 1.
        fused: (B, H, W) or (B, 1, H, W).
        convention: "reference" or "standard".
        data_range: peak value of the data (standard convention).
        weights: one weight per scale (finest first).
        k: the SSIM constant K (C = (K 255)^2).

    Returns:
        (B,) float64.

    Raises:
        ValueError: images smaller than 11 * 2^(scales - 1) px (44 px for 3 scales; MATLAB
            returns -Inf), empty weights.
    """
    fm._check_convention(convention)
    if len(weights) < 1:
        raise ValueError("weights must hold at least one scale weight")
    f = fm.as_fused(fused)
    src = fm.as_sources(sources, f)
    data_range = fm._check_range(data_range)
    levels = len(weights)
    need = _WIN * 2 ** (levels - 1)
    if min(f.shape[1:]) < need:
        raise ValueError(
            f"MEF-SSIM with {levels} scales needs images of at least {need} px, "
            f"got {tuple(f.shape[1:])}"
        )
    if convention == "standard" and data_range != 255.0:
        f, src = f * (255.0 / data_range), src * (255.0 / data_range)
    beta = torch.tensor(weights, dtype=f.dtype, device=f.device)
    beta = beta / beta.sum()
    c = (k * 255.0) ** 2
    out = torch.ones(f.shape[0], dtype=f.dtype, device=f.device)
    for level in range(levels):
        out = out * _single_scale(src, f, c).pow(beta[level])
        if level < levels - 1:
            small = _downsample(src.flatten(0, 1))  # (B S, H', W')
            src = small.view(*src.shape[:2], *small.shape[1:])
            f = _downsample(f)
    return out.double()
