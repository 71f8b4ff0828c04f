"""Haghighat's windowed FMI (``fuse4seg.metrics.windowed_fmi``): golden values of a public
Python port, a window-by-window transcription of ``fmi.m``, the quirk, invariants, errors.

Golden values: cslib (github.com/CharlesShan-hub/cslib, ``metrics/collection/fmi.py``, a port
of ``fmi.m``) run outside the repository in float64 on Harvard pairs, fused = max(A, B) or
round((A + B) / 2). cslib's own ``_wavelet`` correlates with Lo_D and starts one sample late,
which shifts every sub-band by one coefficient against MATLAB's ``dwt2``; for FMI_w it was run
with MATLAB's transform instead (PyWavelets ``dwt2``, mode 'symmetric', with the filter bank
of MATLAB's ``wfilters('dmey')``). FMI_w is checked on the central 128 x 128 crop: on the
black backgrounds many wavelet windows vary only at rounding level and their min-max
normalised patterns (hence the full-image value, by about 1e-4) depend on the summation order.

FMI_pixel, FMI_g and FMI_edge (``fmi.m``'s features 'none', 'gradient' = MATLAB ``gradient``,
'edge' = MATLAB ``edge``): cslib's ``fmi`` run the same way, with three changes so that it
computes what ``fmi.m`` computes (script ``gold_fmi_new.py``, outside the repository): the
identity shortcut and its quirk and ``mi == 0 -> 0`` (cslib leaves out the first and puts
mi = 0.5 where H_S + H_F = 0), ``numpy.gradient(x, axis=1)`` for its 'gradient' (cslib uses
sqrt((gx² + gy²)/2), not ``fmi.m``'s), and for 'edge' a loop transcription of ``edge.m``'s
portable Sobel path with thinning (cslib's own skips the thinning). They agree to 5e-16.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fuse4seg.metrics import (
    compute_fusion_metrics,
    fmi_dct,
    fmi_edge,
    fmi_gradient,
    fmi_pixel,
    fmi_wavelet,
    fmi_windowed,
    read_gray_reference,
)
from fuse4seg.metrics.fusion_collection import AVERAGED_OVER_SOURCES
from fuse4seg.metrics.windowed_fmi import matlab_edge_sobel, matlab_gradient_x


def _pair(mod: str, name: str, rule: str, harvard_dir):
    a = torch.from_numpy(read_gray_reference(harvard_dir / mod / "MRI" / name)).double()
    b = torch.from_numpy(read_gray_reference(harvard_dir / mod / mod[4:] / name)).double()
    f = torch.maximum(a, b) if rule == "max" else torch.round((a + b) / 2)
    return a, b, f


_GOLDEN = {  # (FMI_w on [64:192, 64:192], FMI_dct on the whole 256 x 256 image)
    ("MRI_CT", "11.png", "max"): (0.40334917634074563, 0.3351743725365257),
    ("MRI_PET", "13.png", "mean"): (0.5200171229294531, 0.5214691921226462),
    ("MRI_SPECT", "12.png", "max"): (0.4006872941791694, 0.3052875379067862),
}


@pytest.mark.parametrize("key", sorted(_GOLDEN))
def test_fmi_w_and_dct_match_the_public_port(harvard_dir, key):
    a, b, f = _pair(*key, harvard_dir)
    want_w, want_dct = _GOLDEN[key]
    src = torch.stack([a, b])[None]
    assert fmi_dct(src, f[None]).item() == pytest.approx(want_dct, rel=1e-10)
    crop = (slice(None), slice(None), slice(64, 192), slice(64, 192))
    assert fmi_wavelet(src[crop], f[None, 64:192, 64:192]).item() == pytest.approx(want_w, rel=1e-9)


_GOLDEN_PGE = {  # (FMI_pixel, FMI_g, FMI_edge) on the whole 256 x 256 images, reference
    ("MRI_CT", "11.png", "max"): (0.7099159944705029, 0.6940056231048937, 0.807971091016728),
    ("MRI_PET", "13.png", "mean"): (0.7337197327196524, 0.7371435451763164, 0.8793606980853088),
    ("MRI_SPECT", "12.png", "max"): (0.7697038167934543, 0.746138857056945, 0.8503019783967323),
}


@pytest.mark.parametrize("key", sorted(_GOLDEN_PGE))
def test_fmi_pixel_gradient_edge_match_the_public_port(harvard_dir, key):
    a, b, f = _pair(*key, harvard_dir)
    src = torch.stack([a, b])[None]
    got = [fn(src, f[None]).item() for fn in (fmi_pixel, fmi_gradient, fmi_edge)]
    assert got == pytest.approx(_GOLDEN_PGE[key], rel=1e-12)


def test_matlab_gradient_x():
    x = torch.tensor([[1.0, 2.0, 4.0, 8.0], [0.0, 3.0, 3.0, 0.0]])
    want = torch.tensor([[1.0, 1.5, 3.0, 4.0], [3.0, 1.5, -1.5, -3.0]])  # one-sided at the ends
    assert torch.equal(matlab_gradient_x(x), want)
    assert torch.equal(matlab_gradient_x(x[:, :1]), torch.zeros(2, 1))


def test_matlab_edge_sobel_step_and_threshold():
    # a vertical step: b = 16 on the columns either side of it, 4 mean(b) = 10.7 < 16; the
    # thinning keeps the column whose left neighbour is <= and right neighbour < (MATLAB's)
    x = torch.zeros(1, 6, 12, dtype=torch.float64)
    x[..., 6:] = 8.0
    want = torch.zeros(1, 6, 12, dtype=torch.float64)
    want[..., 6] = 1.0
    assert torch.equal(matlab_edge_sobel(x), want)
    assert torch.equal(matlab_edge_sobel(x.transpose(1, 2)), want.transpose(1, 2))
    # the same step on 6 columns: 4 mean(b) = 21.3 > 16, no edge
    assert not matlab_edge_sobel(x[..., 3:9]).any()


def _edge_loops(a: np.ndarray) -> np.ndarray:
    """``edge(a)`` (Sobel, automatic threshold, thinning) pixel by pixel, as in ``edge.m``'s
    portable code path (replicate padding, op = fspecial('sobel') / 8)."""
    m, n = a.shape
    p = np.pad(a, 1, mode="edge")
    op = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]) / 8
    bx, by = np.zeros((m, n)), np.zeros((m, n))
    for r in range(m):
        for c in range(n):
            bx[r, c] = (p[r : r + 3, c : c + 3] * op.T).sum()
            by[r, c] = (p[r : r + 3, c : c + 3] * op).sum()
    b = bx * bx + by * by
    cutoff = 4 * b.sum() / b.size
    e = np.zeros((m, n))
    tol = 100 * np.finfo(float).eps
    for r in range(m):
        for c in range(n):
            b1 = c == 0 or b[r, c - 1] <= b[r, c]
            b2 = c == n - 1 or b[r, c] > b[r, c + 1]
            b3 = r == 0 or b[r - 1, c] <= b[r, c]
            b4 = r == m - 1 or b[r, c] > b[r + 1, c]
            x_dir = abs(bx[r, c]) >= abs(by[r, c]) - tol and b1 and b2
            y_dir = abs(by[r, c]) >= abs(bx[r, c]) - tol and b3 and b4
            e[r, c] = b[r, c] > cutoff and (x_dir or y_dir)
    return e


def test_matlab_edge_sobel_matches_the_pixel_loops():
    g = torch.Generator().manual_seed(5)
    for shape in ((13, 11), (7, 16)):
        x = torch.randint(0, 6, shape, generator=g).double() * 30  # plateaus: ties in b
        x[:3] = 0.0
        got = matlab_edge_sobel(x[None])[0].numpy()
        want = _edge_loops(x.numpy())
        assert want.any() and np.array_equal(got, want), shape


def _fmi_loops(a: np.ndarray, b: np.ndarray, f: np.ndarray, quirk: bool = True) -> float:
    """``fmi.m`` with feature 'none' and w = 3, window by window; ``quirk=False`` compares B
    with F's raw window (the standard convention)."""

    def normalise(x):
        lo, hi = x.min(), x.max()
        return np.ones_like(x) if hi == lo else (x - lo) / (hi - lo)

    def h(p):
        p = p[p != 0]
        return float(-(p * np.log2(np.abs(p))).sum())

    def nmi(x, y):  # x: source window, y: F window, both normalised (3, 3)
        px, py = x.flatten("F") / x.sum(), y.flatten("F") / y.sum()
        cx, cy = np.cumsum(px), np.cumsum(py)
        tx, ty = px - px.mean(), py - py.mean()
        num = (tx * ty).sum()
        c = 0.0 if num == 0 else num / math.sqrt((tx * tx).sum() * (ty * ty).sum())
        i = np.arange(1, 10)
        sdx = math.sqrt(max((i * i * px).sum() - (i * px).sum() ** 2, 0.0))
        sdy = math.sqrt(max((i * i * py).sum() - (i * py).sum() ** 2, 0.0))

        def bound(u, v):  # Fréchet upper (c >= 0) or lower (c < 0) bound
            return 0.5 * (u + v - abs(u - v)) if c >= 0 else 0.5 * (u + v - 1 + abs(u + v - 1))

        if c == 0 or sdx == 0 or sdy == 0:
            phi = 0.0
        else:
            cov = sum(bound(cy[p], cx[q]) - cy[p] * cx[q] for p in range(9) for q in range(9))
            phi = c / (cov / (sdx * sdy))
        big = np.zeros((10, 10))  # C(i, j) with a zero first row and column
        for p in range(9):
            for q in range(9):
                big[p + 1, q + 1] = bound(cy[p], cx[q])
        cell = big[1:, 1:] - big[:-1, 1:] - big[1:, :-1] + big[:-1, :-1]
        joint = phi * cell + (1 - phi) * np.outer(py, px)
        mi = h(px) + h(py) - h(joint)
        return 0.0 if mi == 0 else 2 * mi / (h(px) + h(py))

    rows, cols = f.shape
    vals = []
    for p in range(rows - 2):
        for q in range(cols - 2):
            fsub = f[p : p + 3, q : q + 3]
            scores = []
            for x in (a, b):
                sub = x[p : p + 3, q : q + 3]
                ref = fsub if quirk else f[p : p + 3, q : q + 3]
                if np.array_equal(sub, ref):
                    scores.append(1.0)
                    continue
                fsub = normalise(ref)
                scores.append(nmi(normalise(sub), fsub))
            vals.append(sum(scores) / 2)
    return float(np.mean(vals))


