"""MS-SSIM: multi-scale structural similarity (Wang, Simoncelli & Bovik 2003), summed over sources.

An extra fusion metric: it is not part of the reference evaluator, so it has a single
(standard) definition, that of MONAI's ``MultiScaleSSIMMetric`` / ``compute_ms_ssim``
(MONAI 1.6.1) and TensorFlow's ``tf.image.ssim_multiscale``. ``docs/metrics.md`` summarises it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fuse4seg.metrics._filters import gaussian_kernel_1d, separable_filter
from fuse4seg.metrics.fusion import as_fused, as_sources

__all__ = ["MS_SSIM_WEIGHTS", "ms_ssim", "ms_ssim_min_size"]

#: Scale weights of Wang et al. (2003), finest scale first (as in MONAI and TensorFlow).
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_K1, _K2 = 0.01, 0.03


def ms_ssim_min_size(n_scales: int = len(MS_SSIM_WEIGHTS), win_size: int = 11) -> int:
    """Smallest image side (px) for MS-SSIM: ``win_size * 2 ** (n_scales - 1)`` (176 by default).

    Each 2x2 pooling floors the size, so after ``n_scales - 1`` poolings a side of ``n`` px is
    ``n // 2 ** (n_scales - 1)``, which must still hold one ``win_size`` window.
    """
    return win_size * 2 ** (n_scales - 1)


def _pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling, stride 2, of ``x`` (N, C, H, W); an odd last row/column is dropped."""
    return F.avg_pool2d(x, kernel_size=2)


def ms_ssim(
    sources: torch.Tensor | Sequence[torch.Tensor],
    fused: torch.Tensor,
    data_range: float = 255.0,
    weights: Sequence[float] | None = None,
    win_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """MS-SSIM = sum_s MS-SSIM(F, S_s), multi-scale SSIM (Wang, Simoncelli & Bovik 2003).

    Per source, with M = ``len(weights)`` scales (default 5, weights ``MS_SSIM_WEIGHTS`` =
    (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), finest scale first)::

        MS-SSIM(F, S) = max(0, mean l_M cs_M) ** w_M * prod_{j<M} max(0, mean cs_j) ** w_j
        l  = (2 mu_F mu_S + C1) / (mu_F**2 + mu_S**2 + C1)
        cs = (2 sigma_FS + C2) / (sigma_F**2 + sigma_S**2 + C2)
        C1 = (0.01 * data_range)**2,  C2 = (0.03 * data_range)**2

    Local means, variances and the covariance (population form, E[xy] - E[x]E[y]) use a
    normalised ``win_size`` x ``win_size`` Gaussian window of standard deviation ``sigma``
    (default 11 / 1.5) with 'valid' filtering; ``mean`` is over each scale's 'valid' map (at the
    last scale, the mean of the SSIM map l * cs, not the product of two means). Scale j + 1 is
    scale j average-pooled over 2x2 blocks with stride 2; an odd last row or column is dropped
    (floor, as MONAI's ``avg_pool2d``; TensorFlow instead pads odd sizes symmetrically first,
    so the two differ on images whose sides are not multiples of 2 ** (M - 1)).

    **Negative values**: as in MONAI 1.6.1 (``torch.relu`` on the per-image mean cs of each
    scale and on the mean SSIM of the last scale), each per-scale mean is clamped to 0 before
    it is raised to its weight, so a negative mean makes that source's MS-SSIM exactly 0 (for a
    positive weight) instead of NaN or a complex number. TensorFlow's current
    ``ssim_multiscale`` applies the same ``relu``. Local cs values inside a map are not clamped.

    Args:
        sources: (B, S, H, W) or a list of S tensors (B, H, W) (or (S, H, W) for B = 1).
        fused: (B, H, W), (B, 1, H, W) or (H, W).
        data_range: the dynamic range of the data (255 for 8-bit grey levels, 1.0 for [0, 1]).
        weights: exponent of each scale, finest first (its length sets the number of scales).
        win_size: odd Gaussian window size.
        sigma: Gaussian standard deviation (px).

    Returns:
        (B,) float64 (float32 on Apple MPS), dimensionless, in [0, S]; S (1 per source) when
        every source equals F. Computed in float64 on CPU and CUDA.

    Raises:
        ValueError: a side is smaller than ``win_size * 2 ** (M - 1)`` px (176 px for the
            defaults), bad shapes, ``data_range <= 0``, no weights or an even ``win_size``.
    """
    f = as_fused(fused)
    src = as_sources(sources, f)
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    w = tuple(float(v) for v in (MS_SSIM_WEIGHTS if weights is None else weights))
    if not w:
        raise ValueError("weights must hold at least one scale weight")
    n_scales = len(w)
    need = ms_ssim_min_size(n_scales, win_size)
    h, wd = f.shape[-2:]
    if min(h, wd) // 2 ** (n_scales - 1) < win_size:
        raise ValueError(
            f"MS-SSIM with {n_scales} scales and a {win_size}-px window needs images of at "
            f"least {need} x {need} px (win_size * 2**(scales - 1)), got {h} x {wd}"
        )
    win = gaussian_kernel_1d(win_size, sigma)
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2

    b, n_src = src.shape[:2]
    x = f.unsqueeze(1)  # (B, 1, H, W)
    y = src  # (B, S, H, W)
    values = []  # per scale: (B, S) mean cs (mean SSIM at the last scale)
    for scale in range(n_scales):
        if scale > 0:
            x, y = _pool2(x), _pool2(y)
        stack = torch.cat([x, y, x * x, y * y, x * y], 1)  # (B, 3S + 2, h, w)
        filt = separable_filter(stack.flatten(0, 1), win)
        filt = filt.view(b, stack.shape[1], *filt.shape[1:])
        ux, uy = filt[:, :1], filt[:, 1 : 1 + n_src]
        uxx, uyy = filt[:, 1 + n_src : 2 + n_src], filt[:, 2 + n_src : 2 + 2 * n_src]
        uxy = filt[:, 2 + 2 * n_src :]
        vx = uxx - ux * ux
        vy = uyy - uy * uy
        vxy = uxy - ux * uy
        cs = (2 * vxy + c2) / (vx + vy + c2)
        if scale == n_scales - 1:
            cs = ((2 * ux * uy + c1) / (ux * ux + uy * uy + c1)) * cs
        values.append(cs.mean((-2, -1)))
    per_scale = torch.stack(values).clamp_min(0.0)  # (M, B, S)
    exps = torch.tensor(w, dtype=per_scale.dtype, device=per_scale.device).view(-1, 1, 1)
    return per_scale.pow(exps).prod(0).sum(1)
