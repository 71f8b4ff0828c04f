"""The reference convention reproduces the MIF literature's Python evaluator.

Golden values: ``../shared/reference/fusion_metrics_reference.json`` (all Harvard MRI-CT and
MRI-PET pairs, fused by the 'mean' and 'max' rules).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fuse4seg.metrics import FUSION_METRICS, compute_fusion_metrics, read_gray_reference
from fuse4seg.metrics.image_reading import rgb_to_gray_reference

REL, ABS = 1e-4, 1e-6


def _fuse(a: np.ndarray, b: np.ndarray, rule: str) -> np.ndarray:
    if rule == "mean":
        return np.floor((a + b) / 2 + 0.5).astype(np.float32)
    return np.maximum(a, b)


@pytest.fixture(scope="module")
def golden(reference_dir, harvard_dir):
    ref = json.loads((reference_dir / "fusion_metrics_reference.json").read_text())
    keys = sorted(ref["values"])
    cache: dict[str, np.ndarray] = {}

    def read(path):
        if str(path) not in cache:
            cache[str(path)] = read_gray_reference(path)
        return cache[str(path)]

    a, b, f = [], [], []
    for key in keys:
        name, rule = key.split("|")
        subset, fname = name.split("/")
        other = subset.split("_")[1]
        ai = read(harvard_dir / subset / "MRI" / fname)
        bi = read(harvard_dir / subset / other / fname)
        a.append(ai)
        b.append(bi)
        f.append(_fuse(ai, bi, rule))
    src = torch.from_numpy(np.stack([np.stack(a), np.stack(b)], 1))
    return keys, ref, src, torch.from_numpy(np.stack(f))


@pytest.fixture(scope="module")
def computed(golden):
    _, _, src, fused = golden
    return compute_fusion_metrics(src, fused, convention="reference")


def test_golden_file_covers_all_pairs_and_metrics(golden):
    keys, ref, _, _ = golden
    assert len(keys) == 2 * (21 + 42)
    assert set(ref["metrics"]) == set(FUSION_METRICS)


def test_every_reference_metric_matches_on_every_image(golden, computed):
    keys, ref, _, _ = golden
    vals = computed
    assert list(vals) == list(FUSION_METRICS)
    failures = []
    for name in FUSION_METRICS:
        want = torch.tensor([ref["values"][k][name] for k in keys], dtype=torch.float64)
        got = vals[name]
        assert got.shape == (len(keys),) and got.dtype == torch.float64
        err = (got - want).abs()
        bad = (err > ABS) & (err > REL * want.abs())
        failures += [f"{keys[i]} {name}: {got[i]:.8g} vs {want[i]:.8g}" for i in bad.nonzero()]
    assert not failures, failures[:10]


def test_histogram_and_filter_metrics_are_exact_to_float64(golden, computed):
    """EN, MI, VIF and SSIM reproduce the evaluator to ~1e-12 (same arithmetic)."""
    keys, ref, _, _ = golden
    for name in ("EN", "MI", "VIF", "SSIM"):
        v = computed[name]
        want = torch.tensor([ref["values"][k][name] for k in keys], dtype=torch.float64)
        assert torch.allclose(v, want, rtol=1e-11, atol=1e-12), name


def test_luminance_of_exact_halves_follows_opencv_fma_order():
    """(0, 138, 171) has luminance exactly 100.5: OpenCV's float32 FMA chain gives 101,
    exact half-to-even rounding and a plain float32 sum give 100. The golden EN/MI values
    (which depend on every PET pixel) only match with the FMA order."""
    rgb = np.array([[[0, 138, 171], [0, 172, 224], [10, 10, 10], [255, 0, 0]]], np.uint8)
    assert (rgb[0, :2].astype(np.int64) @ np.array([299, 587, 114])).tolist() == [100500, 126500]
    gray = rgb_to_gray_reference(rgb)
    assert gray.dtype == np.float32
    assert gray[0].tolist() == [101.0, 127.0, 10.0, 76.0]


def test_batched_equals_single_image(golden, computed):
    _, _, src, fused = golden
    idx = [0, 70, 125]
    one = compute_fusion_metrics(src[idx], fused[idx], chunk_size=3)
    for name, v in one.items():
        assert torch.allclose(v, computed[name][idx], rtol=1e-12, atol=1e-12), name


def test_reading_colour_and_grey(tmp_path):
    from PIL import Image

    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey).save(tmp_path / "g.png")
    out = read_gray_reference(tmp_path / "g.png")
    assert out.shape == (16, 16) and np.array_equal(out, grey.astype(np.float32))
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red -> round(0.299 * 255) = 76
    Image.fromarray(rgb).save(tmp_path / "r.png")
    assert np.all(read_gray_reference(tmp_path / "r.png") == 76)


def test_reading_errors_name_the_file(tmp_path):
    from fuse4seg.errors import InputError

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png: cannot read image"):
        read_gray_reference(bad)
    with pytest.raises(InputError, match="missing.png: file not found"):
        read_gray_reference(tmp_path / "missing.png")