def _blocky(seed: int, shape=(9, 10)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, shape, generator=g).double() * 40


def test_fmi_pixels_match_the_window_by_window_code():
    a, b = _blocky(1), _blocky(2)
    f = torch.maximum(a, b)
    a[:4, :4] = 0.0  # windows where A, B and F are flat and equal, others where one differs
    b[:4, :4] = 0.0
    f[:4, :4] = 0.0
    b[5:, 6:] = f[5:, 6:]  # B = F there (A not): the quirk decides these windows
    src = torch.stack([a, b])[None]
    for convention, quirk in (("reference", True), ("standard", False)):
        want = _fmi_loops(a.numpy(), b.numpy(), f.numpy(), quirk)
        got = fmi_windowed(src, f[None], "none", convention).item()
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), convention


def test_fmi_quirk_on_a_single_window():
    a = torch.tensor([[3.0, 1.0, 4.0], [1.0, 5.0, 9.0], [2.0, 6.0, 5.0]])
    zero = torch.zeros(3, 3)
    src = torch.stack([a, zero])[None]
    # A differs from F: F's window becomes ones; B (zeros) then differs from it and two
    # uniform windows have mutual information 0. The paper's test (standard) gives B 1.
    ref = fmi_windowed(src, zero[None], "none", "reference").item()
    std = fmi_windowed(src, zero[None], "none", "standard").item()
    a_part = fmi_windowed(torch.stack([a, a])[None], zero[None], "none").item()
    assert ref == pytest.approx(a_part / 2, abs=1e-12)
    assert std == pytest.approx(a_part / 2 + 0.5, abs=1e-12)
    assert abs(a_part) < 1e-12  # a flat F window carries no information about A


