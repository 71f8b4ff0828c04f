"""MEF-SSIM (``fuse4seg.metrics.mef_ssim``): agreement with a window-by-window transcription
of ``mef_ssim.m`` / ``mef_ms_ssim.m`` (only MATLAB code exists), invariants and errors.

The library computes every window statistic with separable box and Gaussian filters of the
images and their pairwise products; the transcription below takes each 11x11 patch as the
MATLAB code does (norms of the mean-removed patches, the desired patch, the Gaussian-weighted
SSIM of two patches), and downsamples with a literal symmetric-padded 2x2 mean filter.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fuse4seg.metrics import compute_fusion_metrics, mef_ssim
from fuse4seg.metrics.mef_ssim import MEF_SSIM_WEIGHTS

EPS = np.finfo(np.float64).eps


def _smooth(seed: int, shape, scale: float = 255.0) -> torch.Tensor:
    """Random smooth images in [0, scale] (bicubic upsampling of coarse noise, fine noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((shape[0], 1, shape[1] // 6, shape[2] // 6), generator=g, dtype=torch.float64)
    up = F.interpolate(low, size=shape[1:], mode="bicubic", align_corners=False)[:, 0]
    noise = 0.05 * torch.randn(shape, generator=g, dtype=torch.float64)
    return (up + noise).clamp(0, 1) * scale


def _gauss11() -> np.ndarray:
    t = np.arange(11) - 5.0
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5**2))
    return g / g.sum()


def _mef_ssim_loops(seq: np.ndarray, f: np.ndarray, k: float = 0.03) -> float:
    """``mef_ssim.m`` for seq (H, W, K) and f (H, W), window by window."""
    h, w, n_src = seq.shape
    win = _gauss11()
    patches = np.lib.stride_tricks.sliding_window_view(seq, (11, 11), axis=(0, 1))
    fpatches = np.lib.stride_tricks.sliding_window_view(f, (11, 11))
    mu = patches.mean(axis=(-2, -1))  # (h', w', K)
    sigma_sq = (patches**2).mean(axis=(-2, -1)) - mu**2
    ed = np.sqrt(np.maximum(121 * sigma_sq, 0)) + 0.001
    c = (k * 255) ** 2
    q = np.empty(mu.shape[:2])
    for i in range(q.shape[0]):
        for j in range(q.shape[1]):
            vecs = patches[i, j].reshape(n_src, 121).T  # (121, K)
            den = sum(np.linalg.norm(vecs[:, s] - mu[i, j, s]) for s in range(n_src))
            tot = vecs.sum(1)
            r = (np.linalg.norm(tot - tot.mean()) + EPS) / (den + EPS)
            r = 1 - EPS if r > 1 else (EPS if r < 0 else r)
            p = min(math.tan(math.pi / 2 * r), 10.0)
            wmap = (ed[i, j] / 11) ** p + EPS
            wmap = wmap / wmap.sum()
            block = sum(
                wmap[s] * (patches[i, j, s] - mu[i, j, s]) / ed[i, j, s] for s in range(n_src)
            )
            if np.linalg.norm(block) > 0:
                block = block / np.linalg.norm(block) * ed[i, j].max()
            fb = fpatches[i, j]
            m1, m2 = (win * block).sum(), (win * fb).sum()
            s1 = (win * (block - m1) ** 2).sum()
            s2 = (win * (fb - m2) ** 2).sum()
            s12 = (win * (block - m1) * (fb - m2)).sum()
            q[i, j] = (2 * s12 + c) / (s1 + s2 + c)
    return float(q.mean())


def _downsample_loops(x: np.ndarray) -> np.ndarray:
    """``imfilter(x, ones(2) / 4, 'symmetric', 'same')`` then ``x(1:2:end, 1:2:end)``."""
    p = np.pad(x, ((0, 1), (0, 1)), mode="symmetric")
    out = 0.25 * (p[:-1, :-1] + p[1:, :-1] + p[:-1, 1:] + p[1:, 1:])
    return out[::2, ::2]


def _mef_ms_ssim_loops(seq: np.ndarray, f: np.ndarray) -> float:
    beta = np.array(MEF_SSIM_WEIGHTS) / sum(MEF_SSIM_WEIGHTS)
    out = 1.0
    for level in range(3):
        out *= _mef_ssim_loops(seq, f) ** beta[level]
        if level < 2:
            seq = np.stack([_downsample_loops(seq[..., s]) for s in range(seq.shape[2])], -1)
            f = _downsample_loops(f)
    return out


@pytest.mark.parametrize("n_src, size", [(2, (49, 46)), (3, (44, 47))])
def test_mef_ssim_matches_the_window_by_window_code(n_src, size):
    src = _smooth(1, (n_src, *size))
    f = _smooth(2, (1, *size))[0] * 0.5 + src.mean(0) * 0.5
    src[0, :12, :12] = 80.0  # flat patches in one source
    want = _mef_ms_ssim_loops(src.permute(1, 2, 0).numpy(), f.numpy())
    got = mef_ssim(src[None], f[None]).item()
    assert got == pytest.approx(want, rel=1e-9)


def test_mef_ssim_bounds_symmetry_and_batches():
    src = _smooth(3, (2, 64, 60))
    f = src.mean(0)
    v = mef_ssim(src[None], f[None])
    assert v.shape == (1,) and v.dtype == torch.float64 and 0.5 < v.item() <= 1.0
    assert torch.allclose(mef_ssim(src.flip(0)[None], f[None]), v, rtol=1e-12)
    same = mef_ssim(torch.stack([src[0], src[0]])[None], src[0][None]).item()
    assert 0.9999 < same <= 1.0  # F = A = B: 1 up to the strength constant 0.001
    other = _smooth(4, (2, 64, 60))
    batch = mef_ssim(torch.stack([src, other]), torch.stack([f, other[1]]))
    assert torch.allclose(batch[0], v) and batch[1] < batch[0]


def test_mef_ssim_conventions_and_data_range():
    src = _smooth(5, (2, 48, 48))
    f = src.amax(0)
    ref = mef_ssim(src[None], f[None], "reference").item()
    std = mef_ssim(src[None] / 255, f[None] / 255, "standard", data_range=1.0).item()
    assert std == pytest.approx(ref, rel=1e-9)
    assert compute_fusion_metrics(src[None], f[None], metrics=["MEF-SSIM"])[
        "MEF-SSIM"
    ].item() == pytest.approx(ref, rel=1e-12)


def test_mef_ssim_errors():
    src = _smooth(6, (2, 43, 60))
    with pytest.raises(ValueError, match="at least 44 px"):
        mef_ssim(src[None], src[0][None])
    with pytest.raises(ValueError, match="convention"):
        mef_ssim(src[None], src[0][None], "matlab")
    with pytest.raises(ValueError, match="weights"):
        mef_ssim(src[None], src[0][None], weights=())
    # one scale: the 43 px images are large enough
    assert mef_ssim(src[None], src[0][None], weights=(1.0,)).item() <= 1.0
