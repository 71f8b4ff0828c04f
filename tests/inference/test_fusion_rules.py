"""Classical fusion rules: exact values, shapes, range, identity on identical sources."""

from __future__ import annotations

import pytest
import torch

from fuse4seg.errors import ConfigError
from fuse4seg.fusion_rules import (
    FUSION_RULES,
    apply_fusion_rule,
    fuse_average,
    fuse_dwt,
    fuse_laplacian,
    fuse_max,
    fuse_pca,
    get_fusion_rule,
)

SHAPES = [(1, 2, 16, 16), (2, 2, 37, 53), (1, 3, 24, 17), (3, 1, 9, 9), (1, 2, 3, 5)]


def test_average_and_max_exact_values():
    a = torch.tensor([[0.0, 0.2], [1.0, 0.5]])
    b = torch.tensor([[1.0, 0.6], [0.0, 0.5]])
    x = torch.stack([a, b])[None]  # (1, 2, 2, 2)
    assert torch.equal(fuse_average(x), torch.tensor([[[[0.5, 0.4], [0.5, 0.5]]]]))
    assert torch.equal(fuse_max(x), torch.tensor([[[[1.0, 0.6], [1.0, 0.5]]]]))


@pytest.mark.parametrize("name", sorted(FUSION_RULES))
@pytest.mark.parametrize("shape", SHAPES)
def test_shape_range_and_identity(name, shape):
    torch.manual_seed(0)
    x = torch.rand(shape)
    fused = FUSION_RULES[name](x)
    assert fused.shape == (shape[0], 1, *shape[2:])
    assert fused.dtype == x.dtype
    assert float(fused.min()) >= 0.0 and float(fused.max()) <= 1.0
    same = x[:, :1].expand(-1, shape[1], -1, -1).contiguous()
    assert torch.allclose(FUSION_RULES[name](same), x[:, :1], atol=1e-5)


@pytest.mark.parametrize("name", sorted(FUSION_RULES))
def test_batch_elements_are_independent(name):
    torch.manual_seed(1)
    x = torch.rand(3, 2, 20, 24)
    batched = FUSION_RULES[name](x)
    single = torch.cat([FUSION_RULES[name](x[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-6)


def test_detail_rules_keep_the_stronger_edge():
    # Source A: a vertical step edge 0 -> 1; source B: flat grey. Averaging halves the step
    # (largest jump 0.5); max-abs detail selection keeps almost all of A's edge.
    a = torch.zeros(32, 32)
    a[:, 16:] = 1.0
    b = torch.full((32, 32), 0.5)
    x = torch.stack([a, b])[None]

    def max_jump(f: torch.Tensor) -> float:
        return float((f[..., 1:] - f[..., :-1]).abs().max())

    assert max_jump(fuse_average(x)) == pytest.approx(0.5)
    for rule in (fuse_laplacian, fuse_dwt):
        assert max_jump(rule(x)) > 0.9, rule.__name__


def test_pca_weights_follow_the_variance():
    torch.manual_seed(2)
    a = torch.rand(1, 1, 16, 16)
    b = torch.full((1, 1, 16, 16), 0.3)  # no variance: weight 0
    fused = fuse_pca(torch.cat([a, b], dim=1))
    assert torch.allclose(fused, a, atol=1e-6)
    const = torch.full((1, 2, 8, 8), 0.25)
    assert torch.allclose(fuse_pca(const), const[:, :1])


def test_registry_and_errors():
    assert set(FUSION_RULES) == {"average", "max", "laplacian", "dwt", "pca"}
    assert get_fusion_rule("max") is fuse_max
    x = torch.rand(1, 2, 8, 8)
    assert torch.equal(apply_fusion_rule("average", x), fuse_average(x))
    with pytest.raises(ConfigError, match="unknown fusion rule 'median'"):
        get_fusion_rule("median")
    with pytest.raises(ValueError, match=r"\(B, M, H, W\)"):
        fuse_average(torch.rand(2, 8, 8))
