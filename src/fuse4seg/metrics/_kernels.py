"""Compiled CPU kernels for the costliest fusion metrics (private).

VIF and the reference SSIM are dominated by separable filtering of a dozen maps per image.
Written as PyTorch tensor operations every filter tap is one pass over memory (34 passes
per map for VIF's 17-tap window), which is memory bound on a CPU. The Numba kernels below
keep the filtered row in cache and fold the per-pixel formulas into the same loop, so each
image is read a few times instead of a hundred. They compute the same arithmetic as the
tensor code in ``fusion.py``, in the same precision; where the order of a sum differs
(vectorised sums, VIF's 17-tap rows pass, SSIM's and Qabf's sums row by row) the results
differ only by rounding, ~1e-16 relative per sum (tests check both paths against each other
to 1e-12 and against the reference evaluator's golden values).

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


@njit(cache=_CACHE, nogil=True, error_model="numpy", fastmath=_REDUCE)
def _row_sum(x):  # pragma: no cover - compiled
    """Sum of the float64 row ``x`` (W,), vectorised (see ``_REDUCE``)."""
    total = 0.0
    for j in range(x.shape[0]):
        total += x[j]
    return total


# One expression per output sample keeps the sum of the 17 (9) taps of VIF's first (second)
# scale in registers: about 1.7x faster than accumulating tap by tap into the row. The rows
# pass of the 17-tap window (the costliest loop) adds the symmetric taps first, w[t] (x[t] +
# x[16 - t]) (VIF's Gaussian windows are symmetric, checked by ``fusion._vif_windows``), in
# two interleaved partial sums, and computes two output rows from one set of loads: about
# 1.5x faster again. This order differs from the tensor code's only by rounding (~1e-16
# relative per filtered value).


@njit(cache=_CACHE, nogil=True, error_model="numpy", inline="always")
def _symmetric_17(w, x):  # pragma: no cover - compiled
    """``sum_t w[t] x[t]`` of a tuple of 17 samples ``x`` for symmetric taps ``w`` (17,),
    summed as the pairs ``w[t] (x[t] + x[16 - t])`` in two interleaved partial sums."""
    a = w[8] * x[8]
    b = w[0] * (x[0] + x[16])
    a += w[1] * (x[1] + x[15])
    b += w[2] * (x[2] + x[14])
    a += w[3] * (x[3] + x[13])
    b += w[4] * (x[4] + x[12])
    a += w[5] * (x[5] + x[11])
    b += w[6] * (x[6] + x[10])
    a += w[7] * (x[7] + x[9])
    return a + b


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _taps_rows_17(src, w, m, i, row):  # pragma: no cover - compiled
    for j in range(row.shape[0]):
        x = (
            src[m, i, j],
            src[m, i + 1, j],
            src[m, i + 2, j],
            src[m, i + 3, j],
            src[m, i + 4, j],
            src[m, i + 5, j],
            src[m, i + 6, j],
            src[m, i + 7, j],
            src[m, i + 8, j],
            src[m, i + 9, j],
            src[m, i + 10, j],
            src[m, i + 11, j],
            src[m, i + 12, j],
            src[m, i + 13, j],
            src[m, i + 14, j],
            src[m, i + 15, j],
            src[m, i + 16, j],
        )
        row[j] = _symmetric_17(w, x)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _taps_rows_17_pair(src, w, m, i, row0, row1):  # pragma: no cover - compiled
    """``_taps_rows_17`` of the output rows i (``row0``) and i + 1 (``row1``) at once."""
    for j in range(row0.shape[0]):
        x0 = src[m, i, j]
        x1 = src[m, i + 1, j]
        x2 = src[m, i + 2, j]
        x3 = src[m, i + 3, j]
        x4 = src[m, i + 4, j]
        x5 = src[m, i + 5, j]
        x6 = src[m, i + 6, j]
        x7 = src[m, i + 7, j]
        x8 = src[m, i + 8, j]
        x9 = src[m, i + 9, j]
        x10 = src[m, i + 10, j]
        x11 = src[m, i + 11, j]
        x12 = src[m, i + 12, j]
        x13 = src[m, i + 13, j]
        x14 = src[m, i + 14, j]
        x15 = src[m, i + 15, j]
        x16 = src[m, i + 16, j]
        x17 = src[m, i + 17, j]
        row0[j] = _symmetric_17(
            w, (x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15, x16)
        )
        row1[j] = _symmetric_17(
            w, (x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15, x16, x17)
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
    of ``_filters._conv_axis``; the rows pass of 17 taps sums symmetric pairs, see above);
    ``step`` keeps every ``step``-th output along both axes.
    ``out`` is (M, (H - k) // step + 1, (W - k) // step + 1).
    """
    n_maps, h, wd = src.shape
    ho = (h - k) // step + 1
    wo = (wd - k) // step + 1
    row = np.empty(wd)
    row1 = np.empty(wd)
    pairs = k == 17 and step == 1  # two output rows per rows pass
    for m in range(n_maps):
        if pairs:
            for io in range(0, ho - 1, 2):
                _taps_rows_17_pair(src, w, m, io, row, row1)
                _taps_columns_17(row, w, out[m, io])
                _taps_columns_17(row1, w, out[m, io + 1])
        for io in range(ho - ho % 2 if pairs else 0, ho):
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


