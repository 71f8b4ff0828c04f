"""Phase congruency (Kovesi's PC_2 as modified by Liu, ``myphasecong3.m``) and the fusion
metric Qp of Zhao, Laganiere & Liu (2007) built on it (Liu's ``metricZhao.m``, MEFB's
``metricsQp.m``).

Phase congruency is computed in the frequency domain with a bank of log-Gabor filters
(4 scales, 6 orientations); Qp compares the phase congruency map and its maximum and minimum
moments of F with those of the sources by local correlation coefficients. One batched tensor
implementation for any torch device (complex128 FFTs; complex64 on Apple MPS).
``docs/metrics.md`` lists the formula and conventions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fuse4seg.metrics import fusion as fm
from fuse4seg.metrics._filters import matlab_gaussian_1d, separable_filter

__all__ = ["phase_congruency", "q_p"]

# myphasecong3 defaults: scales, orientations, smallest wavelength, scale factor, sigmaOnf,
# dThetaOnSigma, noise k, cutOff, g, and the epsilon against division by zero
_NSCALE, _NORIENT = 4, 6
_MIN_WAVELENGTH, _MULT, _SIGMA_ON_F, _D_THETA_ON_SIGMA = 3.0, 2.1, 0.55, 1.2
_K, _CUT_OFF, _G, _EPS = 2.0, 0.5, 10.0, 1e-4
_FEATURE_THRESHOLD = 0.1  # metricZhao: pixels with PC > 0.1 are features
_QP_C = 1e-4  # metricZhao's C1 = C2 = C3


def _centred_range(n: int) -> torch.Tensor:
    """myphasecong3's normalised frequency axis: [-(n-1)/2 .. (n-1)/2] / (n-1) for odd n,
    [-n/2 .. n/2 - 1] / n for even n (float64)."""
    if n % 2:
        return (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) / (n - 1)
    return (torch.arange(n, dtype=torch.float64) - n / 2) / n


@functools.lru_cache(maxsize=8)
def _filter_bank(rows: int, cols: int):
    """Log-Gabor filters and the image-independent noise terms (float64, CPU).

    Returns ``(filters (NORIENT, NSCALE, rows, cols), em_n (NORIENT,), an2 (NORIENT,),
    aiaj (NORIENT,))``: the filters in FFT order, the energy of the smallest-scale filter,
    and sum(ifft2 filter^2) and sum over scale pairs of ifft2 products (the noise model).
    """
    y, x = torch.meshgrid(_centred_range(rows), _centred_range(cols), indexing="ij")
    radius = torch.sqrt(x * x + y * y)
    radius[rows // 2, cols // 2] = 1.0  # no log(0) at the centre
    theta = torch.atan2(-y, x)
    radius = torch.fft.ifftshift(radius)
    theta = torch.fft.ifftshift(theta)
    sin_t, cos_t = torch.sin(theta), torch.cos(theta)
    # Butterworth low-pass (lowpassfilter(size, 0.45, 15)) on its own grid, then fftshift
    lx = (torch.arange(1, cols + 1, dtype=torch.float64) - (cols // 2 + 1)) / cols
    ly = (torch.arange(1, rows + 1, dtype=torch.float64) - (rows // 2 + 1)) / rows
    lr = torch.sqrt(ly.view(-1, 1) ** 2 + lx.view(1, -1) ** 2)
    lowpass = torch.fft.fftshift(1.0 / (1.0 + (lr / 0.45) ** 30))
    log_gabor = []
    for s in range(_NSCALE):
        fo = 1.0 / (_MIN_WAVELENGTH * _MULT**s)
        lg = torch.exp(-(torch.log(radius / fo) ** 2) / (2 * math.log(_SIGMA_ON_F) ** 2))
        lg = lg * lowpass
        lg[0, 0] = 0.0
        log_gabor.append(lg)
    theta_sigma = math.pi / _NORIENT / _D_THETA_ON_SIGMA
    filters = torch.empty(_NORIENT, _NSCALE, rows, cols, dtype=torch.float64)
    em_n = torch.empty(_NORIENT, dtype=torch.float64)
    an2 = torch.empty(_NORIENT, dtype=torch.float64)
    aiaj = torch.empty(_NORIENT, dtype=torch.float64)
    for o in range(_NORIENT):
        angle = o * math.pi / _NORIENT
        ds = sin_t * math.cos(angle) - cos_t * math.sin(angle)
        dc = cos_t * math.cos(angle) + sin_t * math.sin(angle)
        spread = torch.exp(-(torch.atan2(ds, dc).abs() ** 2) / (2 * theta_sigma**2))
        for s in range(_NSCALE):
            filters[o, s] = log_gabor[s] * spread
        spatial = torch.fft.ifft2(filters[o]).real * math.sqrt(rows * cols)  # (NSCALE, r, c)
        em_n[o] = filters[o, 0].square().sum()
        an2[o] = spatial.square().sum()
        aiaj[o] = sum(
            (spatial[i] * spatial[j]).sum()
            for i in range(_NSCALE - 1)
            for j in range(i + 1, _NSCALE)
        )
    return filters, em_n, an2, aiaj


def _median(x: torch.Tensor) -> torch.Tensor:
    """MATLAB median over the last axis (the mean of the two middle values for even n)."""
    n = x.shape[-1]
    k = (n + 1) // 2
    lo = x.kthvalue(k, -1).values
    if n % 2:
        return lo
    # the (k + 1)-th smallest: lo again if more than k values are <= lo, else the next value
    above = torch.where(x > lo.unsqueeze(-1), x, torch.inf).amin(-1)
    hi = torch.where((x <= lo.unsqueeze(-1)).sum(-1) > k, lo, above)
    return 0.5 * (lo + hi)


def phase_congruency(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Phase congruency and its covariance moments, as Liu's ``myphasecong3.m`` (Kovesi's
    PC_2 with the default parameters: 4 scales from wavelength 3, factor 2.1, 6 orientations,
    sigmaOnf 0.55, noise k = 2, cutOff 0.5, g = 10).

    Args:
        images: (N, H, W) grey levels (any real dtype; computed in float64).

    Returns:
        ``(pc, M, m)``, each (N, H, W): the overall phase congruency
        ``sum_o weight_o Energy_o / (sum_o sum_s A_so + 1e-4)``, and the maximum and minimum
        moments of the phase congruency covariance (edge and corner strength). A pixel where
        every filter response is exactly 0 (a constant image) gives NaN moments, as in MATLAB.
    """
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got shape {tuple(images.shape)}")
    work = fm._work_dtype(images.device)
    cplx = torch.complex64 if work == torch.float32 else torch.complex128
    x = images.to(work)
    n, rows, cols = x.shape
    filters, em_n, an2, aiaj = (t.to(device=x.device, dtype=work) for t in _filter_bank(rows, cols))
    spectrum = torch.view_as_real(torch.fft.fft2(x.to(cplx))).unsqueeze(1)  # (N, 1, r, c, 2)
    zero = torch.zeros_like(x)
    total_energy, total_sum_an = zero.clone(), zero.clone()
    covx2, covy2, covxy = zero.clone(), zero.clone(), zero.clone()
    for o in range(_NORIENT):
        product = torch.view_as_complex(spectrum * filters[o].unsqueeze(-1))  # (N, NSCALE, r, c)
        eo = torch.view_as_real(torch.fft.ifft2(product)).movedim(-1, 0).contiguous()
        even, odd = eo[0], eo[1]  # planar copies: fast elementwise arithmetic
        amp = torch.sqrt(even * even + odd * odd)
        sum_an = amp.sum(1)
        max_an = amp.amax(1)
        sum_e, sum_o = even.sum(1), odd.sum(1)
        x_energy = torch.sqrt(sum_e * sum_e + sum_o * sum_o) + _EPS
        mean_e, mean_o = (sum_e / x_energy).unsqueeze(1), (sum_o / x_energy).unsqueeze(1)
        energy = (even * mean_e + odd * mean_o - (even * mean_o - odd * mean_e).abs()).sum(1)
        # noise: median energy^2 at the smallest scale -> Rayleigh model of the noise energy
        mean_e2n = -_median(amp[:, 0].flatten(1).square()) / math.log(0.5)
        noise_power = mean_e2n / em_n[o]
        tau = torch.sqrt((2 * noise_power * an2[o] + 4 * noise_power * aiaj[o]) / 2)
        noise = tau * math.sqrt(math.pi / 2) + _K * torch.sqrt((2 - math.pi / 2) * tau * tau)
        threshold = (noise / 1.7).view(-1, 1, 1)  # PC_2 rescaling of the PC_1 estimate
        energy = (energy - threshold).clamp_min(0.0)
        width = sum_an / (max_an + _EPS) / _NSCALE
        weight = 1.0 / (1.0 + torch.exp((_CUT_OFF - width) * _G))
        total_sum_an += sum_an
        total_energy += weight * energy
        pc_o = weight * energy / sum_an
        angle = o * math.pi / _NORIENT
        cx, cy = pc_o * math.cos(angle), pc_o * math.sin(angle)
        covx2 += cx * cx
        covy2 += cy * cy
        covxy += cx * cy
    pc = total_energy / (total_sum_an + _EPS)
    covx2 = covx2 / (_NORIENT / 2)
    covy2 = covy2 / (_NORIENT / 2)
    covxy = covxy / _NORIENT
    denom = torch.sqrt(covxy * covxy + (covx2 - covy2) ** 2) + _EPS
    return pc, (covy2 + covx2 + denom) / 2, (covy2 + covx2 - denom) / 2


