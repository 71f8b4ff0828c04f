"""The compiled CPU kernels give the values of the tensor code (which also runs on GPUs).

Both backends are switched with ``FUSE4SEG_METRICS_BACKEND``; the reference golden values are
checked in ``test_metrics_fusion_reference.py`` with the default (kernel) backend.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from fuse4seg.metrics import (  # noqa: E402
    FUSION_METRICS,
    _kernels,  # noqa: E402
    compute_fusion_metrics,
    entropy,
    mutual_information,
    qabf,
    read_gray_reference,
    ssim_sum,
    vif,
)

#: metrics with a kernel, and how close the two backends must be (relative)
KERNEL_TOLERANCE = {"EN": 1e-13, "MI": 1e-12, "VIF": 1e-12, "SSIM": 1e-12, "Qabf": 2e-6}


def _smooth(seed: int, shape, integer: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, shape[-2]).view(-1, 1)
    x = torch.linspace(0, 1, shape[-1]).view(1, -1)
    base = 127 + 100 * torch.sin(7 * x + seed) * torch.cos(5 * y)
    img = (base + 20 * torch.randn(shape, generator=g)).clamp(0, 255)
    img[..., : shape[-2] // 4, :] = 0.0  # a black band: the guards of VIF and Qabf
    return img.round() if integer else img


def _both(monkeypatch, fn):
    monkeypatch.setenv("FUSE4SEG_METRICS_BACKEND", "numba")
    assert _kernels.available()
    fast = fn()
    monkeypatch.setenv("FUSE4SEG_METRICS_BACKEND", "torch")
    assert not _kernels.available()
    slow = fn()
    return fast, slow


def _close(fast: dict, slow: dict, tolerance: dict) -> None:
    for name, tol in tolerance.items():
        a, b = fast[name], slow[name]
        assert a.dtype == b.dtype == torch.float64 and a.shape == b.shape, name
        assert torch.equal(torch.isnan(a), torch.isnan(b)), name
        ok = ~torch.isnan(a)
        rel = ((a[ok] - b[ok]).abs() / b[ok].abs().clamp_min(1e-12)).max().item()
        assert rel <= tol, f"{name}: kernel vs tensor code differ by {rel:.2e} (> {tol})"


@pytest.mark.parametrize("n_src", [2, 3])
def test_kernels_match_tensor_code_reference(monkeypatch, n_src):
    src = torch.stack([_smooth(s, (3, 64, 72)) for s in range(n_src)], 1)
    fused = src.amax(1)
    fused[1] = src[1].mean(0).round()
    names = [n for n in KERNEL_TOLERANCE if n != "SCD"]
    fast, slow = _both(monkeypatch, lambda: compute_fusion_metrics(src, fused, metrics=names))
    _close(fast, slow, KERNEL_TOLERANCE)


@pytest.mark.parametrize("shape", [(2, 45, 131), (1, 97, 83)])
def test_kernels_match_tensor_code_odd_sizes(monkeypatch, shape):
    """Sizes that leave a short last band (VIF, SSIM, Qabf work in bands of rows) and an odd
    number of filtered rows (VIF filters two rows at a time)."""
    src = torch.stack([_smooth(s, shape) for s in range(2)], 1)
    fused = src.amax(1)
    names = list(KERNEL_TOLERANCE)
    fast, slow = _both(monkeypatch, lambda: compute_fusion_metrics(src, fused, metrics=names))
    _close(fast, slow, KERNEL_TOLERANCE)


def test_kernels_match_tensor_code_standard_float_data(monkeypatch):
    src = torch.stack([_smooth(s, (2, 60, 64), integer=False) / 255 for s in (3, 4)], 1)
    fused = 0.6 * src[:, 0] + 0.4 * src[:, 1]
    names = list(KERNEL_TOLERANCE)

    def run():
        return compute_fusion_metrics(src, fused, "standard", names, data_range=1.0)

    fast, slow = _both(monkeypatch, run)
    # standard Qabf is float64 in both backends
    _close(fast, slow, {**KERNEL_TOLERANCE, "Qabf": 1e-12})


def test_kernels_match_tensor_code_on_real_pairs(monkeypatch, harvard_dir):
    a, b = [], []
    for name in sorted((harvard_dir / "MRI_PET" / "MRI").glob("*.png"))[:4]:
        a.append(read_gray_reference(name))
        b.append(read_gray_reference(harvard_dir / "MRI_PET" / "PET" / name.name))
    src = torch.from_numpy(np.stack([np.stack(a), np.stack(b)], 1))
    fused = src.amax(1)
    for convention in ("reference", "standard"):

        def run(convention=convention):
            return compute_fusion_metrics(src, fused, convention)

        fast, slow = _both(monkeypatch, run)
        tol = dict(KERNEL_TOLERANCE)
        if convention == "standard":
            tol["Qabf"] = 1e-12
        _close(fast, slow, tol)


def test_kernel_edge_cases(monkeypatch):
    monkeypatch.setenv("FUSE4SEG_METRICS_BACKEND", "numba")
    img = _smooth(0, (1, 48, 48))
    flat = torch.full_like(img, 80.0)
    zero = torch.zeros_like(img)
    # identical images: VIF 1 per source, SSIM 1 per source, Qabf ~1 (sigmoid saturation)
    assert vif([img, img], img).item() == pytest.approx(2.0, rel=1e-9)
    assert ssim_sum([img, img], img).item() == pytest.approx(2.0, rel=1e-6)
    # a constant source: its VIF ratio is 0/0 -> 1 (the evaluator's rule)
    assert vif([flat, img], img).item() == pytest.approx(2.0, rel=1e-9)
    # black everywhere: no edges -> Qabf NaN (0 / 0); EN 0; MI 0
    assert math.isnan(qabf([zero, zero], zero).item())
    assert entropy(zero).item() == 0.0
    assert mutual_information([flat, flat], zero).item() == 0.0
    # 3D histograms go through the same kernel
    vol = _smooth(1, (2, 6, 20, 24))
    fast, slow = _both(
        monkeypatch,
        lambda: {
            "EN": entropy(vol, spatial_dims=3),
            "MI": mutual_information(vol.unsqueeze(1), vol.flip(-1), spatial_dims=3),
        },
    )
    _close(fast, slow, {"EN": 1e-13, "MI": 1e-12})


def test_kernel_too_small_for_vif(monkeypatch):
    monkeypatch.setenv("FUSE4SEG_METRICS_BACKEND", "numba")
    img = _smooth(0, (1, 41, 64))
    with pytest.raises(ValueError, match="too small for the 4-scale VIF"):
        vif([img[:, :40]] * 2, img[:, :40])
    assert vif([img, img], img).item() == pytest.approx(2.0, rel=1e-9)  # 41 px is enough


def test_backend_switch_is_validated(monkeypatch):
    monkeypatch.setenv("FUSE4SEG_METRICS_BACKEND", "fortran")
    with pytest.raises(ValueError, match="FUSE4SEG_METRICS_BACKEND"):
        _kernels.available()


def test_worker_threads_give_the_same_values():
    src = torch.stack([_smooth(s, (5, 48, 48)) for s in (0, 1)], 1)
    fused = src.mean(1).round()
    one = compute_fusion_metrics(src, fused, num_workers=1)
    two = compute_fusion_metrics(src, fused, num_workers=2)
    assert list(one) == list(FUSION_METRICS)
    for name in FUSION_METRICS:
        assert torch.equal(one[name], two[name]), name
    with pytest.raises(ValueError, match="num_workers"):
        compute_fusion_metrics(src, fused, num_workers=0)
