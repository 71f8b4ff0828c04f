"""Classical pixel-level fusion rules (no learning).

Used by ``fuse4seg fuse --rule`` and by the benchmark's disjoint (fuse-then-segment)
pipelines. Every rule maps sources ``x`` of shape ``(B, M, H, W)`` with values in ``[0, 1]``
to a fused image ``(B, 1, H, W)`` in ``[0, 1]``, independently per batch element. Each rule
returns a source unchanged when all ``M`` sources are identical.

Rules:
    average     mean of the sources.
    max         per-pixel maximum.
    laplacian   Laplacian pyramid (Burt & Adelson 1983; Burt & Kolczynski 1993): 5-tap
                binomial Gaussian pyramid, detail levels fused by maximum absolute value,
                coarsest (base) level averaged.
    dwt         2D discrete wavelet transform (PyWavelets, ``db2``, symmetric extension):
                detail coefficients fused by maximum absolute value, approximation averaged.
    pca         weighted average with weights from the principal eigenvector of the
                ``M x M`` covariance of the sources (absolute values, normalised to sum 1).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fuse4seg.errors import ConfigError

__all__ = [
    "FUSION_RULES",
    "fuse_average",
    "fuse_max",
    "fuse_laplacian",
    "fuse_dwt",
    "fuse_pca",
    "get_fusion_rule",
    "apply_fusion_rule",
]


def _check(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"sources must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"sources must be (B, M, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError("sources need at least one modality (M >= 1)")


def fuse_average(x: torch.Tensor) -> torch.Tensor:
    """Mean over modalities: ``(B, M, H, W) -> (B, 1, H, W)``."""
    _check(x)
    return x.mean(dim=1, keepdim=True)


def fuse_max(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel maximum over modalities: ``(B, M, H, W) -> (B, 1, H, W)``."""
    _check(x)
    return x.amax(dim=1, keepdim=True)


def _select_max_abs(c: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Pick, per position, the coefficient with the largest magnitude along ``dim``."""
    idx = c.abs().argmax(dim=dim, keepdim=True)
    return torch.gather(c, dim, idx)


# --- Laplacian pyramid ---------------------------------------------------------------------

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable 5-tap binomial blur with reflect padding, ``(N, 1, H, W)``."""
    k = _BINOMIAL.to(dtype=x.dtype, device=x.device)
    h, w = x.shape[-2:]
    mode = "reflect" if min(h, w) > 2 else "replicate"
    x = F.pad(x, (2, 2, 2, 2), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, 5))
    return F.conv2d(x, k.view(1, 1, 5, 1))


def _down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[..., ::2, ::2]


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-insertion upsampling to ``size`` followed by the blur (x4 gain)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    up = up[..., : size[0], : size[1]]
    return 4.0 * _blur(up)


def _pyramid_levels(h: int, w: int, levels: int | None) -> int:
    max_levels = max(0, int(math.floor(math.log2(max(1, min(h, w))))) - 2)
    return max_levels if levels is None else max(0, min(levels, max_levels))


def fuse_laplacian(x: torch.Tensor, levels: int | None = 4) -> torch.Tensor:
    """Laplacian-pyramid fusion: ``(B, M, H, W) -> (B, 1, H, W)``.

    Args:
        x: sources in ``[0, 1]``.
        levels: number of detail levels (capped so the coarsest level is at least 4 px).

    Detail (band-pass) levels take the coefficient of largest magnitude across sources; the
    coarsest Gaussian level is averaged. The pyramid is exactly invertible, so identical
    sources reconstruct themselves.
    """
    _check(x)
    b, m, h, w = x.shape
    n_levels = _pyramid_levels(h, w, levels)
    cur = x.reshape(b * m, 1, h, w)  # (B*M, 1, H, W)
    details: list[torch.Tensor] = []
    for _ in range(n_levels):
        low = _down(cur)
        details.append(cur - _up(low, cur.shape[-2:]))
        cur = low
    fused = cur.reshape(b, m, *cur.shape[-2:]).mean(dim=1, keepdim=True)  # (B, 1, h, w)
    for d in reversed(details):
        d = d.reshape(b, m, *d.shape[-2:])  # (B, M, h_l, w_l)
        fused = _up(fused, d.shape[-2:]) + _select_max_abs(d)
    return fused.clamp(0.0, 1.0)


