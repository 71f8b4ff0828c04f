from __future__ import annotations

import math

import pytest
import torch

from fuse4seg.v1.attention import CrossAttentionFusion, token_grid_size
from fuse4seg.v1.discriminator import Discriminator, DiscriminatorPair, lsgan_d_loss, lsgan_g_loss


@pytest.mark.parametrize(
    ("shape", "heads", "grid", "tokens"),
    [((2, 8, 12, 12), 2, 16, 144), ((1, 16, 24, 20), 4, 8, 64), ((3, 8, 5, 7), 1, 4, 16)],
)
def test_attention_shapes_and_rows_sum_to_one(shape, heads, grid, tokens):
    torch.manual_seed(0)
    attn = CrossAttentionFusion(shape[1], heads=heads, grid=grid)
    x1, x2 = torch.randn(shape), torch.randn(shape)
    out = attn(x1, x2)
    assert out.fused.shape == shape
    assert out.attention.shape == (shape[0], heads, tokens, tokens)
    assert out.grid[0] * out.grid[1] == tokens
    assert torch.allclose(out.attention.sum(-1), torch.ones(shape[0], heads, tokens), atol=1e-5)
    assert (out.attention >= 0).all()


def test_queries_from_m1_keys_values_from_m2():
    torch.manual_seed(0)
    attn = CrossAttentionFusion(8, heads=2, grid=4).eval()
    x1, x2 = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    ref = attn(x1, x2)
    # Hand computation on the (already 4x4) token grid.
    q_in = attn.norm_q(x1.flatten(2).transpose(1, 2))
    kv = attn.norm_kv(x2.flatten(2).transpose(1, 2))
    q = attn.to_q(q_in).reshape(1, 16, 2, 4).transpose(1, 2)
    k = attn.to_k(kv).reshape(1, 16, 2, 4).transpose(1, 2)
    v = attn.to_v(kv).reshape(1, 16, 2, 4).transpose(1, 2)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), -1)
    assert torch.allclose(a, ref.attention, atol=1e-6)
    fused = attn.proj((a @ v).transpose(1, 2).reshape(1, 16, 8))  # (B, N, C)
    assert torch.allclose(fused.transpose(1, 2).reshape(1, 8, 4, 4), ref.fused, atol=1e-5)
    # Changing M1 changes the attention rows; values are a convex mix of M2 tokens only.
    x2_const = torch.zeros(1, 8, 4, 4)
    out_const = attn(x1, x2_const)
    expected = attn.proj(attn.to_v(attn.norm_kv(torch.zeros(1, 16, 8))))
    assert torch.allclose(out_const.fused.flatten(2).transpose(1, 2), expected, atol=1e-5)


def test_attention_input_validation():
    with pytest.raises(ValueError, match="multiple of heads"):
        CrossAttentionFusion(6, heads=4)
    attn = CrossAttentionFusion(8, heads=2)
    with pytest.raises(ValueError, match="equal shape"):
        attn(torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 5))
    assert token_grid_size(40, 6, 16) == (16, 6)


def test_discriminator_and_lsgan_losses():
    d = DiscriminatorPair(2, width=4, depth=2)
    assert len(d) == 2 and isinstance(d[0], Discriminator)
    scores = d[1](torch.rand(2, 1, 32, 32))
    assert scores.shape == (2, 1, 8, 8)
    ones, zeros = torch.ones(3), torch.zeros(3)
    assert lsgan_d_loss(ones, zeros).item() == 0.0  # perfect discriminator
    assert lsgan_d_loss(zeros, ones).item() == pytest.approx(1.0)
    assert lsgan_g_loss(ones).item() == 0.0
    assert lsgan_g_loss(torch.full((4,), 3.0)).item() == pytest.approx(2.0)


def test_config_presets_and_registration():
    from fuse4seg.errors import ConfigError
    from fuse4seg.train.methods import get_method
    from fuse4seg.v1 import make_v1_config, register_v1_method

    paper = make_v1_config("paper")
    assert (paper.pretrain_epochs, paper.pretrain_lr, paper.crop_size, paper.batch_size) == (
        80, 1e-4, 224, 16,
    )  # fmt: skip
    assert (paper.lr_step_epochs, paper.lr_gamma, paper.seg_lr, paper.seg_momentum) == (
        20, 0.5, 0.01, 0.9,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="unknown fuse4seg-v1 config key"):
        make_v1_config("tiny", {"bogus": 1})
    with pytest.raises(ConfigError, match="exactly 2 modalities"):
        make_v1_config("tiny", {"modalities": ["t1", "t2", "flair"]})
    register_v1_method()
    register_v1_method()  # idempotent
    spec = get_method("fuse4seg-v1")
    assert spec.runner == "fuse4seg.v1.runner:run_v1_training" and spec.has_leader
    assert spec.load_runner().__name__ == "run_v1_training"