# Scratch memory: the kernels below that need large temporaries take them from a 1D ``work``
# array given by the caller (``fusion.py`` keeps one per thread and dtype). Allocated and
# freed on every call instead, such blocks are returned to the operating system or not
# depending on the allocation history of the process (glibc's thresholds), and faulted back
# in on the next call when they are (about 2000 page faults per 256 x 256 image in the CLI,
# some milliseconds).
_ALIGN = 64  # bytes: one cache line


def work_size(shapes, dtype) -> int:
    """Elements of a ``work`` array holding the arrays ``shapes`` ((n, h, w), ...) of ``dtype``
    one after the other, each at a cache-line boundary (see ``_take``)."""
    slack = _ALIGN // np.dtype(dtype).itemsize
    return sum(n * h * w + slack for n, h, w in shapes)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _take(work, start, n, h, w):  # pragma: no cover - compiled
    """An uninitialised C-contiguous (n, h, w) view of ``work`` (1D) that begins at element
    ``start`` or at most one cache line later, on a cache-line boundary (so that vectorised
    loads of 256-pixel rows do not straddle two lines); and the element after it."""
    per_line = _ALIGN // work.itemsize
    start += (-(work.ctypes.data // work.itemsize + start)) % per_line
    end = start + n * h * w
    return work[start:end].reshape((n, h, w)), end


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _fill_band(src, f, i0, maps):  # pragma: no cover - compiled
    """``maps[:, r]`` = row ``i0 + r`` of the sources ``src`` (S, H, W), of F ``f`` (H, W), of
    their squares and of each source times F, in float64 (``maps``: (2S + 2 + S, R, W))."""
    n_src = src.shape[0]
    s1 = n_src + 1
    for r in range(maps.shape[1]):
        i = i0 + r
        for j in range(maps.shape[2]):
            v = np.float64(f[i, j])
            maps[n_src, r, j] = v
            maps[s1 + n_src, r, j] = v * v
        for m in range(n_src):
            for j in range(maps.shape[2]):
                v = np.float64(src[m, i, j])
                maps[m, r, j] = v
                maps[s1 + m, r, j] = v * v
                maps[2 * s1 + m, r, j] = v * maps[n_src, r, j]


_VIF_BAND = 32  # output rows filtered at once: the band's maps stay in the L2 cache
_LOG_BLOCK = 32  # factors multiplied before one log: each is < 1e4, so no overflow


def _vif_band_shapes(n_src: int, h: int, w: int, k: int) -> list[tuple[int, int, int]]:
    """Shapes of ``_vif_scale``'s scratch arrays for images (h, w) and a k-tap window."""
    n_maps = 3 * n_src + 2
    band = min(_VIF_BAND, h - k + 1)
    return [(n_maps, band + k - 1, w), (n_maps, band, w - k + 1)]


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _vif_scale(src, f, w, k, sigma_nsq, eps, num, den, work):  # pragma: no cover - compiled
    """Add one scale's sums of VIF (see ``vif_num_den``) to ``num`` and ``den`` (S,).

    ``src`` (S, H, W) and ``f`` (H, W) are the images of the scale; ``w[:k]`` its Gaussian
    taps; ``work``: float64 scratch (``_vif_band_shapes``). The S + 1 images, their squares and
    each source times F are filtered (``_separable_valid``) in bands of ``_VIF_BAND`` output
    rows, each band's per-pixel terms summed before the next band is filtered (about 1.3x
    faster than whole maps, which do not fit in the cache; every row is computed as before,
    so the sums are the same).
    """
    n_src = src.shape[0]
    s1 = n_src + 1
    n_maps = 2 * s1 + n_src
    h, wd = f.shape
    ho, wo = h - k + 1, wd - k + 1
    band = min(_VIF_BAND, ho)
    for i0 in range(0, ho, band):
        band = min(band, ho - i0)  # the last band may be shorter
        maps, end = _take(work, 0, n_maps, band + k - 1, wd)  # the input rows of the band
        filt, _ = _take(work, end, n_maps, band, wo)  # its filtered rows
        _fill_band(src, f, i0, maps)
        _separable_valid(maps, w, k, 1, filt)
        for s in range(n_src):
            for i in range(band):
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


def vif_work_size(n_src: int, h: int, w: int) -> int:
    """Elements of the float64 scratch that ``vif_num_den`` needs for images (h, w)."""
    h2, w2 = (h - 9) // 2 + 1, (w - 9) // 2 + 1
    h3, w3 = (h2 - 5) // 2 + 1, (w2 - 5) // 2 + 1
    shapes = [(n_src + 1, h2, w2), (n_src + 1, h3, w3)] + _vif_band_shapes(n_src, h, w, 17)
    return work_size(shapes, np.float64)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def vif_num_den(src, f, windows, sizes, sigma_nsq, eps, work):  # pragma: no cover - compiled
    """Numerator and denominator sums of multi-scale pixel VIF for one image.

    Args:
        src: (S, H, W) sources and f: (H, W) fused image, float32 or float64, on 0-255
            (read as float64: all arithmetic is float64).
        windows: (4, 17) float64, row ``s`` holding the ``sizes[s]`` Gaussian taps of scale s.
        sizes: (4,) int64 window sizes (17, 9, 5, 3).
        sigma_nsq, eps: the model's noise variance (2) and guard (1e-10).
        work: float64 scratch of at least ``vif_work_size(S, H, W)`` elements.

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
    # the images of scales 2 and 3 (then 4, in the place of 2), then the bands' scratch
    h, wd = f.shape
    h2, w2 = (h - sizes[1]) // 2 + 1, (wd - sizes[1]) // 2 + 1
    h3, w3 = (h2 - sizes[2]) // 2 + 1, (w2 - sizes[2]) // 2 + 1
    imgs, end2 = _take(work, 0, s1, h2, w2)
    _, end3 = _take(work, end2, s1, h3, w3)
    bands = work[end3:]
    _vif_scale(src, f, windows[0], sizes[0], sigma_nsq, eps, num, den, bands)
    # the next scales: filter the images of the last one and keep every second pixel
    k = sizes[1]
    _separable_valid(src, windows[1], k, 2, imgs[:n_src])
    _separable_valid(f.reshape((1,) + f.shape), windows[1], k, 2, imgs[n_src:])
    _vif_scale(imgs[:n_src], imgs[n_src], windows[1], k, sigma_nsq, eps, num, den, bands)
    h, wd = h2, w2
    for sc in range(2, 4):
        k = sizes[sc]
        h, wd = (h - k) // 2 + 1, (wd - k) // 2 + 1
        down, _ = _take(work, end2 if sc == 2 else 0, s1, h, wd)
        _separable_valid(imgs, windows[sc], k, 2, down)
        imgs = down
        _vif_scale(imgs[:n_src], imgs[n_src], windows[sc], k, sigma_nsq, eps, num, den, bands)
    return num, den


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _box7_rows_pair(src, m, i, row0, row1):  # pragma: no cover - compiled
    """Rows pass of the 7 x 7 mean for the output rows i (``row0``) and i + 1 (``row1``) of map
    ``src[m]`` from one set of loads: each the float32 mean of 7 samples summed left to right
    in float64, stored as float64 (exactly)."""
    for j in range(row0.shape[0]):
        x1 = np.float64(src[m, i + 1, j])
        x2 = np.float64(src[m, i + 2, j])
        x3 = np.float64(src[m, i + 3, j])
        x4 = np.float64(src[m, i + 4, j])
        x5 = np.float64(src[m, i + 5, j])
        x6 = np.float64(src[m, i + 6, j])
        acc0 = np.float64(src[m, i, j]) + x1 + x2 + x3 + x4 + x5 + x6
        acc1 = x1 + x2 + x3 + x4 + x5 + x6 + np.float64(src[m, i + 7, j])
        row0[j] = np.float32(acc0 / 7.0)
        row1[j] = np.float32(acc1 / 7.0)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _box7_columns(row, out_row):  # pragma: no cover - compiled
    """Columns pass of the 7 x 7 mean: ``out_row`` (W - 6,) float32 from ``row`` (W,)."""
    for j in range(out_row.shape[0]):
        acc = row[j] + row[j + 1] + row[j + 2] + row[j + 3] + row[j + 4] + row[j + 5] + row[j + 6]
        out_row[j] = np.float32(acc / 7.0)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _box7_f32(src, out):  # pragma: no cover - compiled
    """7 x 7 mean of ``src`` (M, H, W) float32 -> ``out`` (M, H-6, W-6) float32.

    Each axis pass sums 7 samples left to right in float64, divides by 7 and stores float32
    (SciPy ``uniform_filter`` on float32 data, as ``_filters.box_filter_valid``); the rows
    pass computes two output rows at once.
    """
    n_maps, h, wd = src.shape
    ho = h - 6
    row0 = np.empty(wd)
    row1 = np.empty(wd)
    for m in range(n_maps):
        for i in range(0, ho - 1, 2):
            _box7_rows_pair(src, m, i, row0, row1)
            _box7_columns(row0, out[m, i])
            _box7_columns(row1, out[m, i + 1])
        if ho % 2:
            i = ho - 1
            for j in range(wd):
                acc = np.float64(src[m, i, j])
                for t in range(1, 7):
                    acc += np.float64(src[m, i + t, j])
                row0[j] = np.float32(acc / 7.0)
            _box7_columns(row0, out[m, i])


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _ssim_row(ux, uxx, uy, uyy, uxy, cov_norm, c1, c2, out):  # pragma: no cover - compiled
    """SSIM map along one row from the float32 window means of x, x^2, y, y^2 and x y
    (each (W',)), in float32 as scikit-image; written to the float64 row ``out``."""
    two = np.float32(2.0)
    for j in range(out.shape[0]):
        vx = cov_norm * (uxx[j] - ux[j] * ux[j])
        vy = cov_norm * (uyy[j] - uy[j] * uy[j])
        vxy = cov_norm * (uxy[j] - ux[j] * uy[j])
        a1 = two * ux[j] * uy[j] + c1
        a2 = two * vxy + c2
        b1 = ux[j] * ux[j] + uy[j] * uy[j] + c1
        b2 = vx + vy + c2
        out[j] = np.float64((a1 * a2) / (b1 * b2))


_SSIM_BAND = 32  # output rows at once, as VIF's bands


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _ssim_fill_band(f, src, i0, maps):  # pragma: no cover - compiled
    """``maps[:, r]`` = row ``i0 + r`` of f, f*f, then per source y, y*y, f*y (float32)."""
    n_src = src.shape[0]
    for r in range(maps.shape[1]):
        i = i0 + r
        for j in range(maps.shape[2]):
            v = f[i, j]
            maps[0, r, j] = v
            maps[1, r, j] = v * v
        for s in range(n_src):
            for j in range(maps.shape[2]):
                y = src[s, i, j]
                maps[2 + 3 * s, r, j] = y
                maps[3 + 3 * s, r, j] = y * y
                maps[4 + 3 * s, r, j] = f[i, j] * y


def ssim_work_size(n_src: int, h: int, w: int) -> int:
    """Elements of the float32 scratch that ``ssim_reference_means`` needs for images (h, w)."""
    band = min(_SSIM_BAND, h - 6)
    shapes = [(2 + 3 * n_src, band + 6, w), (2 + 3 * n_src, band, w - 6)]
    return work_size(shapes, np.float32)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def ssim_reference_means(f, src, cov_norm, c1, c2, work):  # pragma: no cover - compiled
    """Mean SSIM of fused ``f`` (H, W) against each source ``src`` (S, H, W), all float32.

    The reference convention: 7 x 7 uniform window, float32 arithmetic as scikit-image does
    on float32 images (``cov_norm``, ``c1``, ``c2`` given as float32), mean over the valid
    map in float64 (row by row, in bands of ``_SSIM_BAND`` rows). ``work``: float32 scratch
    of at least ``ssim_work_size(S, H, W)`` elements. Returns (S,) float64.
    """
    n_src, h, wd = src.shape
    n_maps = 2 + 3 * n_src  # f, f*f, then per source: y, y*y, f*y
    ho, wo = h - 6, wd - 6
    band = min(_SSIM_BAND, ho)
    totals = np.zeros(n_src)
    values = np.empty(wo)
    for i0 in range(0, ho, band):
        band = min(band, ho - i0)  # the last band may be shorter
        maps, end = _take(work, 0, n_maps, band + 6, wd)  # the input rows of the band
        filt, _ = _take(work, end, n_maps, band, wo)  # its window means
        _ssim_fill_band(f, src, i0, maps)
        _box7_f32(maps, filt)
        for s in range(n_src):
            for i in range(band):
                _ssim_row(
                    filt[0, i],
                    filt[1, i],
                    filt[2 + 3 * s, i],
                    filt[3 + 3 * s, i],
                    filt[4 + 3 * s, i],
                    cov_norm,
                    c1,
                    c2,
                    values,
                )
                totals[s] += _row_sum(values)
    return totals / (ho * wo)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def qabf_pad_band(src, f, i0, out):  # pragma: no cover - compiled
    """Rows ``i0 - 1 .. i0 + R`` of the sources ``src`` (S, H, W) and of F ``f`` (H, W), zero
    padded (outside the image and one column each side), into ``out`` (S + 1, R + 2, W + 2)."""
    n_src, h, wd = src.shape
    for m in range(n_src + 1):
        for r in range(out.shape[1]):
            i = i0 - 1 + r
            out[m, r, 0] = 0
            out[m, r, wd + 1] = 0
            if 0 <= i < h:
                for j in range(wd):
                    out[m, r, j + 1] = src[m, i, j] if m < n_src else f[i, j]
            else:
                for j in range(wd):
                    out[m, r, j + 1] = 0


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
def _qabf_row(g, e_g, e_a, c_g, c_a, out):  # pragma: no cover - compiled
    """``Q_sF * g_s`` along one row, in the dtype of ``g``, written to the float64 ``out``."""
    one = c_g / c_g
    for j in range(out.shape[0]):
        q = (c_g / (e_g[j] + one)) * (c_a / (e_a[j] + one))
        out[j] = q * g[j]


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def qabf_sums(g, e, n_src, c_g, c_a, sums):  # pragma: no cover - compiled
    """Add Qabf's sums over rows of magnitudes ``g`` (S + 1, R, W) and
    ``e = exp(qabf_exponents)`` (2, S, R, W) to ``sums`` (2,) float64.

    ``Q_sF = (c_g / (1 + e_g)) * (c_a / (1 + e_a))``; adds ``sum_s sum(Q_sF * g_s)`` to
    ``sums[0]`` and ``sum_s sum(g_s)`` to ``sums[1]`` (Qabf = their ratio; products in the
    dtype of ``g``, sums float64, row by row).
    """
    _, h, wd = g.shape
    values = np.empty(wd)
    for s in range(n_src):
        for i in range(h):
            _qabf_row(g[s, i], e[0, s, i], e[1, s, i], c_g, c_a, values)
            sums[0] += _row_sum(values)
            sums[1] += _row_sum(g[s, i])


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


# Histograms count runs of equal values (or pairs) before adding them: a black background
# otherwise makes every increment wait for the previous one to the same bin (about 1.6x).


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _histogram_256(flat):  # pragma: no cover - compiled
    """Counts (256,) int64 of the uint8 values ``flat`` (N,)."""
    counts = np.zeros(256, dtype=np.int64)
    if flat.size == 0:
        return counts
    last = flat[0]
    run = 0
    for i in range(flat.size):
        v = flat[i]
        if v == last:
            run += 1
        else:
            counts[last] += run
            last = v
            run = 1
    counts[last] += run
    return counts


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _joint_histogram_256(fa, fb, joint):  # pragma: no cover - compiled
    """Joint counts of the uint8 pairs ``(fa[i], fb[i])`` (N,) into ``joint`` (256, 256) int64
    (returned)."""
    joint[:] = 0
    if fa.size == 0:
        return joint
    last_a = fa[0]
    last_b = fb[0]
    run = 0
    for i in range(fa.size):
        x = fa[i]
        y = fb[i]
        if x == last_a and y == last_b:
            run += 1
        else:
            joint[last_a, last_b] += run
            last_a = x
            last_b = y
            run = 1
    joint[last_a, last_b] += run
    return joint


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def entropy_of_levels(levels, base2):  # pragma: no cover - compiled
    """Shannon entropy of the 256-bin histogram of ``levels`` (uint8, any shape)."""
    flat = levels.ravel()
    counts = _histogram_256(flat)
    n = float(flat.size)
    h = 0.0
    for c in counts:
        if c > 0:
            p = c / n
            h -= p * (math.log2(p) if base2 else math.log(p))
    return h


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def mutual_information_of_levels(a, b, base2, joint):  # pragma: no cover - compiled
    """MI of two uint8 level images of equal size: ``sum p_ab log(p_ab / (p_a p_b))``.

    Bins are visited in row-major order of the 256 x 256 joint histogram (the order of the
    tensor code); natural log, or log2 with ``base2``. ``joint``: (256, 256) int64 scratch.
    The marginal counts are the joint histogram's row and column sums (one scattered
    increment per pixel instead of three).
    """
    fa = a.ravel()
    fb = b.ravel()
    joint = _joint_histogram_256(fa, fb, joint)
    ca = np.zeros(256, dtype=np.int64)
    cb = np.zeros(256, dtype=np.int64)
    for u in range(256):
        total = 0
        for v in range(256):
            total += joint[u, v]
            cb[v] += joint[u, v]
        ca[u] = total
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
    The border columns are handled apart so that the loop over the inner ones is vectorised.
    """
    h, w = f.shape
    acc = 0.0
    if central:
        for i in range(h):
            # rows i - 1 and i + 1 (halved) inside, one-sided differences at the borders
            lo = i - 1 if i > 0 else 0
            hi = i + 1 if i < h - 1 else h - 1
            half = 0.5 if 0 < i < h - 1 else 1.0
            gr = (np.float64(f[hi, 0]) - np.float64(f[lo, 0])) * half
            gc = np.float64(f[i, 1]) - np.float64(f[i, 0])
            acc += math.sqrt((gr * gr + gc * gc) / 2)
            for j in range(1, w - 1):
                gr = (np.float64(f[hi, j]) - np.float64(f[lo, j])) * half
                gc = (np.float64(f[i, j + 1]) - np.float64(f[i, j - 1])) / 2
                acc += math.sqrt((gr * gr + gc * gc) / 2)
            gr = (np.float64(f[hi, w - 1]) - np.float64(f[lo, w - 1])) * half
            gc = np.float64(f[i, w - 1]) - np.float64(f[i, w - 2])
            acc += math.sqrt((gr * gr + gc * gc) / 2)
        return acc / (h * w)
    for i in range(h - 1):
        for j in range(w - 1):
            gr = np.float64(f[i + 1, j]) - np.float64(f[i, j])
            gc = np.float64(f[i, j + 1]) - np.float64(f[i, j])
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
    fa = a.ravel()
    fb = b.ravel()
    ff = f.ravel()
    n = ff.size
    sa = sb = sfa = sfb = 0.0
    for i in range(n):
        va, vb, vf = np.float64(fa[i]), np.float64(fb[i]), np.float64(ff[i])
        sa += va
        sb += vb
        sfb += vf - vb
        sfa += vf - va
    ma, mb, mfb, mfa = sa / n, sb / n, sfb / n, sfa / n
    xy1 = xx1 = yy1 = xy2 = xx2 = yy2 = 0.0
    for i in range(n):
        va, vb, vf = np.float64(fa[i]), np.float64(fb[i]), np.float64(ff[i])
        x1 = va - ma
        y1 = (vf - vb) - mfb
        x2 = vb - mb
        y2 = (vf - va) - mfa
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


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def png_unfilter(raw, bpp, out):  # pragma: no cover - compiled
    """Undo the PNG row filters of 8-bit samples: ``raw`` (H * (1 + R),) uint8 (each row's
    filter type, then its R bytes) into ``out`` (H, R) uint8; ``bpp`` bytes per pixel.

    Filter types 0-4 (none, sub, up, average, Paeth) as in the PNG specification; returns
    False (``out`` incomplete) for any other type byte.
    """
    h, stride = out.shape
    zeros = np.zeros(stride, dtype=np.uint8)
    for i in range(h):
        start = i * (stride + 1)
        kind = raw[start]
        line = raw[start + 1 : start + 1 + stride]
        cur = out[i]
        up = out[i - 1] if i > 0 else zeros
        if kind == 0:
            cur[:] = line
        elif kind == 1:
            for j in range(bpp):
                cur[j] = line[j]
            for j in range(bpp, stride):
                cur[j] = (np.int32(line[j]) + cur[j - bpp]) & 255
        elif kind == 2:
            for j in range(stride):
                cur[j] = (np.int32(line[j]) + up[j]) & 255
        elif kind == 3:
            for j in range(bpp):
                cur[j] = (np.int32(line[j]) + (np.int32(up[j]) >> 1)) & 255
            for j in range(bpp, stride):
                cur[j] = (np.int32(line[j]) + ((np.int32(cur[j - bpp]) + up[j]) >> 1)) & 255
        elif kind == 4:
            # one channel at a time, so that the left neighbour stays in a register
            for ch in range(bpp):
                a = (np.int32(line[ch]) + up[ch]) & 255  # no left pixel: the predictor is up
                cur[ch] = a
                c = np.int32(up[ch])
                for j in range(ch + bpp, stride, bpp):
                    b = np.int32(up[j])
                    pa = abs(b - c)
                    pb = abs(a - c)
                    pc = abs(a + b - 2 * c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    a = (np.int32(line[j]) + pred) & 255
                    cur[j] = a
                    c = b
        else:
            return False
    return True
