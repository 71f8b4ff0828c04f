"""Compiled CPU kernels for the costliest fusion metrics (private).

VIF and the reference SSIM are dominated by separable filtering of a dozen maps per image.
Written as PyTorch tensor operations every filter tap is one pass over memory (34 passes
per map for VIF's 17-tap window), which is memory bound on a CPU. The Numba kernels below
keep the filtered row in cache and fold the per-pixel formulas into the same loop, so each
image is read a few times instead of a hundred. They compute the same arithmetic, in the
same order, as the tensor code in ``fusion.py`` (tests check both paths against each other
and against the reference evaluator's golden values).

Numba is optional: without it (or with ``FUSE4SEG_METRICS_BACKEND=torch``) ``fusion.py``
uses its tensor code on every device. Kernels are compiled on first use and cached on disk.
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["available", "vif_num_den", "ssim_reference_means"]

try:  # pragma: no cover - exercised by whichever backend is installed
    from numba import njit

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    _HAVE_NUMBA = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(fn):
            return fn

        return wrap if not args or not callable(args[0]) else args[0]


def available() -> bool:
    """True when the compiled kernels are used for CPU tensors.

    ``FUSE4SEG_METRICS_BACKEND=torch`` forces the tensor code, ``numba`` requires Numba.
    """
    choice = os.environ.get("FUSE4SEG_METRICS_BACKEND", "auto").lower()
    if choice == "torch":
        return False
    if choice == "numba" and not _HAVE_NUMBA:
        raise RuntimeError("FUSE4SEG_METRICS_BACKEND=numba but Numba is not installed")
    if choice not in ("auto", "numba"):
        raise ValueError(f"FUSE4SEG_METRICS_BACKEND must be auto, numba or torch, got {choice!r}")
    return _HAVE_NUMBA


_CACHE = True  # compiled code is cached next to this file (or in NUMBA_CACHE_DIR)
#: Sums may be reassociated (vectorised with several partial sums): the results differ from
#: a left-to-right sum only by rounding (~1e-16 relative), as NumPy's pairwise sums do.
_REDUCE = {"reassoc"}


# One expression per output sample keeps the sum of the 17 (9) taps of VIF's first (second)
# scale in registers: about 1.7x faster than accumulating tap by tap into the row.


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _taps_rows_17(src, w, m, i, row):  # pragma: no cover - compiled
    for j in range(row.shape[0]):
        row[j] = (
            w[0] * src[m, i, j]
            + w[1] * src[m, i + 1, j]
            + w[2] * src[m, i + 2, j]
            + w[3] * src[m, i + 3, j]
            + w[4] * src[m, i + 4, j]
            + w[5] * src[m, i + 5, j]
            + w[6] * src[m, i + 6, j]
            + w[7] * src[m, i + 7, j]
            + w[8] * src[m, i + 8, j]
            + w[9] * src[m, i + 9, j]
            + w[10] * src[m, i + 10, j]
            + w[11] * src[m, i + 11, j]
            + w[12] * src[m, i + 12, j]
            + w[13] * src[m, i + 13, j]
            + w[14] * src[m, i + 14, j]
            + w[15] * src[m, i + 15, j]
            + w[16] * src[m, i + 16, j]
        )


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _taps_columns_17(row, w, out_row):  # pragma: no cover - compiled
    for j in range(out_row.shape[0]):
        out_row[j] = (
            w[0] * row[j]
            + w[1] * row[j + 1]
            + w[2] * row[j + 2]
            + w[3] * row[j + 3]
            + w[4] * row[j + 4]
            + w[5] * row[j + 5]
            + w[6] * row[j + 6]
            + w[7] * row[j + 7]
            + w[8] * row[j + 8]
            + w[9] * row[j + 9]
            + w[10] * row[j + 10]
            + w[11] * row[j + 11]
            + w[12] * row[j + 12]
            + w[13] * row[j + 13]
            + w[14] * row[j + 14]
            + w[15] * row[j + 15]
            + w[16] * row[j + 16]
        )


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _taps_rows_9(src, w, m, i, row):  # pragma: no cover - compiled
    for j in range(row.shape[0]):
        row[j] = (
            w[0] * src[m, i, j]
            + w[1] * src[m, i + 1, j]
            + w[2] * src[m, i + 2, j]
            + w[3] * src[m, i + 3, j]
            + w[4] * src[m, i + 4, j]
            + w[5] * src[m, i + 5, j]
            + w[6] * src[m, i + 6, j]
            + w[7] * src[m, i + 7, j]
            + w[8] * src[m, i + 8, j]
        )


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _taps_columns_9(row, w, out_row):  # pragma: no cover - compiled
    for j in range(out_row.shape[0]):
        out_row[j] = (
            w[0] * row[j]
            + w[1] * row[j + 1]
            + w[2] * row[j + 2]
            + w[3] * row[j + 3]
            + w[4] * row[j + 4]
            + w[5] * row[j + 5]
            + w[6] * row[j + 6]
            + w[7] * row[j + 7]
            + w[8] * row[j + 8]
        )


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _taps_columns_9_step2(row, w, out_row):  # pragma: no cover - compiled
    for j in range(out_row.shape[0]):
        out_row[j] = (
            w[0] * row[2 * j]
            + w[1] * row[2 * j + 1]
            + w[2] * row[2 * j + 2]
            + w[3] * row[2 * j + 3]
            + w[4] * row[2 * j + 4]
            + w[5] * row[2 * j + 5]
            + w[6] * row[2 * j + 6]
            + w[7] * row[2 * j + 7]
            + w[8] * row[2 * j + 8]
        )


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _separable_valid(src, w, k, step, out):  # pragma: no cover - compiled
    """'Valid' separable correlation of ``src`` (M, H, W) with taps ``w[:k]``.

    Rows first, then columns, each as ``w0 * x0 + w1 * x1 + ...`` left to right (the order
    of ``_filters._conv_axis``); ``step`` keeps every ``step``-th output along both axes.
    ``out`` is (M, (H - k) // step + 1, (W - k) // step + 1).
    """
    n_maps, h, wd = src.shape
    ho = (h - k) // step + 1
    wo = (wd - k) // step + 1
    row = np.empty(wd)
    for m in range(n_maps):
        for io in range(ho):
            i = io * step
            w0 = w[0]
            if k == 17:
                _taps_rows_17(src, w, m, i, row)
            elif k == 9:
                _taps_rows_9(src, w, m, i, row)
            else:
                for j in range(wd):
                    row[j] = w0 * src[m, i, j]
                for t in range(1, k):
                    wt = w[t]
                    for j in range(wd):
                        row[j] += wt * src[m, i + t, j]
            if step == 1 and k == 17:
                _taps_columns_17(row, w, out[m, io])
            elif step == 1 and k == 9:
                _taps_columns_9(row, w, out[m, io])
            elif step == 2 and k == 9:
                _taps_columns_9_step2(row, w, out[m, io])
            elif step == 1:
                for j in range(wo):
                    out[m, io, j] = w0 * row[j]
                for t in range(1, k):
                    wt = w[t]
                    for j in range(wo):
                        out[m, io, j] += wt * row[j + t]
            else:
                for jo in range(wo):
                    j = jo * step
                    acc = w0 * row[j]
                    for t in range(1, k):
                        acc += w[t] * row[j + t]
                    out[m, io, jo] = acc


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _fill_products(maps, n_src):  # pragma: no cover - compiled
    """Fill ``maps[S+1 : 2S+2]`` with the squares of the images ``maps[:S+1]`` and
    ``maps[2S+2:]`` with each source times F (``maps[S]``), in place."""
    s1 = n_src + 1
    _, h, wd = maps.shape
    for m in range(s1):
        for i in range(h):
            for j in range(wd):
                v = maps[m, i, j]
                maps[s1 + m, i, j] = v * v
    for m in range(n_src):
        for i in range(h):
            for j in range(wd):
                maps[2 * s1 + m, i, j] = maps[m, i, j] * maps[n_src, i, j]


_LOG_BLOCK = 32  # factors multiplied before one log: each is < 1e4, so no overflow


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def vif_num_den(src, f, windows, sizes, sigma_nsq, eps):  # pragma: no cover - compiled
    """Numerator and denominator sums of multi-scale pixel VIF for one image.

    Args:
        src: (S, H, W) sources and f: (H, W) fused image, float32 or float64, on 0-255
            (read as float64: all arithmetic is float64).
        windows: (4, 17) float64, row ``s`` holding the ``sizes[s]`` Gaussian taps of scale s.
        sizes: (4,) int64 window sizes (17, 9, 5, 3).
        sigma_nsq, eps: the model's noise variance (2) and guard (1e-10).

    Returns:
        ``(num, den)``, each (S,) float64: sums over scales and pixels of
        ``ln(1 + g^2 sig1 / (sv + sigma_nsq))`` and ``ln(1 + sig1 / sigma_nsq)`` with the
        reference evaluator's guards (natural logs: VIF = num / den is the same in any base).
        Logs are taken of products of up to 32 factors (each factor < 1e4 on 0-255 data).
    """
    n_src = src.shape[0]
    s1 = n_src + 1
    num = np.zeros(n_src)
    den = np.zeros(n_src)
    h, wd = f.shape
    # maps: the S + 1 images (sources, then F), their squares, each source times F (float64)
    maps = np.empty((2 * s1 + n_src, h, wd))
    for m in range(n_src):
        maps[m] = src[m]
    maps[n_src] = f
    for sc in range(4):
        k = sizes[sc]
        w = windows[sc]
        if sc > 0:  # filter the images of the last scale and keep every second pixel
            h, wd = (h - k) // 2 + 1, (wd - k) // 2 + 1
            last = maps
            maps = np.empty((2 * s1 + n_src, h, wd))
            _separable_valid(last[:s1], w, k, 2, maps[:s1])
        _fill_products(maps, n_src)
        ho, wo = h - k + 1, wd - k + 1
        filt = np.empty((2 * s1 + n_src, ho, wo))
        _separable_valid(maps, w, k, 1, filt)
        for s in range(n_src):
            for i in range(ho):
                p_num = 1.0
                p_den = 1.0
                count = 0
                for j in range(wo):
                    mu1 = filt[s, i, j]
                    mu2 = filt[n_src, i, j]
                    sig1 = filt[s1 + s, i, j] - mu1 * mu1
                    if sig1 < eps:  # sig1 := 0 (also when negative): both terms are ln 1
                        continue
                    sig2 = max(filt[s1 + n_src, i, j] - mu2 * mu2, 0.0)
                    sig12 = filt[2 * s1 + s, i, j] - mu1 * mu2
                    p_den *= 1.0 + sig1 / sigma_nsq
                    g = sig12 / (sig1 + eps)
                    if sig2 >= eps and g > 0.0:  # else g := 0 and the numerator term is 0
                        sv = max(sig2 - g * sig12, eps)
                        p_num *= 1.0 + g * g * sig1 / (sv + sigma_nsq)
                    count += 1
                    if count == _LOG_BLOCK:
                        num[s] += math.log(p_num)
                        den[s] += math.log(p_den)
                        p_num = 1.0
                        p_den = 1.0
                        count = 0
                num[s] += math.log(p_num)
                den[s] += math.log(p_den)
    return num, den


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _box7_f32(src, out):  # pragma: no cover - compiled
    """7 x 7 mean of ``src`` (M, H, W) float32 -> ``out`` (M, H-6, W-6) float32.

    Each axis pass sums 7 samples left to right in float64, divides by 7 and stores float32
    (SciPy ``uniform_filter`` on float32 data, as ``_filters.box_filter_valid``).
    """
    n_maps, h, wd = src.shape
    ho, wo = h - 6, wd - 6
    row = np.empty(wd, dtype=np.float32)
    for m in range(n_maps):
        for i in range(ho):
            for j in range(wd):
                acc = np.float64(src[m, i, j])
                for t in range(1, 7):
                    acc += np.float64(src[m, i + t, j])
                row[j] = np.float32(acc / 7.0)
            for j in range(wo):
                acc = np.float64(row[j])
                for t in range(1, 7):
                    acc += np.float64(row[j + t])
                out[m, i, j] = np.float32(acc / 7.0)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def ssim_reference_means(f, src, cov_norm, c1, c2):  # pragma: no cover - compiled
    """Mean SSIM of fused ``f`` (H, W) against each source ``src`` (S, H, W), all float32.

    The reference convention: 7 x 7 uniform window, float32 arithmetic as scikit-image does
    on float32 images (``cov_norm``, ``c1``, ``c2`` given as float32), mean over the valid
    map in float64. Returns (S,) float64.
    """
    n_src, h, wd = src.shape
    n_maps = 2 + 3 * n_src  # f, f*f, then per source: y, y*y, f*y
    maps = np.empty((n_maps, h, wd), dtype=np.float32)
    for i in range(h):
        for j in range(wd):
            v = f[i, j]
            maps[0, i, j] = v
            maps[1, i, j] = v * v
    for s in range(n_src):
        for i in range(h):
            for j in range(wd):
                y = src[s, i, j]
                maps[2 + 3 * s, i, j] = y
                maps[3 + 3 * s, i, j] = y * y
                maps[4 + 3 * s, i, j] = f[i, j] * y
    filt = np.empty((n_maps, h - 6, wd - 6), dtype=np.float32)
    _box7_f32(maps, filt)
    two = np.float32(2.0)
    out = np.zeros(n_src)
    for s in range(n_src):
        total = 0.0
        for i in range(h - 6):
            for j in range(wd - 6):
                ux = filt[0, i, j]
                uxx = filt[1, i, j]
                uy = filt[2 + 3 * s, i, j]
                uyy = filt[3 + 3 * s, i, j]
                uxy = filt[4 + 3 * s, i, j]
                vx = cov_norm * (uxx - ux * ux)
                vy = cov_norm * (uyy - uy * uy)
                vxy = cov_norm * (uxy - ux * uy)
                a1 = two * ux * uy + c1
                a2 = two * vxy + c2
                b1 = ux * ux + uy * uy + c1
                b2 = vx + vy + c2
                total += np.float64((a1 * a2) / (b1 * b2))
        out[s] = total / ((h - 6) * (wd - 6))
    return out


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def sobel_gradients(xp, two, g, g2, ratio):  # pragma: no cover - compiled
    """Sobel magnitude and slope of a zero-padded stack ``xp`` (M, H + 2, W + 2).

    Same arithmetic as ``_filters.sobel_same`` (rows first, then columns):
    ``sx = [1, 2, 1]^T (x) [1, 0, -1]``, ``sy = [-1, 0, 1]^T (x) [1, 2, 1]`` (correlations).
    Writes (M, H, W) ``g = sqrt(sx^2 + sy^2)``, ``g2 = sx^2 + sy^2`` and ``ratio = sy / sx``,
    NaN where ``sx == 0`` (the caller takes the arctangent and puts pi/2 there). ``two`` is
    2 in the dtype of ``xp``.
    """
    n_maps, hp, wp = xp.shape
    for m in range(n_maps):
        for i in range(hp - 2):
            for j in range(wp - 2):
                smooth_left = (xp[m, i, j] + two * xp[m, i + 1, j]) + xp[m, i + 2, j]
                smooth_right = (xp[m, i, j + 2] + two * xp[m, i + 1, j + 2]) + xp[m, i + 2, j + 2]
                sx = smooth_left - smooth_right
                diff_left = xp[m, i + 2, j] - xp[m, i, j]
                diff_mid = xp[m, i + 2, j + 1] - xp[m, i, j + 1]
                diff_right = xp[m, i + 2, j + 2] - xp[m, i, j + 2]
                sy = (diff_left + two * diff_mid) + diff_right
                sq = sx * sx + sy * sy
                g2[m, i, j] = sq
                g[m, i, j] = math.sqrt(sq)
                ratio[m, i, j] = sy / sx if sx != 0 else math.nan


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def qabf_exponents(g, g2, angle, n_src, quirk, consts, out):  # pragma: no cover - compiled
    """Arguments of the two sigmoids of Qabf, for each source against the fused image.

    ``g, g2, angle``: (S + 1, H, W) Sobel magnitude, squared magnitude and angle (pi/2 where
    NaN), sources first. Writes ``out[0, s] = -15 (G - 0.5)`` and ``out[1, s] = -22 (A - 0.8)``
    with ``G = min(g_s, g_F) / max(g_s, g_F)`` (``g_F`` where g2 are equal if ``quirk``, else 1)
    and ``A = 1 - |alpha_s - alpha_F| / (pi / 2)``. ``consts`` = (1, 0.5, 0.8, -15, -22, pi/2)
    in the dtype of ``g``, so that all arithmetic stays in that dtype.
    """
    _, h, wd = g.shape
    one, c_g, c_a, k_g, k_a, half_pi = (
        consts[0],
        consts[1],
        consts[2],
        consts[3],
        consts[4],
        consts[5],
    )
    for s in range(n_src):
        for i in range(h):
            for j in range(wd):
                a_f = angle[n_src, i, j]
                if math.isnan(a_f):
                    a_f = half_pi
                a_s = angle[s, i, j]
                if math.isnan(a_s):
                    a_s = half_pi
                gs = g[s, i, j]
                gf = g[n_src, i, j]
                if g2[s, i, j] == g2[n_src, i, j]:
                    big_g = gf if quirk else one
                else:
                    big_g = min(gs, gf) / max(gs, gf)
                big_a = one - abs(a_s - a_f) / half_pi
                out[0, s, i, j] = (big_g - c_g) * k_g
                out[1, s, i, j] = (big_a - c_a) * k_a


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def qabf_sums(g, e, n_src, c_g, c_a):  # pragma: no cover - compiled
    """Qabf from magnitudes ``g`` (S + 1, H, W) and ``e = exp(qabf_exponents)`` (2, S, H, W).

    ``Q_sF = (c_g / (1 + e_g)) * (c_a / (1 + e_a))``; returns
    ``sum_s sum(Q_sF * g_s) / sum_s sum(g_s)`` (products in the dtype of ``g``, sums float64).
    """
    _, h, wd = g.shape
    one = c_g / c_g
    nume = 0.0
    deno = 0.0
    for s in range(n_src):
        for i in range(h):
            for j in range(wd):
                q = (c_g / (e[0, s, i, j] + one)) * (c_a / (e[1, s, i, j] + one))
                nume += np.float64(q * g[s, i, j])
                deno += np.float64(g[s, i, j])
    return nume / deno


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def grey_levels(x, scale, out):  # pragma: no cover - compiled
    """``out = clip(round_half_even(x * scale), 0, 255)`` as uint8 (``scale == 1``: no product)."""
    flat_x = x.ravel()
    flat_out = out.ravel()
    for i in range(flat_x.size):
        v = flat_x[i] if scale == 1.0 else flat_x[i] * scale
        r = np.rint(v)
        if r < 0.0:
            r = 0.0
        elif r > 255.0:
            r = 255.0
        flat_out[i] = np.uint8(r)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def entropy_of_levels(levels, base2):  # pragma: no cover - compiled
    """Shannon entropy of the 256-bin histogram of ``levels`` (uint8, any shape)."""
    counts = np.zeros(256, dtype=np.int64)
    flat = levels.ravel()
    for i in range(flat.size):
        counts[flat[i]] += 1
    n = float(flat.size)
    h = 0.0
    for c in counts:
        if c > 0:
            p = c / n
            h -= p * (math.log2(p) if base2 else math.log(p))
    return h


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def mutual_information_of_levels(a, b, base2):  # pragma: no cover - compiled
    """MI of two uint8 level images of equal size: ``sum p_ab log(p_ab / (p_a p_b))``.

    Bins are visited in row-major order of the 256 x 256 joint histogram (the order of the
    tensor code); natural log, or log2 with ``base2``.
    """
    joint = np.zeros((256, 256), dtype=np.int64)
    ca = np.zeros(256, dtype=np.int64)
    cb = np.zeros(256, dtype=np.int64)
    fa = a.ravel()
    fb = b.ravel()
    for i in range(fa.size):
        joint[fa[i], fb[i]] += 1
        ca[fa[i]] += 1
        cb[fb[i]] += 1
    n = float(fa.size)
    mi = 0.0
    for u in range(256):
        if ca[u] == 0:
            continue
        pa = ca[u] / n
        for v in range(256):
            c = joint[u, v]
            if c > 0:
                p = c / n
                r = p / (pa * (cb[v] / n))
                mi += p * (math.log2(r) if base2 else math.log(r))
    return max(mi, 0.0)


@njit(cache=_CACHE, nogil=True, error_model="numpy", fastmath=_REDUCE)
def standard_deviation(x):  # pragma: no cover - compiled
    """Population standard deviation of ``x`` (any shape), two passes in float64."""
    flat = x.ravel()
    n = flat.size
    total = 0.0
    for i in range(n):
        total += np.float64(flat[i])
    mean = total / n
    acc = 0.0
    for i in range(n):
        d = np.float64(flat[i]) - mean
        acc += d * d
    return math.sqrt(acc / n)


@njit(cache=_CACHE, nogil=True, error_model="numpy", fastmath=_REDUCE)
def spatial_frequency(f):  # pragma: no cover - compiled
    """``sqrt(mean(row diffs^2) + mean(column diffs^2))`` of ``f`` (H, W), in float64."""
    h, w = f.shape
    rf = 0.0
    cf = 0.0
    for i in range(h):
        for j in range(1, w):
            d = np.float64(f[i, j]) - np.float64(f[i, j - 1])
            rf += d * d
    for i in range(1, h):
        for j in range(w):
            d = np.float64(f[i, j]) - np.float64(f[i - 1, j])
            cf += d * d
    return math.sqrt(rf / (h * (w - 1)) + cf / ((h - 1) * w))


@njit(cache=_CACHE, nogil=True, error_model="numpy", fastmath=_REDUCE)
def average_gradient(f, central):  # pragma: no cover - compiled
    """Mean of ``sqrt((G_rows^2 + G_cols^2) / 2)`` over ``f`` (H, W), in float64.

    ``central``: central differences, one-sided at the borders, over all pixels (NumPy's
    ``gradient``); else forward differences over the (H - 1)(W - 1) pixels that have both.
    """
    f = f.astype(np.float64)
    h, w = f.shape
    acc = 0.0
    if central:
        for i in range(h):
            for j in range(w):
                if i == 0:
                    gr = f[1, j] - f[0, j]
                elif i == h - 1:
                    gr = f[h - 1, j] - f[h - 2, j]
                else:
                    gr = (f[i + 1, j] - f[i - 1, j]) / 2
                if j == 0:
                    gc = f[i, 1] - f[i, 0]
                elif j == w - 1:
                    gc = f[i, w - 1] - f[i, w - 2]
                else:
                    gc = (f[i, j + 1] - f[i, j - 1]) / 2
                acc += math.sqrt((gr * gr + gc * gc) / 2)
        return acc / (h * w)
    for i in range(h - 1):
        for j in range(w - 1):
            gr = f[i + 1, j] - f[i, j]
            gc = f[i, j + 1] - f[i, j]
            acc += math.sqrt((gr * gr + gc * gc) / 2)
    return acc / ((h - 1) * (w - 1))


@njit(cache=_CACHE, nogil=True, error_model="numpy", fastmath=_REDUCE)
def mean_squared_error(src, f):  # pragma: no cover - compiled
    """Mean over the S sources (S, ...) of the mean of ``(S_s - F)^2``, in float64."""
    fs = f.ravel()
    n = fs.size
    total = 0.0
    for s in range(src.shape[0]):
        ss = src[s].ravel()
        acc = 0.0
        for i in range(n):
            d = np.float64(ss[i]) - np.float64(fs[i])
            acc += d * d
        total += acc / n
    return total / src.shape[0]


@njit(cache=_CACHE, nogil=True, error_model="numpy", fastmath=_REDUCE)
def scd(a, b, f):  # pragma: no cover - compiled
    """``corr(A, F - B) + corr(B, F - A)`` (Pearson) of equally shaped arrays, in float64."""
    fa = a.ravel().astype(np.float64)
    fb = b.ravel().astype(np.float64)
    ff = f.ravel().astype(np.float64)
    n = ff.size
    sa = sb = sfa = sfb = 0.0
    for i in range(n):
        sa += fa[i]
        sb += fb[i]
        sfb += ff[i] - fb[i]
        sfa += ff[i] - fa[i]
    ma, mb, mfb, mfa = sa / n, sb / n, sfb / n, sfa / n
    xy1 = xx1 = yy1 = xy2 = xx2 = yy2 = 0.0
    for i in range(n):
        x1 = fa[i] - ma
        y1 = (ff[i] - fb[i]) - mfb
        x2 = fb[i] - mb
        y2 = (ff[i] - fa[i]) - mfa
        xy1 += x1 * y1
        xx1 += x1 * x1
        yy1 += y1 * y1
        xy2 += x2 * y2
        xx2 += x2 * x2
        yy2 += y2 * y2
    return xy1 / math.sqrt(xx1 * yy1) + xy2 / math.sqrt(xx2 * yy2)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def gray_reference(rgb, consts, out):  # pragma: no cover - compiled
    """OpenCV's float ``BGR2GRAY`` then round half to even, of 8-bit ``rgb`` (H, W, 3) into
    float32 ``out`` (H, W): ``fma(R, cr, fma(B, cb, G * cg))`` in float32, each fused step
    exact in float64 and rounded once (as ``image_reading.rgb_to_gray_reference``).
    ``consts`` = (cr, cg, cb) as float64 values of the float32 weights."""
    cr, cg, cb = consts[0], consts[1], consts[2]
    h, w = out.shape
    for i in range(h):
        for j in range(w):
            t = np.float64(np.float32(rgb[i, j, 1] * cg))
            t = np.float64(np.float32(rgb[i, j, 2] * cb + t))
            y = np.float64(np.float32(rgb[i, j, 0] * cr + t))
            r = math.floor(y + 0.5)
            if r - y == 0.5 and r % 2.0 == 1.0:  # a tie: to even
                r -= 1.0
            out[i, j] = r
