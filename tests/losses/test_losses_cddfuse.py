"""CDDFuse's objective (the disjoint baseline's fuser): known values and zeros."""

from __future__ import annotations

import numpy as np
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


def test_fusion_loss_on_ramps_uses_raw_zero_padded_sobel_and_weight_ten():
    # independent reference: scipy's zero-filled 2D correlation with the integer kernels
    from scipy.signal import correlate2d

    a, f = _ramp(0.05), _ramp(0.02) + 0.1
    x = torch.cat([a, torch.zeros_like(a)], dim=1)
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)

    def mag(img):
        img = img[0, 0].numpy()
        gx = correlate2d(img, kx, mode="same", boundary="fill")
        gy = correlate2d(img, kx.T, mode="same", boundary="fill")
        return np.abs(gx) + np.abs(gy)

    target = np.maximum(mag(a), mag(torch.zeros_like(a)))
    expected = (f - a).abs().mean().item() + 10 * np.abs(mag(f) - target).mean()
    assert float(cddfuse_fusion_loss(f, x)) == pytest.approx(expected, rel=1e-9)


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
