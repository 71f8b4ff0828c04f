"""MS-SSIM (extra fusion metric): exact values, agreement with MONAI, API and errors.

MONAI 1.6.1 computes MS-SSIM in float32 (inputs, Gaussian kernel and weights are cast to
float32), which alone changes the result by up to ~2e-4 relative on 0-255 data (cancellation
in E[x^2] - E[x]^2). The reference values are therefore MONAI's own code run in float64
(inputs and kernel); only its weights stay float32, a 3.5e-8 relative effect, so the tight
check passes the float32-rounded weights to ``ms_ssim`` as well.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fuse4seg.metrics import ms_ssim, read_gray_reference
from fuse4seg.metrics.ms_ssim import MS_SSIM_WEIGHTS

W32 = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float32).tolist()


def _smooth(seed: int, shape=(3, 203, 190), scale: float = 255.0) -> torch.Tensor:
    """Random smooth images in [0, scale]: bicubic upsampling of 1/8 noise, plus fine noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((shape[0], 1, shape[1] // 8, shape[2] // 8), generator=g, dtype=torch.float64)
    up = F.interpolate(low, size=shape[1:], mode="bicubic", align_corners=False)[:, 0]
    noise = 0.05 * torch.randn(shape, generator=g, dtype=torch.float64)
    return (up + noise).clamp(0, 1) * scale


@pytest.fixture(scope="module")
def monai_regression():
    """``monai.metrics.regression`` (only the MONAI comparisons skip without MONAI)."""
    return pytest.importorskip("monai.metrics.regression")


def _monai(monai_regression, fused, src, data_range: float, float64: bool) -> torch.Tensor:
    """MONAI ``MultiScaleSSIMMetric`` of (B, H, W) images, per image (B,) float64."""
    metric = monai_regression.MultiScaleSSIMMetric(
        spatial_dims=2,
        data_range=data_range,
        kernel_type="gaussian",
        kernel_size=11,
        kernel_sigma=1.5,
        reduction="none",
    )
    if not float64:
        return metric(fused[:, None].float(), src[:, None].float()).view(-1).double()
    orig = monai_regression.convert_data_type

    def convert64(data, *args, dtype=None, **kwargs):
        dtype = torch.float64 if dtype == torch.float32 else dtype
        return orig(data, *args, dtype=dtype, **kwargs)

    default = torch.get_default_dtype()
    monai_regression.convert_data_type = convert64
    torch.set_default_dtype(torch.float64)  # MONAI builds its Gaussian kernel in this dtype
    try:
        return metric(fused[:, None], src[:, None]).view(-1)
    finally:
        torch.set_default_dtype(default)
        monai_regression.convert_data_type = orig


def _check_against_monai(mr, src, fused, data_range: float, stock: bool = True) -> None:
    ref64 = sum(_monai(mr, fused, src[:, s], data_range, True) for s in range(src.shape[1]))
    ours = ms_ssim(src, fused, data_range=data_range)
    assert ours.dtype == torch.float64 and ours.shape == (src.shape[0],)
    torch.testing.assert_close(ours, ref64, rtol=1e-6, atol=0)
    # Same float32-rounded weights as MONAI: only float64 rounding remains.
    torch.testing.assert_close(ms_ssim(src, fused, data_range, W32), ref64, rtol=1e-10, atol=0)
    if stock:  # stock MONAI (float32 arithmetic): agreement limited by its float32 rounding
        ref32 = sum(_monai(mr, fused, src[:, s], data_range, False) for s in range(src.shape[1]))
        torch.testing.assert_close(ours, ref32, rtol=1e-3, atol=0)


def test_identical_images_give_number_of_sources():
    f = _smooth(0, (2, 192, 200))
    out = ms_ssim(torch.stack([f, f, f], 1), f)
    assert torch.equal(out, torch.full((2,), 3.0, dtype=torch.float64))
    assert ms_ssim([f], f, weights=(0.5, 0.5)).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("data_range", [255.0, 1.0])
def test_matches_monai_random_smooth(monai_regression, data_range):
    # 203 x 190: odd sizes along the pyramid exercise the floor of the 2x2 pooling.
    a, b, c = (_smooth(s, (2, 203, 190), data_range) for s in (1, 2, 3))
    fused = 0.6 * c + 0.2 * a + 0.2 * b
    src = torch.stack([a, b], 1)
    _check_against_monai(monai_regression, src, fused, data_range, stock=data_range == 255.0)


def test_matches_monai_harvard(monai_regression, harvard_dir):
    names = sorted(p.name for p in (harvard_dir / "MRI_CT" / "MRI").glob("*.png"))[:2]
    if not names:
        pytest.skip(f"no Harvard MRI-CT images in {harvard_dir}")

    def read(mod: str) -> torch.Tensor:
        imgs = [read_gray_reference(harvard_dir / "MRI_CT" / mod / n) for n in names]
        return torch.stack([torch.from_numpy(i).double() for i in imgs])

    src = torch.stack([read("MRI"), read("CT")], 1)  # (2, 2, 256, 256)
    _check_against_monai(monai_regression, src, src.mean(1).round(), 255.0)
    _check_against_monai(monai_regression, src, src.amax(1), 255.0, stock=False)


def test_batch_equals_per_image_and_input_forms():
    a, b, f = _smooth(4), _smooth(5), _smooth(6)
    batch = ms_ssim(torch.stack([a, b], 1), f)
    for i in range(f.shape[0]):
        single = ms_ssim(torch.stack([a[i], b[i]]), f[i])  # (S, H, W) with (H, W)
        assert single.shape == (1,)
        torch.testing.assert_close(single[0], batch[i], rtol=1e-13, atol=0)
    torch.testing.assert_close(ms_ssim([a, b], f), batch, rtol=0, atol=0)
    torch.testing.assert_close(ms_ssim([a, b], f[:, None].float()), ms_ssim([a, b], f.float()))
    per_source = ms_ssim([a], f) + ms_ssim([b], f)
    torch.testing.assert_close(batch, per_source, rtol=1e-14, atol=0)


def test_too_small_images_raise():
    ok = _smooth(7, (1, 176, 176))
    assert ms_ssim([ok], ok).item() == 1.0
    small = _smooth(7, (1, 175, 256))
    with pytest.raises(ValueError, match=r"at least 176 x 176 px"):
        ms_ssim([small], small)
    three = _smooth(7, (1, 44, 44))
    assert ms_ssim([three], three, weights=(0.2, 0.3, 0.5)).item() == 1.0
    with pytest.raises(ValueError, match=r"at least 44 x 44 px"):
        ms_ssim([three[:, :43]], three[:, :43], weights=(0.2, 0.3, 0.5))


def test_bad_arguments_raise():
    f = _smooth(8, (1, 176, 176))
    with pytest.raises(ValueError, match="data_range"):
        ms_ssim([f], f, data_range=0.0)
    with pytest.raises(ValueError, match="weights"):
        ms_ssim([f], f, weights=())
    with pytest.raises(ValueError, match="odd"):
        ms_ssim([f], f, win_size=10)


def test_decreases_with_noise():
    f = _smooth(9, (1, 192, 192))
    g = torch.Generator().manual_seed(10)
    noise = torch.randn(f.shape, generator=g, dtype=torch.float64)
    vals = [ms_ssim([f + s * noise], f).item() for s in (0.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0)]
    assert vals[0] == 1.0
    assert all(x > y for x, y in zip(vals[:-1], vals[1:], strict=True)), vals


def _inverted_pair():
    f = _smooth(11, (2, 192, 192))
    return f, 255.0 - f


def test_negative_mean_cs_clamped_to_zero():
    # An inverted image has a negative mean cs at the finest scale: its MS-SSIM is exactly 0.
    f, inv = _inverted_pair()
    assert torch.equal(ms_ssim([inv], f), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(ms_ssim([inv, f], f), torch.ones(2, dtype=torch.float64))


def test_negative_mean_cs_clamped_like_monai(monai_regression):
    f, inv = _inverted_pair()
    assert torch.equal(_monai(monai_regression, f, inv, 255.0, True), torch.zeros(2).double())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    a, b, f = _smooth(12), _smooth(13), _smooth(14)
    cpu = ms_ssim([a, b], f)
    gpu = ms_ssim([a.cuda(), b.cuda()], f.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float64
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=0)
