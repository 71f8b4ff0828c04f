"""Degradations: determinism, documented statistics, presets, input validation."""

from __future__ import annotations

import pytest
import torch

from fuse4seg.degradations import (
    PRESETS,
    Degradation,
    gaussian_blur,
    gaussian_noise,
    structure_loss,
)
from fuse4seg.errors import ConfigError


def _smooth_volume(shape=(1, 1, 8, 32, 32), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    return gaussian_blur(x, 1.5)


@pytest.mark.parametrize("shape", [(2, 3, 8, 16, 16), (2, 1, 32, 32)])
@pytest.mark.parametrize("preset", ["paper_test", "train"])
def test_presets_deterministic_per_seed_and_shape_preserving(shape, preset):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    deg = Degradation.preset(preset)
    a = deg(x, 123)
    b = deg(x, torch.Generator().manual_seed(123))
    c = deg(x, 124)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_noise_std_is_fraction_of_intensity_range():
    x = torch.zeros(1, 2, 16, 64, 64)
    x[:, 0, 0, 0, 0] = 2.0  # range 2
    x[:, 1, 0, 0, 0] = 0.5  # range 0.5
    y = gaussian_noise(x, 0.04, generator=7)
    noise = y - x
    assert noise[:, 0].std().item() == pytest.approx(0.04 * 2.0, rel=0.02)
    assert noise[:, 1].std().item() == pytest.approx(0.04 * 0.5, rel=0.02)
    assert abs(noise.mean().item()) < 1e-3
    absolute = gaussian_noise(x, 0.1, generator=7, relative=False) - x
    assert absolute.std().item() == pytest.approx(0.1, rel=0.02)


def test_noise_rejects_negative_std_and_bad_rank():
    with pytest.raises(ValueError, match="std must be >= 0"):
        gaussian_noise(torch.zeros(1, 1, 4, 4), -0.1)
    with pytest.raises(ValueError, match="expected"):
        gaussian_noise(torch.zeros(4, 4), 0.1)


def test_blur_reduces_high_frequencies_and_keeps_mean():
    x = torch.rand(1, 1, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    y = gaussian_blur(x, 0.6)
    spec_x = torch.fft.fftn(x[0, 0] - x.mean()).abs()
    spec_y = torch.fft.fftn(y[0, 0] - y.mean()).abs()
    # highest frequencies: index ~ N/2 on every axis
    hi = (slice(6, 11), slice(12, 21), slice(12, 21))
    assert spec_y[hi].sum() < 0.5 * spec_x[hi].sum()
    assert y.mean().item() == pytest.approx(x.mean().item(), abs=1e-3)
    # zero sigma is identity; constant images are unchanged
    assert torch.equal(gaussian_blur(x, 0.0), x)
    const = torch.full((1, 1, 12, 12), 0.3)
    assert torch.allclose(gaussian_blur(const, 2.0), const, atol=1e-6)


def test_blur_hand_computed_value_2d():
    """A unit impulse blurred with sigma 1 gives the normalised Gaussian kernel."""
    x = torch.zeros(1, 1, 15, 15)
    x[0, 0, 7, 7] = 1.0
    y = gaussian_blur(x, 1.0)
    k = torch.exp(-0.5 * torch.arange(-3.0, 4.0) ** 2)
    k = k / k.sum()
    assert y[0, 0, 7, 7].item() == pytest.approx((k[3] * k[3]).item(), rel=1e-5)
    assert y[0, 0, 7, 8].item() == pytest.approx((k[3] * k[4]).item(), rel=1e-5)
    assert y.sum().item() == pytest.approx(1.0, rel=1e-5)


def test_structure_loss_changes_only_inside_window_and_keeps_mean_energy():
    x = _smooth_volume()
    y = structure_loss(x, window=(4, 16, 16), num_windows=1, generator=3)
    changed = (y != x)[0, 0]
    idx = changed.nonzero()
    assert idx.numel() > 0
    lo, hi = idx.min(0).values, idx.max(0).values
    assert (hi - lo + 1).tolist() == [4, 16, 16]  # exactly one (4, 16, 16) window changed
    box = tuple(slice(int(a), int(a) + w) for a, w in zip(lo, (4, 16, 16), strict=True))
    wx, wy = x[(0, 0, *box)].double(), y[(0, 0, *box)].double()
    assert wy.mean().item() == pytest.approx(wx.mean().item(), abs=1e-5)
    assert wy.std(unbiased=False).item() == pytest.approx(wx.std(unbiased=False).item(), rel=1e-4)
    # the structure is destroyed: low correlation with the original window
    corr = torch.corrcoef(torch.stack([wx.flatten(), wy.flatten()]))[0, 1].item()
    assert corr < 0.9
    # outside the window nothing changed
    outside = torch.ones_like(changed)
    outside[box] = False
    assert torch.equal(y[0, 0][outside], x[0, 0][outside])


def test_structure_loss_2d_uses_last_two_sides_and_clips_to_image():
    x = torch.rand(2, 1, 10, 12, generator=torch.Generator().manual_seed(0))
    y = structure_loss(x, window=(4, 16, 16), num_windows=2, generator=0)
    assert y.shape == x.shape
    # window clipped to the whole image: mean and std preserved per image
    for b in range(2):
        assert y[b].mean().item() == pytest.approx(x[b].mean().item(), abs=1e-5)


def test_presets_and_config_errors():
    assert PRESETS["paper_test"].noise_std == 0.04
    assert PRESETS["paper_test"].blur_sigma == 0.6
    assert PRESETS["paper_test"].structure_window == (4, 16, 16)
    assert PRESETS["train"].noise_std == (0.0, 0.1)
    assert PRESETS["train"].blur_sigma == (0.1, 3.0)
    assert PRESETS["train"].structure_windows == 8
    assert torch.equal(Degradation.preset("none")(torch.ones(1, 1, 4, 4)), torch.ones(1, 1, 4, 4))
    with pytest.raises(ConfigError, match="unknown degradation preset"):
        Degradation.preset("nope")
    with pytest.raises(ConfigError, match="unknown degradation option"):
        Degradation.preset("train", sigma=3)
    d = Degradation.preset("paper_test", clip=True)
    x = torch.rand(1, 1, 8, 16, 16, generator=torch.Generator().manual_seed(2))
    y = d(x, 0)
    assert y.min() >= x.min() and y.max() <= x.max()
