"""RMR-Fusion networks: shapes for every head, odd sizes, configs and presets."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fuse4seg.errors import ConfigError
from fuse4seg.rmr.networks import (
    RMR_PRESETS,
    ModalityEncoder,
    PadToMultiple,
    RMRConfig,
    RMRNet,
    create_rmr_net,
)


@pytest.mark.parametrize(
    ("head", "shape"),
    [
        ("unet", (1, 2, 8, 16, 16)),
        ("segresnet", (1, 2, 7, 13, 17)),
        ("dynunet", (2, 2, 8, 16, 16)),
        ("unetr", (1, 2, 16, 16, 16)),
        ("swinunetr", (1, 2, 8, 16, 16)),
    ],
)
def test_forward_shapes_per_semantic_head(head, shape):
    torch.manual_seed(0)
    net = create_rmr_net("tiny", 2, seg_head=head, patch_size=(16, 16, 16)).eval()
    x = torch.rand(shape)
    with torch.no_grad():
        out = net(x)
    b, _, d, h, w = shape
    assert out.fused.shape == (b, 1, d, h, w)
    assert out.logits.shape == (b, 4, d, h, w)
    assert out.features.shape == (b, 16, d, h, w)
    assert out.fused.min() >= 0 and out.fused.max() <= 1
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("size", [(8, 16, 16), (5, 9, 11), (1, 2, 3)])
def test_encoder_keeps_size_and_reconstruct_per_modality(size):
    cfg = RMRConfig(**{**RMR_PRESETS["tiny"], "num_modalities": 3})
    enc = ModalityEncoder(cfg).eval()
    with torch.no_grad():
        f = enc(torch.rand(2, 1, *size))
    assert f.shape == (2, 16, *size)
    net = RMRNet(cfg).eval()
    with torch.no_grad():
        rec = net.reconstruct(torch.rand(1, 3, *size))
    assert rec.shape == (1, 3, *size)


def test_encoders_are_not_shared_and_decoder_is():
    net = create_rmr_net("tiny", 2, seg_head="unet")
    p0 = dict(net.encoders[0].named_parameters())
    p1 = dict(net.encoders[1].named_parameters())
    assert p0.keys() == p1.keys()
    assert all(p0[k] is not p1[k] for k in p0)
    assert not torch.equal(p0["shallow.0.weight"], p1["shallow.0.weight"])
    assert len(list(net.decoder.parameters())) > 0


def test_freeze_stage1_keeps_eval_mode_after_train():
    net = create_rmr_net("tiny", 2, seg_head="unet")
    net.freeze_stage1()
    net.train()
    assert not net.encoders.training and not net.decoder.training
    assert net.fusion.training and net.seg_head.training
    assert all(not p.requires_grad for p in net.encoders.parameters())
    assert all(p.requires_grad for p in net.fusion.parameters())


def test_config_round_trip_and_errors():
    net = create_rmr_net("tiny", 2, seg_head="segresnet")
    again = RMRNet.from_config(dataclasses.asdict(net.config))
    assert again.config == net.config
    again.load_state_dict(net.state_dict())
    with pytest.raises(ConfigError, match="unknown RMR preset"):
        create_rmr_net("huge")
    with pytest.raises(ConfigError, match="unknown semantic head"):
        create_rmr_net("tiny", seg_head="vnet")
    with pytest.raises(ConfigError, match="unknown RMR network option"):
        create_rmr_net("tiny", width=3)
    with pytest.raises(ValueError, match=r"expected \(B, 2, D, H, W\)"):
        net(torch.rand(1, 3, 8, 8, 8))


def test_pad_to_multiple_crops_back_and_fixed_size_guard():
    calls = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            calls.append(tuple(x.shape[2:]))
            return x * 2

    x = torch.rand(1, 1, 5, 9, 33)
    y = PadToMultiple(Probe(), 8)(x)
    assert calls[-1] == (8, 16, 40)
    assert torch.equal(y, x * 2)
    fixed = PadToMultiple(Probe(), fixed_size=(8, 16, 16))
    assert fixed(torch.rand(1, 1, 4, 4, 4)).shape == (1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match="exceeds"):
        fixed(torch.rand(1, 1, 9, 4, 4))


def test_residual_fusion_starts_at_the_mean_features_and_old_configs_stay_plain():
    torch.manual_seed(0)
    net = create_rmr_net("tiny", 2, seg_head="unet", patch_size=(8, 16, 16)).eval()
    assert net.config.fusion_residual and not RMR_PRESETS["paper"].get("fusion_residual")
    x = torch.rand(1, 2, 8, 16, 16)
    with torch.no_grad():
        feats = net.encode(x)
        torch.testing.assert_close(net.fusion(feats), (feats[0] + feats[1]) / 2)
        torch.testing.assert_close(net(x).fused, net.decoder((feats[0] + feats[1]) / 2))
    # a config written before the option existed (no key) rebuilds the plain fusion module
    old = dataclasses.asdict(net.config)
    del old["fusion_residual"]
    plain = RMRNet.from_config(old)
    assert not plain.config.fusion_residual
    plain.load_state_dict(net.state_dict())  # same parameters, no residual path
    with torch.no_grad():
        assert not torch.allclose(plain.fusion(feats), net.fusion(feats))
