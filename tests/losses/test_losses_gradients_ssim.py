from __future__ import annotations

import pytest
import torch

from fuse4seg.losses import SSIMLoss, sobel_gradients, sobel_magnitude, ssim, total_variation


def _ramp2d(slope: float, h: int = 7, w: int = 9, axis: int = -1) -> torch.Tensor:
    n = w if axis == -1 else h
    line = slope * torch.arange(n, dtype=torch.float32)
    img = line.expand(h, w) if axis == -1 else line[:, None].expand(h, w)
    return img.reshape(1, 1, h, w).clone()


@pytest.mark.parametrize("slope", [0.5, -2.0])
def test_sobel_2d_ramp_gives_slope(slope):
    x = _ramp2d(slope)
    g = sobel_gradients(x)  # (1, 1, 2, H, W)
    assert g.shape == (1, 1, 2, 7, 9)
    torch.testing.assert_close(g[0, 0, 1, :, 1:-1], torch.full((7, 7), slope))
    torch.testing.assert_close(g[0, 0, 0], torch.zeros(7, 9))
    # replicate padding: one-sided difference at the border -> half the slope
    torch.testing.assert_close(g[0, 0, 1, :, 0], torch.full((7,), slope / 2))
    mag = sobel_magnitude(x)
    torch.testing.assert_close(mag[0, 0, :, 1:-1], torch.full((7, 7), abs(slope)))
    raw = sobel_gradients(x, normalized=False)
    torch.testing.assert_close(raw[0, 0, 1, :, 1:-1], torch.full((7, 7), 8 * slope))


def test_sobel_2d_vertical_ramp_and_l1():
    x = _ramp2d(3.0, axis=0)
    g = sobel_gradients(x)
    torch.testing.assert_close(g[0, 0, 0, 1:-1, :], torch.full((5, 9), 3.0))
    torch.testing.assert_close(sobel_magnitude(x, norm="l1")[0, 0, 1:-1], torch.full((5, 9), 3.0))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_sobel_3d_ramp_gives_slope(axis):
    shape = (5, 6, 7)
    coords = torch.arange(shape[axis], dtype=torch.float32) * 1.5
    view = [1, 1, 1]
    view[axis] = shape[axis]
    x = coords.reshape(view).expand(shape).reshape(1, 1, *shape).clone()
    g = sobel_gradients(x)
    assert g.shape == (1, 1, 3, *shape)
    inner = [slice(None)] * 3
    inner[axis] = slice(1, -1)
    torch.testing.assert_close(
        g[0, 0, axis][tuple(inner)], torch.full_like(g[0, 0, axis][tuple(inner)], 1.5)
    )
    for other in {0, 1, 2} - {axis}:
        assert g[0, 0, other].abs().max() < 1e-6
    mag = sobel_magnitude(x)
    assert mag.shape == x.shape
    torch.testing.assert_close(
        mag[0, 0][tuple(inner)], torch.full_like(mag[0, 0][tuple(inner)], 1.5)
    )


def test_sobel_constant_is_zero_and_differentiable():
    x = torch.full((2, 3, 8, 8), 0.7, requires_grad=True)
    mag = sobel_magnitude(x)
    assert mag.max() < 1e-5
    mag.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_sobel_rejects_bad_rank():
    with pytest.raises(ValueError, match="shape"):
        sobel_magnitude(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="norm"):
        sobel_magnitude(torch.zeros(1, 1, 4, 4), norm="l3")


def test_total_variation_2d_3d_hand_values():
    assert total_variation(_ramp2d(0.25)).item() == pytest.approx(0.25)
    # checkerboard 2x2: every neighbour differs by 1 along both axes -> 2
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).reshape(1, 1, 2, 2)
    assert total_variation(x).item() == pytest.approx(2.0)
    v = torch.arange(4, dtype=torch.float32).reshape(1, 1, 4, 1, 1).expand(1, 1, 4, 3, 3) * 2
    assert total_variation(v).item() == pytest.approx(2.0)
    assert total_variation(torch.ones(1, 1, 3, 3, 3)).item() == 0.0


def test_ssim_identical_and_constant_hand_value():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    a, b = 0.2, 0.6
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    xa = torch.full((1, 1, 16, 16), a)
    xb = torch.full((1, 1, 16, 16), b)
    assert ssim(xa, xb).item() == pytest.approx(expected, rel=1e-4)
    va = torch.full((1, 1, 12, 12, 12), a)
    vb = torch.full((1, 1, 12, 12, 12), b)
    assert ssim(va, vb).item() == pytest.approx(expected, rel=1e-4)
    assert SSIMLoss()(va, vb).item() == pytest.approx(1 - expected, rel=1e-4)


def test_ssim_properties_2d_3d():
    torch.manual_seed(1)
    x = torch.rand(2, 1, 10, 20, 20)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    s = ssim(x, noisy)
    assert 0.0 < s.item() < 0.95
    assert ssim(noisy, x).item() == pytest.approx(s.item(), abs=1e-6)
    per = ssim(x, noisy, reduction="none")
    assert per.shape == (2,)
    # a side shorter than the window still works (window shrinks to 5 on that axis)
    small = torch.rand(1, 1, 5, 32, 32)
    assert ssim(small, small).item() == pytest.approx(1.0, abs=1e-5)
    # data range scales the constants: the same images in [0, 255] give the same SSIM
    img = torch.rand(1, 1, 24, 24)
    other = torch.rand(1, 1, 24, 24)
    assert ssim(img * 255, other * 255, data_range=255.0).item() == pytest.approx(
        ssim(img, other).item(), abs=1e-4
    )


def test_ssim_gradient_and_errors():
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    y = torch.rand(1, 1, 16, 16)
    SSIMLoss()(x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError, match="odd"):
        ssim(y, y, window=4)
