"""CDDFuse's objective (the disjoint baseline's fuser): known values and zeros."""

from __future__ import annotations

import pytest
import torch

from fuse4seg.losses.cddfuse import cddfuse_fusion_loss, cddfuse_reconstruction_loss


def _ramp(slope: float, h: int = 12, w: int = 12) -> torch.Tensor:
    j = torch.arange(w, dtype=torch.float64)
    return (slope * j).expand(h, w).reshape(1, 1, h, w)


def test_fusion_loss_is_zero_for_the_pixelwise_max_of_one_dominant_source():
    a = _ramp(0.05)
    b = a * 0.5  # below a everywhere, with a smaller gradient
    x = torch.cat([a, b], dim=1)
    assert float(cddfuse_fusion_loss(a, x)) == pytest.approx(0.0, abs=1e-12)


def test_fusion_loss_on_ramps_uses_raw_sobel_and_weight_ten():
    # sources: a ramp of slope 0.05 and zeros; fused: a ramp of slope 0.02 shifted up by 0.1.
    # intensity: |0.1 + 0.02 j - 0.05 j| averaged over j = 0..11 (replicate border)
    # gradient: raw Sobel of a ramp of slope s is 8 s inside, 4 s on the two border columns
    a, f = _ramp(0.05), _ramp(0.02) + 0.1
    x = torch.cat([a, torch.zeros_like(a)], dim=1)
    j = torch.arange(12, dtype=torch.float64)
    intensity = (0.1 - 0.03 * j).abs().mean()
    interior, border = 8 * 0.03, 4 * 0.03
    grad = (10 * interior + 2 * border) / 12
    expected = intensity + 10 * grad
    assert float(cddfuse_fusion_loss(f, x)) == pytest.approx(float(expected), rel=1e-9)


def test_reconstruction_loss_is_zero_for_a_copy_and_grows_with_the_error():
    torch.manual_seed(0)
    x = torch.rand(2, 2, 24, 24, dtype=torch.float64)
    assert float(cddfuse_reconstruction_loss(x.clone(), x)) == pytest.approx(0.0, abs=1e-9)
    small = float(cddfuse_reconstruction_loss((x + 0.01).clamp(0, 1), x))
    large = float(cddfuse_reconstruction_loss((x + 0.2 * torch.rand_like(x)).clamp(0, 1), x))
    assert 0 < small < large
    # a constant offset has no gradient error: MSE + 5 (1 - SSIM) / 2 only
    off = x + 0.01
    from fuse4seg.losses import ssim

    expected = 1e-4 + 5 * (1 - float(ssim(off, x))) / 2
    assert float(cddfuse_reconstruction_loss(off, x)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="same"):
        cddfuse_reconstruction_loss(x[:, :1], x)
