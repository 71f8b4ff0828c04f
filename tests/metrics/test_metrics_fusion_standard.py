"""Textbook checks for the standard convention, API shapes, 3D variants and errors."""

from __future__ import annotations

import math

import pytest
import torch

from fuse4seg.metrics import (
    FusionMetrics,
    average_gradient,
    compute_fusion_metrics,
    entropy,
    fmi,
    mutual_information,
    psnr,
    qabf,
    scd,
    spatial_frequency,
    ssim_sum,
    standard_deviation,
    vif,
)


def _img(seed: int, shape=(2, 48, 56), noise: float = 0.0, base=None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if base is None:
        y = torch.linspace(0, 1, shape[-2]).view(-1, 1)
        x = torch.linspace(0, 1, shape[-1]).view(1, -1)
        base = 127 + 100 * torch.sin(7 * x + seed) * torch.cos(5 * y)
        base = base.expand(shape).clone()
    return (base + noise * torch.randn(shape, generator=g)).clamp(0, 255).round()


def test_entropy_known_values():
    uniform = torch.arange(256.0).repeat(4).view(1, 32, 32)
    assert entropy(uniform).item() == pytest.approx(8.0)
    assert entropy(torch.full((1, 8, 8), 7.0)).item() == 0.0
    half = torch.zeros(1, 4, 4)
    half[:, :2] = 200
    assert entropy(half, "standard").item() == pytest.approx(1.0)


@pytest.mark.parametrize("convention,unit", [("standard", 1.0), ("reference", math.log(2))])
def test_mi_of_image_with_itself_is_its_entropy(convention, unit):
    x = _img(1, noise=10)
    h_bits = entropy(x, convention)
    mi = mutual_information([x], x, convention)  # one source
    assert torch.allclose(mi, h_bits * unit, rtol=1e-12)
    assert torch.allclose(mutual_information([x, x], x, convention), 2 * h_bits * unit)


def test_ssim_identity_and_monai_gaussian_ssim():
    from monai.metrics import SSIMMetric

    a = _img(2, noise=30)
    f = _img(3, noise=30, base=a.clone())
    assert torch.allclose(
        ssim_sum([a, a], a, "standard"), torch.full((2,), 2.0, dtype=torch.float64)
    )
    assert torch.allclose(
        ssim_sum([a, a], a, "reference"), torch.full((2,), 2.0, dtype=torch.float64)
    )
    want = SSIMMetric(spatial_dims=2, data_range=255.0, win_size=11, kernel_sigma=1.5)(
        f[:, None].double(), a[:, None].double()
    ).flatten()
    assert torch.allclose(ssim_sum(a[:, None], f, "standard"), want.double(), rtol=1e-6)


def test_psnr_known_values():
    f = torch.full((1, 16, 16), 20.0)
    src = torch.stack([torch.full((1, 16, 16), 10.0), torch.full((1, 16, 16), 30.0)], 1)
    # MSE = 100: standard peak 255, reference peak max(F) = 20
    assert psnr(src, f, "standard").item() == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(src, f, "reference").item() == pytest.approx(10 * math.log10(20**2 / 100))
    assert psnr(src / 255, f / 255, "standard", data_range=1.0).item() == pytest.approx(
        10 * math.log10(255**2 / 100)
    )


def test_qabf_of_fused_equal_to_sources():
    a = _img(4, noise=20)
    q_ideal = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
    std = qabf([a, a], a, "standard")
    assert torch.allclose(std, torch.full_like(std, q_ideal), rtol=1e-6)
    ref = qabf([a, a], a, "reference")  # G = g_F (> 1 on strong edges) instead of 1
    assert (ref - std).abs().min() > 1e-4
    blurred = torch.nn.functional.avg_pool2d(a[:, None], 5, 1, 2)[:, 0]
    assert (qabf([a, a], blurred, "standard") < std).all()


def test_sd_sf_ag_by_hand():
    x = torch.tensor([[[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]])  # (1, 2, 3)
    assert standard_deviation(x).item() == pytest.approx(
        torch.tensor([0, 2, 4, 1, 3, 5.0]).std(correction=0).item()
    )
    # row diffs all 2 -> 4; column diffs all 1 -> 1
    assert spatial_frequency(x).item() == pytest.approx(math.sqrt(5.0))
    ramp = (2.0 * torch.arange(10.0)).repeat(1, 8, 1)  # gx = 2, gy = 0
    assert average_gradient(ramp, "reference").item() == pytest.approx(math.sqrt(2.0))
    assert average_gradient(ramp, "standard").item() == pytest.approx(math.sqrt(2.0))
    # a step edge: central differences spread it over two columns, forward over one
    step = torch.zeros(1, 4, 4)
    step[..., 2:] = 8
    assert average_gradient(step, "reference").item() == pytest.approx(2 * 4 / math.sqrt(2) / 4)
    assert average_gradient(step, "standard").item() == pytest.approx(8 / math.sqrt(2) / 3)


def test_scd_vif_fmi_identities():
    a, b = _img(5, noise=25), _img(6, noise=25)
    assert torch.allclose(scd([a, b], a + b), torch.full((2,), 2.0, dtype=torch.float64))
    for conv in ("reference", "standard"):
        assert torch.allclose(vif([a, a], a, conv), torch.full((2,), 2.0, dtype=torch.float64))
    noisy = _img(7, noise=40, base=a.clone())
    assert (vif([a, b], noisy) < vif([a, b], a)).all()
    assert torch.allclose(fmi([a, a], a), torch.ones(2, dtype=torch.float64))
    assert (fmi([a, b], noisy) < 1).all()


def test_standard_convention_is_range_invariant():
    a, b = _img(8, noise=15), _img(9, noise=15)
    f = ((a + b) / 2).round()
    v255 = compute_fusion_metrics([a, b], f, "standard")
    v1 = compute_fusion_metrics([a / 255, b / 255], f / 255, "standard", data_range=1.0)
    for name in ("EN", "MI", "SCD", "VIF", "SSIM", "PSNR"):
        assert torch.allclose(v255[name], v1[name], rtol=1e-6), name  # float32 inputs
    for name in ("SD", "SF", "AG"):
        assert torch.allclose(v255[name] / 255, v1[name], rtol=1e-6), name
    # Qabf is scale invariant; a power-of-two scale keeps Sobel ties (Sx == 0) exact, which
    # atan(Sy / Sx) needs (a rounding residue flips the angle from +pi/2 to -pi/2).
    q = qabf([a / 256, b / 256], f / 256, "standard")
    assert torch.allclose(v255["Qabf"], q, rtol=1e-12)


@pytest.mark.parametrize(
    "fused_shape,sources",
    [
        ((41, 44), "list2d"),
        ((1, 48, 41), "tensor"),
        ((3, 1, 41, 45), "list4d"),
        ((3, 41, 45), "tensor"),
    ],
)
def test_shapes_accepted(fused_shape, sources):
    f = torch.rand(fused_shape) * 255
    b = 1 if len(fused_shape) == 2 else fused_shape[0]
    hw = fused_shape[-2:]
    if sources == "tensor":
        src = torch.rand(b, 2, *hw) * 255
    elif sources == "list4d":
        src = [torch.rand(b, 1, *hw) * 255 for _ in range(2)]
    else:
        src = [torch.rand(*hw) * 255 for _ in range(2)]
    vals = compute_fusion_metrics(src, f, metrics=["EN", "MI", "VIF", "Qabf", "SSIM", "FMI"])
    for v in vals.values():
        assert v.shape == (b,) and v.dtype == torch.float64 and torch.isfinite(v).all()


def test_three_sources_sum_and_scd_needs_two():
    a, b, c = _img(10, noise=9), _img(11, noise=9), _img(12, noise=9)
    f = ((a + b + c) / 3).round()
    mi3 = mutual_information([a, b, c], f)
    parts = sum(mutual_information([s], f) for s in (a, b, c))
    assert torch.allclose(mi3, parts)
    with pytest.raises(ValueError, match="exactly 2 sources"):
        scd([a, b, c], f)


def test_3d_variants():
    vol = torch.arange(6.0).view(1, 6, 1, 1).expand(2, 6, 8, 9) * 3  # ramp along D
    assert torch.allclose(
        average_gradient(vol, spatial_dims=3),
        torch.full((2,), 3 / math.sqrt(3), dtype=torch.float64),
    )
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(2, 6, 10, 12, generator=g) * 255).round()
    b = (torch.rand(2, 6, 10, 12, generator=g) * 255).round()
    assert torch.allclose(fmi([a, a], a, spatial_dims=3), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(
        scd([a, b], a + b, spatial_dims=3), torch.full((2,), 2.0, dtype=torch.float64)
    )
    assert entropy(a, spatial_dims=3).shape == (2,)
    assert (entropy(a, spatial_dims=3) > 7).all()


def test_errors():
    f = torch.rand(2, 40, 40)
    with pytest.raises(ValueError, match="convention"):
        entropy(f, "matlab")
    with pytest.raises(ValueError, match="differ in size"):
        mutual_information([torch.rand(2, 40, 41)] * 2, f)
    with pytest.raises(ValueError, match="unknown fusion metric"):
        compute_fusion_metrics([f, f], f, metrics=["EN", "QCV"])
    with pytest.raises(ValueError, match="data_range"):
        entropy(f, "standard", data_range=0)
    with pytest.raises(ValueError, match="too small"):
        vif([torch.rand(1, 12, 12)] * 2, torch.rand(1, 12, 12))


def test_fusion_metrics_accumulates():
    a, b = _img(13, noise=20), _img(14, noise=20)
    f = torch.maximum(a, b)
    acc = FusionMetrics(metrics=["EN", "PSNR", "Qabf"])
    acc.update([a, b], f)
    acc.update([a[:1], b[:1]], f[:1])
    assert len(acc) == 3
    per = acc.values()
    assert per["EN"].shape == (3,)
    agg = acc.aggregate()
    assert agg["EN"].item() == pytest.approx(per["EN"].mean().item())
    assert acc.aggregate("std")["PSNR"].item() == pytest.approx(
        per["PSNR"].std(correction=0).item()
    )
    acc.reset()
    with pytest.raises(ValueError, match="before any update"):
        acc.aggregate()