@pytest.mark.parametrize("feature", ["wavelet", "dct", "gradient", "edge", "none"])
def test_fmi_perfect_fusion_reduction_and_batches(feature):
    g = torch.Generator().manual_seed(3)
    a = torch.rand(2, 24, 21, generator=g, dtype=torch.float64) * 255
    b = torch.rand(2, 24, 21, generator=g, dtype=torch.float64) * 255
    src = torch.stack([a, a], 1)
    ones = fmi_windowed(src, a, feature)
    assert ones.shape == (2,) and ones.dtype == torch.float64
    assert torch.allclose(ones, torch.ones(2, dtype=torch.float64), atol=1e-12)
    mixed = torch.stack([a, b], 1)
    f = (a + b) / 2
    mean = fmi_windowed(mixed, f, feature)
    assert torch.allclose(fmi_windowed(mixed, f, feature, reduction="sum"), 2 * mean)
    assert torch.allclose(fmi_windowed(mixed[:1], f[:1], feature), mean[:1], rtol=1e-12)
    assert ((mean > 0) & (mean < 1)).all()
    # a common positive scaling leaves the value unchanged
    assert torch.allclose(fmi_windowed(mixed * 3, f * 3, feature), mean, rtol=1e-7)


def test_fmi_registered_as_averaged_metrics():
    names = {
        "FMI_w": fmi_wavelet,
        "FMI_dct": fmi_dct,
        "FMI_pixel": fmi_pixel,
        "FMI_g": fmi_gradient,
        "FMI_edge": fmi_edge,
    }
    assert set(names) <= AVERAGED_OVER_SOURCES
    g = torch.Generator().manual_seed(4)
    src = torch.rand(1, 2, 20, 20, generator=g, dtype=torch.float64) * 255
    f = src.mean(1)
    vals = compute_fusion_metrics(src, f, metrics=list(names))
    total = compute_fusion_metrics(src, f, metrics=list(names), over_sources="sum")
    for name, fn in names.items():
        assert torch.allclose(vals[name], fn(src, f)), name
        assert torch.allclose(total[name], 2 * fn(src, f)), name


def test_fmi_errors():
    x = torch.rand(1, 2, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="feature"):
        fmi_windowed(x, x[:, 0], "sobel")
    with pytest.raises(ValueError, match="window"):
        fmi_windowed(x, x[:, 0], "none", window=4)
    with pytest.raises(ValueError, match="reduction"):
        fmi_windowed(x, x[:, 0], "none", reduction="max")
    with pytest.raises(ValueError, match="smaller than the window"):
        fmi_windowed(x[..., :2, :2], x[:, 0, :2, :2], "dct")
