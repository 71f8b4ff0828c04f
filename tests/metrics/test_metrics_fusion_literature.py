"""The literature's further fusion metrics (``fusion_literature.py``): hand-computed cases,
conventions, and golden values of public Python implementations (CC, MSE, Nabf, Qm)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fuse4seg.metrics import (
    ALL_FUSION_METRICS,
    LOWER_IS_BETTER,
    compute_fusion_metrics,
    correlation_coefficient,
    cross_entropy,
    edge_intensity,
    labf,
    mse,
    nabf,
    normalized_mutual_information,
    piella,
    q_c,
    q_cb,
    q_cv,
    q_m,
    q_ncie,
    q_sf,
    q_y,
    read_gray_reference,
    rmse,
    tsallis_entropy,
)


def _noise(seed: int, shape=(1, 24, 24), offset: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).double() + offset


def _pair(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([a, b], 1)  # (B, 2, H, W)


def _tile(values, reps=(4, 4)) -> torch.Tensor:
    """A (1, H, W) image tiling a small pattern (histograms scale, shapes stay valid)."""
    return torch.tensor(values, dtype=torch.float64).tile(reps).unsqueeze(0)


def test_metric_count_and_every_metric_runs():
    assert len(ALL_FUSION_METRICS) == 38 and len(set(ALL_FUSION_METRICS)) == len(ALL_FUSION_METRICS)
    assert not {"Qp", "Qm", "MEF-SSIM", "FMI_w", "FMI_dct", "FMI_pixel", "FMI_g", "FMI_edge"} & (
        LOWER_IS_BETTER
    )  # higher is better
    a, b = _noise(1, (2, 48, 48)), _noise(2, (2, 48, 48))
    f = (a + b) / 2
    names = [m for m in ALL_FUSION_METRICS if m != "MS-SSIM"]  # MS-SSIM needs 176 px
    for conv in ("reference", "standard"):
        vals = compute_fusion_metrics(_pair(a, b), f, conv, names)
        assert list(vals) == names
        for n, v in vals.items():
            assert v.shape == (2,) and v.dtype == torch.float64 and torch.isfinite(v).all(), n


def test_over_sources_sum_or_mean():
    a, b = _noise(13, (1, 48, 48)), _noise(14, (1, 48, 48))
    f = (a + b) / 2
    names = ["MI", "SSIM", "NMI", "CE", "CC", "Qabf"]
    base = compute_fusion_metrics(_pair(a, b), f, metrics=names)
    mean = compute_fusion_metrics(_pair(a, b), f, metrics=names, over_sources="mean")
    total = compute_fusion_metrics(_pair(a, b), f, metrics=names, over_sources="sum")
    for n in ("MI", "SSIM", "NMI"):  # summed by default
        assert torch.allclose(mean[n], base[n] / 2) and torch.equal(total[n], base[n])
    for n in ("CE", "CC"):  # averaged by default
        assert torch.allclose(total[n], base[n] * 2) and torch.equal(mean[n], base[n])
    assert torch.equal(mean["Qabf"], base["Qabf"]) and torch.equal(total["Qabf"], base["Qabf"])
    with pytest.raises(ValueError, match="over_sources"):
        compute_fusion_metrics(_pair(a, b), f, metrics=names, over_sources="max")


def test_cross_entropy_hand_value():
    a = _tile([[0, 0], [255, 255]])  # p_A = (1/2, 1/2)
    f = _tile([[0, 255], [255, 255]])  # p_F = (1/4, 3/4)
    ce_af = 0.5 * math.log2(0.5 / 0.25) + 0.5 * math.log2(0.5 / 0.75)
    assert cross_entropy(_pair(a, f), f).item() == pytest.approx(ce_af / 2, rel=1e-12)
    assert cross_entropy(_pair(a, f), f, reduction="sum").item() == pytest.approx(ce_af)


def test_edge_intensity_of_a_ramp():
    ramp = torch.arange(8.0).view(1, 1, 8).expand(1, 8, 8)
    # Sobel across columns: 4 * 2 = 8 inside, 4 * 1 = 4 at the replicated borders
    assert edge_intensity(ramp).item() == pytest.approx((6 * 8 + 2 * 4) / 8, rel=1e-12)


def test_rmse_mse_conventions():
    f = _noise(3)
    src = _pair(f + 3, f - 4)
    n = f[0].numel()
    assert rmse(src, f, "standard").item() == pytest.approx(3.5, rel=1e-12)
    assert rmse(src, f, "reference").item() == pytest.approx(3.5 / math.sqrt(n), rel=1e-12)
    assert mse(src, f).item() == pytest.approx(12.5, rel=1e-12)  # grey levels squared
    assert mse(src, f, "standard").item() == pytest.approx(12.5 / 255**2, rel=1e-12)
    assert mse(src / 255, f / 255, "standard", data_range=1.0).item() == pytest.approx(
        12.5 / 255**2, rel=1e-12
    )


def test_correlation_coefficient_signs():
    f = _noise(4)
    assert correlation_coefficient(_pair(2 * f + 1, -f), f).item() == pytest.approx(0.0, abs=1e-12)
    assert correlation_coefficient(_pair(f, 3 * f), f).item() == pytest.approx(1.0, rel=1e-12)


def test_nmi_identity_and_independence():
    x = _noise(5)
    for conv in ("reference", "standard"):
        assert normalized_mutual_information(_pair(x, x), x, conv).item() == pytest.approx(2.0)
        assert normalized_mutual_information(
            _pair(x, x), x, conv, reduction="mean"
        ).item() == pytest.approx(1.0)
    rows = _tile([[0, 0], [255, 255]])
    cols = _tile([[0, 255], [0, 255]])  # independent of rows: joint = product of marginals
    assert normalized_mutual_information(_pair(rows, rows), cols).item() == pytest.approx(
        0.0, abs=1e-12
    )


def test_tsallis_hand_values_and_the_toolbox_marginal_quirk():
    q = 1.85
    x = _tile([[0, 0], [255, 255]])
    # F = A, two equiprobable levels: sum p^q / (p p)^(q-1) = 2 * 0.5^(2 - q)
    want = (1 - 2 * 0.5 ** (2 - q)) / (1 - q)
    for conv in ("reference", "standard"):
        assert tsallis_entropy([x], x, conv).item() == pytest.approx(want, rel=1e-12)
    a = _tile([[0, 0, 255, 255]], (8, 2))  # p_A: 0 -> 1/2, 255 -> 1/2
    f = _tile([[0, 128, 128, 255]], (8, 2))  # p_F: 0 -> 1/4, 128 -> 1/2, 255 -> 1/4
    # joint cells (0,0), (0,128), (255,128), (255,255), each 1/4
    diag = 0.25**q / (0.5 * 0.25) ** (q - 1)
    off = 0.25**q / (0.5 * 0.5) ** (q - 1)
    std = (1 - (2 * diag + 2 * off)) / (1 - q)
    # toolbox: cell (i, j) over (p_F(i) p_A(j))^(q-1); p_A(128) = 0 drops the off cells
    ref = (1 - 2 * diag) / (1 - q)
    assert tsallis_entropy([a], f, "standard").item() == pytest.approx(std, rel=1e-12)
    assert tsallis_entropy([a], f, "reference").item() == pytest.approx(ref, rel=1e-12)


def test_qncie_extremes():
    full = torch.arange(256.0).view(1, 16, 16)  # uniform over 256 levels: NCC(X, X) = 1
    assert q_ncie(_pair(full, full), full).item() == pytest.approx(1.0, abs=1e-12)
    a = _tile([[0, 0], [255, 255]], (2, 2))
    b = _tile([[0, 255], [0, 255]], (2, 2))
    f = torch.tensor([[0.0, 0.0, 0.0, 0.0]] * 2 + [[255.0] * 4] * 2).tile(1, 1).view(1, 4, 4)
    # pairwise independent: R = I, eigenvalues 1, 1, 1
    assert q_ncie(_pair(a, b), f).item() == pytest.approx(1 - math.log2(3) / 8, rel=1e-12)


def test_qsf_hand_value():
    f = torch.tensor([[[0.0, 1.0], [3.0, 5.0]]])
    a = torch.zeros(1, 2, 2)
    b = torch.tensor([[[0.0, 2.0], [0.0, 0.0]]])
    wd = math.sqrt(2) / 2
    sf_f = math.sqrt((1 + 4 + 9 + 16 + wd * 25 + wd * 4) / 4)  # rows, columns, diagonals
    sf_r = math.sqrt((4 + 4 + 0 + wd * 4) / 4)
    assert q_sf(_pair(a, b), f).item() == pytest.approx((sf_f - sf_r) / sf_r, rel=1e-12)
    x = _noise(6)
    assert q_sf(_pair(x, torch.zeros_like(x)), x).item() == pytest.approx(0.0, abs=1e-12)
    assert q_sf(_pair(x, torch.zeros_like(x)), 2 * x).item() == pytest.approx(1.0, rel=1e-12)


def test_qm_hand_values():
    g = torch.Generator().manual_seed(15)
    a = torch.randint(0, 256, (1, 32, 30), generator=g).double()
    # Haar details ignore the mean: F = A + 5 preserves every edge, EP = 3 at both levels
    assert q_m(_pair(a, a), a + 5).item() == pytest.approx(3.0, rel=1e-12)
    # a +-0.5 checkerboard only changes the level-1 diagonal band, by 2 * 0.5:
    # Q_1 = 2 + e^-1, Q_2 = 3 (its 2x2 means vanish)
    checker = 0.5 * (-1.0) ** (torch.arange(32).view(-1, 1) + torch.arange(30).view(1, -1))
    want = (2 + math.exp(-1)) ** (2 / 3) * 3 ** (1 / 3)
    assert q_m(_pair(a, a), a + checker).item() == pytest.approx(want, rel=1e-12)
    assert q_m(_pair(a / 255, a / 255), (a + checker) / 255, "standard", 1.0).item() == (
        pytest.approx(want, rel=1e-12)
    )
    flat = torch.full((1, 8, 8), 7.0)
    assert torch.isnan(q_m(_pair(flat, flat), flat))  # no detail: 0 / 0
    with pytest.raises(ValueError, match="at least 4 px"):
        q_m(_pair(a[:, :3], a[:, :3]), a[:, :3])


@pytest.mark.parametrize("convention", ["reference", "standard"])
def test_piella_indices_of_perfect_fusion(convention):
    a = _noise(7, (2, 32, 32))
    vals = piella(_pair(a, torch.zeros_like(a)), a, convention)
    for name in ("Qs", "Qw", "Qe"):
        assert torch.allclose(vals[name], torch.ones(2, dtype=torch.float64), atol=1e-12), name
    vals = piella(_pair(a, a), a, convention)
    assert all(torch.allclose(v, torch.ones(2, dtype=torch.float64)) for v in vals.values())


def test_qc_and_qy_hand_values():
    a = _noise(8, offset=100.0)
    # F = A, B = 2A: Q(A,F) = 1, Q(B,F) = (2*2)(2*2)/(5*5) = 16/25 in every window, and
    # s_AF / (s_AF + s_BF) = 1/3
    assert q_c(_pair(a, 2 * a), a).item() == pytest.approx(1 / 3 + 2 / 3 * 16 / 25, rel=1e-9)
    assert q_c(_pair(a, a), a, "standard").item() == pytest.approx(1.0, rel=1e-12)
    # SSIM(A, 2A) = 0.64 < 0.75: max(SSIM(A,F), SSIM(B,F)) = 1
    assert q_y(_pair(a, 2 * a), a).item() == pytest.approx(1.0, rel=1e-9)
    # SSIM(A, 1.1 A) = (2.2 / 2.21)^2 >= 0.75: lambda = 1 / 2.21
    s = (2.2 / 2.21) ** 2
    want = 1 / 2.21 + 1.21 / 2.21 * s
    assert q_y(_pair(a, 1.1 * a), a).item() == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("convention", ["reference", "standard"])
def test_qcv_qcb_of_perfect_fusion(convention):
    a = _noise(9, (2, 40, 36))
    assert torch.allclose(q_cv(_pair(a, a), a, convention), torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(q_cb(_pair(a, a), a, convention), torch.ones(2, dtype=torch.float64))
    assert (q_cv(_pair(a, a), (a + _noise(10, (2, 40, 36))) / 2, convention) > 0).all()


def test_nabf_labf_of_perfect_fusion():
    from scipy.ndimage import correlate

    a = _noise(11)
    src = _pair(a, a)
    assert nabf(src, a).item() == 0.0
    # Petrovic terms for g_s = g_F > 0: G = 1, A = 1; at the 4 corners the mirrored Sobel is 0
    q1 = math.sqrt(0.9999 / (1 + math.exp(-19 * 0.5)) * 0.9995 / (1 + math.exp(-22 * 0.5)))
    q0 = math.sqrt(0.9999 / (1 + math.exp(19 * 0.5)) * 0.9995 / (1 + math.exp(-22 * 0.5)))
    assert labf(src, a, weak_edge_weight=0.0).item() == pytest.approx(1 - q1, rel=1e-12)
    kx = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]]) / 8
    x = a[0].numpy()
    g = np.hypot(correlate(x, kx, mode="mirror"), correlate(x, kx.T, mode="mirror"))
    assert (g == 0).sum() == 4 and g[0, 0] == 0
    w = np.where(g >= 2, g**1.5, 0.001)
    zero = g == 0
    want = ((1 - q1) * w[~zero].sum() + (1 - q0) * w[zero].sum()) / w.sum()
    assert labf(src, a).item() == pytest.approx(want, rel=1e-10)


# Golden values: a public Python port of the MATLAB evaluator (CC_function, MSE_function,
# get_Nabf, which weighs edges below the threshold 0 where Kumar's MATLAB uses 0.001), run
# outside the repository on the Harvard pairs; fused = max(A, B) or round((A + B) / 2).
_GOLDEN = {  # (CC, MSE, Nabf with weight 0 below the threshold)
    ("MRI_CT", "11.png", "max"): (0.7910386919975281, 0.0478113517165184, 9.60317505121648e-4),
    ("MRI_CT", "12.png", "mean"): (0.8409038186073303, 0.019074346870183945, 3.76544158057e-08),
    ("MRI_PET", "13.png", "max"): (0.7025924324989319, 0.057800713926553726, 7.5395576489228e-5),
    ("MRI_PET", "11.png", "mean"): (0.7388173341751099, 0.02956412360072136, 4.38056458408e-09),
}  # fmt: skip


@pytest.mark.parametrize("key", sorted(_GOLDEN))
def test_cc_mse_nabf_match_the_public_python_port(harvard_dir, key):
    mod, name, rule = key
    other = "CT" if mod == "MRI_CT" else "PET"
    a = torch.from_numpy(read_gray_reference(harvard_dir / mod / "MRI" / name))
    b = torch.from_numpy(read_gray_reference(harvard_dir / mod / other / name))
    f = torch.maximum(a, b) if rule == "max" else torch.round((a + b) / 2)
    src, f = _pair(a[None], b[None]), f[None]
    cc, m, n0 = _GOLDEN[key]
    # the port computes CC and MSE in float32 (2e-7), Nabf in float64
    assert correlation_coefficient(src, f).item() == pytest.approx(cc, rel=1e-6)
    assert mse(src, f, "standard").item() == pytest.approx(m, rel=1e-6)
    assert nabf(src, f, weak_edge_weight=0.0).item() == pytest.approx(n0, rel=1e-9)
    assert nabf(src, f).item() >= nabf(src, f, weak_edge_weight=0.0).item()


# Golden Qm: cslib's port of Liu's metricPWW.m (github.com/CharlesShan-hub/cslib,
# metrics/collection/pww.py, its own buildWpyr 'haar'), run outside the repository in float64.
_GOLDEN_QM = {
    ("MRI_CT", "11.png", "max"): 1.113936580585611,
    ("MRI_PET", "13.png", "mean"): 0.09702695364509274,
    ("MRI_SPECT", "12.png", "max"): 1.7521016890251744,
}


@pytest.mark.parametrize("key", sorted(_GOLDEN_QM))
def test_qm_matches_the_public_python_port(harvard_dir, key):
    mod, name, rule = key
    a = torch.from_numpy(read_gray_reference(harvard_dir / mod / "MRI" / name))
    b = torch.from_numpy(read_gray_reference(harvard_dir / mod / mod[4:] / name))
    f = torch.maximum(a, b) if rule == "max" else torch.round((a + b) / 2)
    assert q_m(_pair(a[None], b[None]), f[None]).item() == pytest.approx(_GOLDEN_QM[key], rel=1e-12)
    if key[0] == "MRI_CT":  # odd sizes: buildWpyr drops the last row and column
        a, b = a[10:213, 20:247], b[10:213, 20:247]
        got = q_m(_pair(a[None], b[None]), torch.maximum(a, b)[None]).item()
        assert got == pytest.approx(0.8982494860504877, rel=1e-12)


# The reference evaluator's own MSE and CC (CDDFuse's utils/Evaluator.py, float32), run
# outside the repository on the same pairs.
_EVALUATOR = {  # (CC, MSE in grey levels squared)
    ("MRI_CT", "11.png", "max"): (0.7910386919975281, 3108.93310546875),
    ("MRI_CT", "12.png", "mean"): (0.8409038186073303, 1240.309326171875),
    ("MRI_PET", "13.png", "max"): (0.7025924324989319, 3758.4912109375),
    ("MRI_PET", "11.png", "mean"): (0.7388173341751099, 1922.4072265625),
}


@pytest.mark.parametrize("key", sorted(_EVALUATOR))
def test_cc_mse_match_the_reference_evaluator(harvard_dir, key):
    mod, name, rule = key
    other = "CT" if mod == "MRI_CT" else "PET"
    a = torch.from_numpy(read_gray_reference(harvard_dir / mod / "MRI" / name))
    b = torch.from_numpy(read_gray_reference(harvard_dir / mod / other / name))
    f = torch.maximum(a, b) if rule == "max" else torch.round((a + b) / 2)
    src, f = _pair(a[None], b[None]), f[None]
    cc, m = _EVALUATOR[key]
    assert correlation_coefficient(src, f).item() == pytest.approx(cc, rel=1e-6)
    assert mse(src, f, "reference").item() == pytest.approx(m, rel=1e-6)


def test_grey_files_skip_the_colour_conversion_exactly(tmp_path):
    from PIL import Image

    from fuse4seg.metrics.image_reading import rgb_to_gray_reference

    v = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(rgb_to_gray_reference(np.repeat(v[..., None], 3, 2)), v)
    Image.fromarray(v).save(tmp_path / "g.png")
    Image.fromarray(np.repeat(v[..., None], 3, 2)).save(tmp_path / "c.png")
    Image.fromarray(v.astype(np.uint16) * 257).save(tmp_path / "w.png")
    for name in ("g.png", "c.png", "w.png"):
        got = read_gray_reference(tmp_path / name)
        assert got.dtype == np.float32 and np.array_equal(got, v), name


def test_compiled_grey_conversion_matches_the_numpy_emulation(monkeypatch, harvard_dir):
    from PIL import Image

    from fuse4seg.metrics import _kernels
    from fuse4seg.metrics.image_reading import rgb_to_gray_reference

    if not _kernels.available():
        pytest.skip("Numba not installed")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)]
    for sub in ("MRI_PET/PET", "MRI_SPECT/SPECT"):
        for p in sorted((harvard_dir / sub).glob("*.png"))[:5]:
            images.append(np.asarray(Image.open(p).convert("RGB")))
    compiled = [rgb_to_gray_reference(x) for x in images]
    monkeypatch.setenv("FUSE4SEG_METRICS_BACKEND", "torch")
    for x, got in zip(images, compiled, strict=True):
        assert np.array_equal(got, rgb_to_gray_reference(x))


def test_two_source_metrics_reject_three_sources():
    a = _noise(12, (1, 3, 24, 24))
    for fn in (q_c, q_y):
        with pytest.raises(ValueError, match="exactly 2 sources"):
            fn(a, a[:, 0])
