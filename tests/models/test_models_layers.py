from __future__ import annotations

import pytest
import torch

from fuse4seg.models.layers import (
    AffineCoupling,
    ConvNeXtBlock,
    HaarSqueeze,
    InvertibleSequence,
    RestormerBlock,
    SpatialSelfAttention,
    TransformerBlock,
    haar_squeeze,
    haar_unsqueeze,
    sinusoidal_position_2d,
)


def test_haar_hand_values_and_exact_inverse():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    y = haar_squeeze(x)
    # LL = (1+2+3+4)/2, d1 = (1-2+3-4)/2, d2 = (1+2-3-4)/2, d3 = (1-2-3+4)/2
    torch.testing.assert_close(y.flatten(), torch.tensor([5.0, -1.0, -2.0, 0.0]))
    z = torch.randn(2, 3, 6, 10)
    sq = HaarSqueeze()
    assert sq(z).shape == (2, 12, 3, 5)
    assert (sq.inverse(sq(z)) - z).abs().max() < 1e-6
    # orthonormal: energy preserved
    assert sq(z).pow(2).sum().item() == pytest.approx(z.pow(2).sum().item(), rel=1e-5)
    with pytest.raises(ValueError, match="even"):
        haar_squeeze(torch.zeros(1, 1, 5, 4))
    with pytest.raises(ValueError, match="4C"):
        haar_unsqueeze(torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("channels", [4, 16])
def test_affine_coupling_inverts_exactly(channels):
    torch.manual_seed(0)
    node = AffineCoupling(channels)
    z = torch.randn(2, channels, 9, 7)
    with torch.no_grad():
        y = node(z)
        assert y.shape == z.shape
        assert (y - z).abs().max() > 1e-3  # not the identity
        assert (node.inverse(y) - z).abs().max() < 1e-4
        assert (node(node.inverse(z)) - z).abs().max() < 1e-4


def test_affine_coupling_matches_spec_equation():
    torch.manual_seed(1)
    node = AffineCoupling(4)
    z = torch.randn(1, 4, 5, 5)
    z1, z2 = z.chunk(2, dim=1)
    with torch.no_grad():
        s = node.clamp * torch.tanh(node.rho(z2) / node.clamp)
        z1p = z1 * torch.exp(s) + node.eta(z2)
        z2p = z2 + node.phi(z1p)
        torch.testing.assert_close(node(z), torch.cat([z1p, z2p], dim=1))
    with pytest.raises(ValueError, match="even"):
        AffineCoupling(5)


@pytest.mark.parametrize("haar", [False, True])
def test_invertible_sequence_inverts_exactly(haar):
    torch.manual_seed(2)
    seq = InvertibleSequence(8, num_nodes=3, haar=haar)
    z = torch.randn(2, 8, 12, 10)
    with torch.no_grad():
        y = seq(z)
        assert y.shape == z.shape
        assert (seq.inverse(y) - z).abs().max() < 1e-4


def test_attention_and_blocks_shapes():
    x = torch.randn(2, 16, 9, 11)
    assert RestormerBlock(16, 4)(x).shape == x.shape
    assert TransformerBlock(16, 2, kv_size=4)(x).shape == x.shape
    assert ConvNeXtBlock(16)(x).shape == x.shape
    # kv_size >= the map size means no pooling: identical to full attention
    torch.manual_seed(3)
    full = SpatialSelfAttention(16, 2, kv_size=None)
    big = SpatialSelfAttention(16, 2, kv_size=32)
    big.load_state_dict(full.state_dict())
    torch.testing.assert_close(full(x), big(x))
    with pytest.raises(ValueError, match="divisible"):
        SpatialSelfAttention(10, 3)


def test_sinusoidal_position_2d():
    pos = sinusoidal_position_2d(8, 3, 5)
    assert pos.shape == (1, 8, 3, 5)
    # rows encoded in the first half, columns in the second
    assert torch.allclose(pos[0, :4, :, 0], pos[0, :4, :, 4])
    assert torch.allclose(pos[0, 4:, 0, :], pos[0, 4:, 2, :])
    assert not torch.allclose(pos[0, :4, 0, 0], pos[0, :4, 1, 0])
    with pytest.raises(ValueError, match="multiple of 4"):
        sinusoidal_position_2d(6, 2, 2)
