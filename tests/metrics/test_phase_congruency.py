"""Phase congruency and Qp (``fuse4seg.metrics.phase_congruency``). Only MATLAB code defines
them (Liu's ``myphasecong3.m`` and ``metricZhao.m``; no faithful public Python port was
found), so the checks are properties the code implies: a step edge, invariances, the
correlation stage on known maps, symmetry in the sources, conventions and the NaN case."""

from __future__ import annotations

import pytest
import torch

from fuse4seg.metrics import compute_fusion_metrics, phase_congruency, q_p, read_gray_reference
from fuse4seg.metrics.phase_congruency import _median, _zhao_similarity


def _harvard(harvard_dir, name="11.png"):
    a = torch.from_numpy(read_gray_reference(harvard_dir / "MRI_CT" / "MRI" / name)).double()
    b = torch.from_numpy(read_gray_reference(harvard_dir / "MRI_CT" / "CT" / name)).double()
    return a, b


def test_phase_congruency_of_a_step_edge():
    x = torch.zeros(1, 64, 64, dtype=torch.float64)
    x[:, :, 32:] = 200.0  # vertical edges at column 32 and (periodic FFT) at column 0
    pc, big_m, small_m = phase_congruency(x)
    assert pc.shape == big_m.shape == small_m.shape == (1, 64, 64)
    # the edge lies between columns 31 and 32: PC peaks on both, symmetrically, and is 0
    # (below the noise threshold) away from the edges
    assert torch.equal(pc.amax(2), pc[:, :, 31]) and torch.allclose(pc[:, :, 31], pc[:, :, 32])
    assert (pc[0, :, 31] > 0.6).all() and (pc[0, :, 10:22] < 1e-3).all()
    assert (big_m >= small_m).all() and torch.allclose(big_m.amax(2), big_m[:, :, 31])
    # the filters vanish at frequency 0: adding a constant changes nothing
    for u, v in zip(phase_congruency(x + 37.0), (pc, big_m, small_m), strict=True):
        assert torch.allclose(u, v, atol=1e-9)


def test_median_is_matlabs():
    x = torch.tensor([[4.0, 1.0, 3.0, 2.0], [5.0, 5.0, 1.0, 5.0]])
    assert torch.equal(_median(x), torch.tensor([2.5, 5.0]))
    assert torch.equal(_median(x[:, :3]), torch.tensor([3.0, 5.0]))


def test_correlation_stage_on_known_maps():
    g = torch.Generator().manual_seed(0)
    feat = torch.rand(2, 1, 20, 20, generator=g, dtype=torch.float64)
    full = torch.ones(2, 1, 20, 20, dtype=torch.bool)
    # F's map proportional to the source's: every local correlation is (2s + C) / (2s + C) = 1
    got = _zhao_similarity(feat, feat[:, 0], 2.0 * feat[:, 0], full, full[:, 0])
    assert torch.allclose(got, torch.ones(2, dtype=torch.float64), rtol=1e-10)
    # the max map covers the pixels the source masks leave out
    half = full.clone()
    half[..., 10:] = False
    got = _zhao_similarity(feat, feat[:, 0], feat[:, 0], half, full[:, 0])
    assert torch.allclose(got, torch.ones(2, dtype=torch.float64), rtol=1e-10)
    # masked maps against F's unmasked one: below 1 near the mask edge, 0 outside the masks
    inside = _zhao_similarity(feat, feat[:, 0], feat[:, 0], half, half[:, 0])
    assert torch.all((inside > 0.5) & (inside < 1.0))


def test_qp_on_harvard_symmetry_duplicates_and_perfect_fusion(harvard_dir):
    a, b = _harvard(harvard_dir)
    f = torch.maximum(a, b)
    src = torch.stack([a, b])[None]
    v = q_p(src, f[None])
    assert v.shape == (1,) and v.dtype == torch.float64 and 0.0 < v.item() < 1.0
    assert torch.allclose(q_p(src.flip(1), f[None]), v, rtol=1e-12)
    # a duplicated source changes neither the max map nor the per-pixel maximum
    assert torch.allclose(q_p(torch.stack([a, b, b])[None], f[None]), v, rtol=1e-12)
    perfect = q_p(torch.stack([a, a])[None], a[None]).item()
    assert v.item() < perfect <= 1.0  # F's maps are not masked, so not exactly 1
    assert compute_fusion_metrics(src, f[None], metrics=["Qp"])["Qp"].item() == pytest.approx(
        v.item(), rel=1e-12
    )


def test_qp_conventions_contrast_and_nan():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, 48, 40, generator=g, dtype=torch.float64) * 255
    b = torch.rand(1, 48, 40, generator=g, dtype=torch.float64) * 255
    f = (a + b) / 2
    src = torch.stack([a, b], 1)
    ref = q_p(src, f).item()
    assert q_p(src / 255, f / 255, "standard", data_range=1.0).item() == pytest.approx(
        ref, rel=1e-9
    )
    # phase congruency is contrast invariant up to its absolute 1e-4 guards
    assert q_p(2.0 * src, 2.0 * f).item() == pytest.approx(ref, rel=1e-3)
    flat = torch.full((1, 2, 32, 32), 100.0, dtype=torch.float64)
    assert torch.isnan(q_p(flat, flat[:, 0]))  # no pixel with PC > 0.1: 0 / 0
    with pytest.raises(ValueError, match="convention"):
        q_p(src, f, "paper")
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        phase_congruency(a[0])