def _same_filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """MATLAB ``filter2(w, x, 'same')`` (zero padding) for a separable w: (N, H, W)."""
    r = (window.numel() - 1) // 2
    return separable_filter(F.pad(x, (r, r, r, r)), window)


def _zhao_similarity(
    feat_src: torch.Tensor,
    feat_max: torch.Tensor,
    feat_f: torch.Tensor,
    masks: torch.Tensor,
    mask_max: torch.Tensor,
) -> torch.Tensor:
    """metricZhao's ``correlation_coeffcient`` for one feature map (PC, M or m).

    feat_src (B, S, H, W), feat_max (B, H, W) (the feature of the source with the largest
    PC), feat_f (B, H, W); masks (B, S, H, W) and mask_max (B, H, W) are PC > 0.1.
    The sources and the maximum are masked, F is not; per pixel the local correlation (11x11
    Gaussian, sigma 1.5, 'same', C = 1e-4) with F inside each mask and 0 outside; the maximum
    over them, summed and divided by the number of pixels in mask_max. Returns (B,).
    """
    s = feat_src.shape[1]
    win = matlab_gaussian_1d(11, 1.5).to(feat_f)
    maps = torch.cat([feat_src * masks, (feat_max * mask_max).unsqueeze(1)], 1)  # (B, S+1, .)
    ff = feat_f.unsqueeze(1)
    stack = torch.cat([maps, maps * maps, maps * ff, ff, ff * ff], 1)  # (B, 3 (S+1) + 2, .)
    filt = _same_filter(stack.flatten(0, 1), win).view(stack.shape)
    mu, sq, cross, mu_f, sq_f = filt.split([s + 1, s + 1, s + 1, 1, 1], 1)
    var = sq - mu * mu
    var_f = sq_f - mu_f * mu_f
    cov = cross - mu * mu_f
    corr = (cov + _QP_C) / (torch.sqrt((var * var_f).abs()) + _QP_C)  # (B, S+1, H, W)
    inside = torch.cat([masks, mask_max.unsqueeze(1)], 1)
    corr = torch.where(inside, corr, 0.0)
    return corr.amax(1).flatten(1).sum(1) / mask_max.flatten(1).sum(1)


