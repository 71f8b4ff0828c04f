"""Named gradient / total-variation conventions: hand-computed values on ramps.

A ramp ``x[..., j] = a * j`` along the last axis (H x W, or D x H x W), compared with a
source of zeros (gradient 0 everywhere in both conventions), so ``gradient_loss`` is the
mean gradient magnitude of the ramp.

``"unit"``: kernels / 8 (2D) or / 32 (3D), L2 magnitude, replicate padding: ``a`` inside,
``a / 2`` on the first and last column (one-sided difference), 0 along the other axes.

``"cddfuse"`` (CDDFuse ``Sobelxy`` / RMR-Fusion ``Sobelxyz``): raw kernels, ``sum |g_k|``,
zero padding. With ``r_i`` = the weights (1, 2, 1) that fall inside the image (3 on the first
and last row/slice, 4 elsewhere), ``D_j`` = x[j+1] - x[j-1] with zeros outside
(``a``, ``2a``, ..., ``2a``, ``-a (W - 2)``) and ``S_j`` = the (1, 2, 1) smoothing of the row
(``a``, ``4a j``, ..., ``a (3W - 4)``):

* derivative along W: ``prod(r) * D_j`` -> sum ``prod_k(4 n_k - 2) * a (3W - 5)``;
* derivative along another axis n: nonzero only on its first and last index, ``prod(other r)
  * S_j`` -> sum ``2 prod_{k != n}(4 n_k - 2) * a (W - 1)(2W - 1)``.
"""

from __future__ import annotations

import math

import pytest
import torch

from fuse4seg.losses import (
    GRAD_CONVENTIONS,
    gradient_loss,
    gradient_magnitude,
    total_variation,
)


def _ramp(shape: tuple[int, ...], slope: float) -> torch.Tensor:
    """(1, 1, *shape) with x[..., j] = slope * j."""
    line = slope * torch.arange(shape[-1], dtype=torch.float64)
    return line.expand(*shape).reshape(1, 1, *shape).clone()


def _cddfuse_ramp_mean(shape: tuple[int, ...], a: float) -> float:
    *others, w = shape
    r = [4 * n - 2 for n in others]  # sum over one axis of the in-image (1, 2, 1) weights
    total = math.prod(r) * a * (3 * w - 5)  # derivative along W
    for n in range(len(others)):  # derivative along each other axis
        total += 2 * math.prod(r[:n] + r[n + 1 :]) * a * (w - 1) * (2 * w - 1)
    return total / math.prod(shape)


def _unit_ramp_mean(shape: tuple[int, ...], a: float) -> float:
    w = shape[-1]
    return a * ((w - 2) + 2 * 0.5) / w


@pytest.mark.parametrize("shape", [(4, 5), (3, 3), (7, 6), (3, 4, 5), (4, 3, 6)])
@pytest.mark.parametrize("slope", [0.1, 0.25])
def test_gradient_loss_on_a_ramp_equals_the_convention_value(shape, slope):
    fused = _ramp(shape, slope)
    sources = torch.zeros(1, 2, *shape, dtype=torch.float64)
    got_unit = gradient_loss(fused, sources, convention="unit").item()
    got_cdd = gradient_loss(fused, sources, convention="cddfuse").item()
    # unit: the sqrt(g^2 + eps) of a zero source is 1e-6, well inside the tolerance
    assert got_unit == pytest.approx(_unit_ramp_mean(shape, slope), abs=1e-5)
    assert got_cdd == pytest.approx(_cddfuse_ramp_mean(shape, slope), rel=1e-9)


def test_hand_values_of_the_issue():
    # 4 x 5 ramp of slope 0.1: unit (3 * 0.1 + 2 * 0.05) / 5 = 0.08 (0.1 inside);
    # cddfuse (14 * 0.1 * 10 + 2 * 0.1 * 4 * 9) / 20 = (14 + 7.2) / 20 = 1.06
    fused = _ramp((4, 5), 0.1)
    zeros = torch.zeros(1, 1, 4, 5, dtype=torch.float64)
    assert gradient_loss(fused, zeros).item() == pytest.approx(0.08, abs=1e-5)
    assert gradient_loss(fused, zeros, convention="cddfuse").item() == pytest.approx(1.06)


@pytest.mark.parametrize(("shape", "interior"), [((6, 7), 8.0), ((5, 6, 7), 32.0)])
def test_interior_magnitude_of_a_ramp(shape, interior):
    a = 0.1
    x = _ramp(shape, a)
    inner = (0, 0, *[slice(1, -1)] * len(shape))
    unit = gradient_magnitude(x, "unit")[inner]
    cdd = gradient_magnitude(x, "cddfuse")[inner]
    torch.testing.assert_close(unit, torch.full_like(unit, a))
    torch.testing.assert_close(cdd, torch.full_like(cdd, interior * a))


def test_cddfuse_diagonal_ramp_sums_the_axes():
    # x = a (i + j): |g_x| + |g_y| = 16 a inside; unit: the L2 norm sqrt(2) a
    a = 0.05
    i = torch.arange(6, dtype=torch.float64)
    x = (a * (i[:, None] + i[None, :])).reshape(1, 1, 6, 6)
    inner = (0, 0, slice(1, -1), slice(1, -1))
    torch.testing.assert_close(
        gradient_magnitude(x, "cddfuse")[inner], torch.full((4, 4), 16 * a, dtype=x.dtype)
    )
    torch.testing.assert_close(
        gradient_magnitude(x, "unit")[inner], torch.full((4, 4), math.sqrt(2) * a, dtype=x.dtype)
    )


def test_fused_equal_to_the_sharpest_source_is_zero_in_both_conventions():
    g = torch.Generator().manual_seed(0)
    sources = torch.rand(2, 3, 8, 9, generator=g)
    sources[:, 1] = 0.2 * sources[:, 0]  # source 0 has the larger gradient everywhere
    sources[:, 2] = 0.1 * sources[:, 0]
    for convention in GRAD_CONVENTIONS:
        loss = gradient_loss(sources[:, :1], sources, convention=convention)
        assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_unknown_convention_and_norm_mix_are_rejected():
    z = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="unit"):
        gradient_loss(z, z, convention="sobel8")
    with pytest.raises(ValueError, match="norm"):
        gradient_loss(z, z, norm="l1", convention="cddfuse")
    with pytest.raises(ValueError, match="squared"):
        total_variation(z, convention="l2")


@pytest.mark.parametrize("slope", [0.5, -0.2])
def test_total_variation_conventions_on_a_ramp(slope):
    x = _ramp((3, 4, 5), slope)
    assert total_variation(x).item() == pytest.approx(abs(slope))
    assert total_variation(x, convention="abs").item() == pytest.approx(abs(slope))
    assert total_variation(x, convention="squared").item() == pytest.approx(slope**2)
    # diagonal ramp in 2D: each axis contributes once
    i = torch.arange(5, dtype=torch.float64)
    d = (slope * (i[:, None] + 2 * i[None, :])).reshape(1, 1, 5, 5)
    assert total_variation(d, "abs").item() == pytest.approx(3 * abs(slope))
    assert total_variation(d, "squared").item() == pytest.approx(5 * slope**2)