# --- Discrete wavelet transform ------------------------------------------------------------


def fuse_dwt(
    x: torch.Tensor, wavelet: str = "db2", levels: int | None = 3, mode: str = "symmetric"
) -> torch.Tensor:
    """Wavelet fusion (PyWavelets): ``(B, M, H, W) -> (B, 1, H, W)``.

    Args:
        x: sources in ``[0, 1]``.
        wavelet: PyWavelets wavelet name (default ``db2``).
        levels: decomposition levels, capped at ``pywt.dwt_max_level``.
        mode: signal extension mode.

    Detail coefficients take the largest magnitude across sources; the approximation is
    averaged. Computed in float64 on the CPU, returned on ``x``'s device and dtype.
    """
    import pywt

    _check(x)
    b, m, h, w = x.shape
    arr = x.detach().to("cpu", torch.float64).numpy()
    max_level = pywt.dwt_max_level(min(h, w), pywt.Wavelet(wavelet).dec_len)
    n = max_level if levels is None else max(1, min(levels, max(1, max_level)))
    with warnings.catch_warnings():  # images smaller than the filter: boundary effects only
        warnings.simplefilter("ignore", UserWarning)
        coeffs = pywt.wavedec2(arr, wavelet, mode=mode, level=n, axes=(-2, -1))
    fused = [coeffs[0].mean(axis=1, keepdims=True)]
    for details in coeffs[1:]:
        picked = []
        for d in details:
            idx = np.abs(d).argmax(axis=1)[:, None]
            picked.append(np.take_along_axis(d, idx, axis=1))
        fused.append(tuple(picked))
    out = pywt.waverec2(fused, wavelet, mode=mode, axes=(-2, -1))[..., :h, :w]
    return torch.from_numpy(np.clip(out, 0.0, 1.0)).to(device=x.device, dtype=x.dtype)


# --- PCA weighting -------------------------------------------------------------------------


def fuse_pca(x: torch.Tensor) -> torch.Tensor:
    """PCA-weighted average: ``(B, M, H, W) -> (B, 1, H, W)``.

    Per batch element, the weights are the absolute principal eigenvector of the sources'
    ``M x M`` covariance, normalised to sum to 1 (equal weights when all sources are constant).
    """
    _check(x)
    b, m, h, w = x.shape
    flat = x.reshape(b, m, h * w).double()  # (B, M, N)
    centred = flat - flat.mean(dim=2, keepdim=True)
    cov = centred @ centred.transpose(1, 2) / max(1, h * w - 1)  # (B, M, M)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    v = vecs[..., -1].abs()  # (B, M) principal eigenvector
    total = v.sum(dim=1, keepdim=True)
    flat_cov = cov.abs().sum(dim=(1, 2)) <= 1e-20
    weights = torch.where(
        (total > 1e-12) & ~flat_cov[:, None], v / total.clamp_min(1e-12), torch.full_like(v, 1 / m)
    )
    fused = (weights.to(x.dtype)[:, :, None, None] * x).sum(dim=1, keepdim=True)
    return fused.clamp(0.0, 1.0)


#: rule name -> function ``(B, M, H, W) -> (B, 1, H, W)``.
FUSION_RULES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "average": fuse_average,
    "max": fuse_max,
    "laplacian": fuse_laplacian,
    "dwt": fuse_dwt,
    "pca": fuse_pca,
}


def get_fusion_rule(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return the rule called ``name`` (one of :data:`FUSION_RULES`)."""
    try:
        return FUSION_RULES[name]
    except KeyError:
        raise ConfigError(
            f"unknown fusion rule {name!r}; choose one of {', '.join(FUSION_RULES)}"
        ) from None


def apply_fusion_rule(name: str, x: torch.Tensor) -> torch.Tensor:
    """Fuse ``x`` ``(B, M, H, W)`` with the rule ``name`` -> ``(B, 1, H, W)``."""
    return get_fusion_rule(name)(x)