def q_p(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    convention: fm.Convention = "reference",
    data_range: float = 255.0,
) -> torch.Tensor:
    """Qp (Zhao, Laganiere & Liu 2007; Liu's ``metricZhao.m``, MEFB's ``metricsQp.m``):
    phase-congruency-based feature similarity, higher is better.

    With (pc, M, m) of each image (:func:`phase_congruency`), the "max" source per pixel is
    the one with the largest pc (ties: the later source, as ``pc1 > pc2`` in the code); for
    each feature X in (pc, M, m), ``P_X = sum(max(C_1, ..., C_S, C_max)) / |pc_max > 0.1|``,
    where ``C_s`` is the local correlation coefficient (11x11 Gaussian window, sigma 1.5,
    zero padding, ``(s_sF + C) / (sqrt|s_s^2 s_F^2| + C)``, C = 1e-4) between the source's
    X masked to pc_s > 0.1 and F's unmasked X, set to 0 outside the mask;
    ``Qp = P_pc P_M P_m``. Because F's maps are not masked, F = A = B does not give exactly 1.
    NaN where no pixel of pc_max exceeds 0.1 (0/0 in the code).

    Reference: the images as given (grey levels 0-255, as the toolbox reads them); standard:
    ``x * 255 / data_range`` (phase congruency is nearly contrast invariant, but its noise
    guards 1e-4 are absolute).

    Args:
        sources: (B, S, H, W) or a sequence of S tensors (B, H, W).
        fused: (B, H, W) or (B, 1, H, W).
        convention: "reference" or "standard".
        data_range: peak value of the data (standard convention).

    Returns:
        (B,) float64.
    """
    fm._check_convention(convention)
    f = fm.as_fused(fused)
    src = fm.as_sources(sources, f)
    data_range = fm._check_range(data_range)
    if convention == "standard" and data_range != 255.0:
        f, src = f * (255.0 / data_range), src * (255.0 / data_range)
    b, s = src.shape[:2]
    pc, big_m, small_m = (
        t.view(b, s + 1, *f.shape[1:])
        for t in phase_congruency(torch.cat([src, f.unsqueeze(1)], 1).flatten(0, 1))
    )
    best = torch.full_like(pc[:, 0], s - 1, dtype=torch.long)
    for k in range(s - 2, -1, -1):  # pc_k > pc_best strictly: ties keep the later source
        best = torch.where(pc[:, k] > pc.gather(1, best.unsqueeze(1)).squeeze(1), k, best)
    pick = best.unsqueeze(1)
    masks = pc[:, :s] > _FEATURE_THRESHOLD
    mask_max = pc[:, :s].gather(1, pick).squeeze(1) > _FEATURE_THRESHOLD
    out = torch.ones(b, dtype=pc.dtype, device=pc.device)
    for feat in (pc, big_m, small_m):
        feat_max = feat[:, :s].gather(1, pick).squeeze(1)
        out = out * _zhao_similarity(feat[:, :s], feat_max, feat[:, s], masks, mask_max)
    return out.double()
