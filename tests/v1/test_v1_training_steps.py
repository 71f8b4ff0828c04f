from __future__ import annotations

import pytest
import torch

from fuse4seg.losses import ssim
from fuse4seg.v1.config import make_v1_config
from fuse4seg.v1.cooperative import (
    CooperativeState,
    coop_discriminator_step,
    lower_level_step,
    make_seg_loss,
    make_seg_sgd,
    upper_level_step,
)
from fuse4seg.v1.discriminator import DiscriminatorPair
from fuse4seg.v1.losses import content_loss, fusion_text_loss
from fuse4seg.v1.networks import FusionNetV1
from fuse4seg.v1.pretrain import (
    discriminator_step,
    generator_step,
    make_adam,
    pretrain_parameters,
    random_crop,
)

TINY = {"dim": 8, "heads": 2, "shared_blocks": 1, "low_blocks": 1, "high_blocks": 1,
        "decoder_blocks": 1, "attn_grid": 8}  # fmt: skip


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(module, before):
    return {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}


@pytest.fixture
def setup():
    torch.manual_seed(0)
    cfg = make_v1_config("tiny")
    net = FusionNetV1(**TINY)
    discs = DiscriminatorPair(2, width=4, depth=2)
    x = torch.rand(2, 2, 32, 32)
    return cfg, net, discs, x


def test_pretrain_alternation_updates_only_the_current_player(setup):
    cfg, net, discs, x = setup
    opt_g, _ = make_adam(pretrain_parameters(net), cfg, 1e-3)
    opt_d, _ = make_adam(list(discs.parameters()), cfg, 1e-3)
    enc_dec = torch.nn.ModuleList([net.encoder, net.decoder])
    fusion_only = torch.nn.ModuleList(
        [net.low_fuse, net.high_fuse, net.embed_proj, net.cross_attention, net.attn_out]
    )
    for _ in range(2):
        # discriminator step: every discriminator changes, the encoder/decoder does not
        d0, g0 = _snapshot(discs), _snapshot(enc_dec)
        discriminator_step(net, discs, opt_d, x)
        assert _changed(discs, d0) == set(d0)
        assert not _changed(enc_dec, g0)
        # encoder/decoder step: the reverse; discriminators restored to trainable afterwards
        d0, g0, f0 = _snapshot(discs), _snapshot(enc_dec), _snapshot(fusion_only)
        terms = generator_step(net, discs, opt_g, x, cfg)
        assert not _changed(discs, d0)
        assert _changed(enc_dec, g0)
        assert any(n.startswith("0.") for n in _changed(enc_dec, g0))  # encoder
        assert any(n.startswith("1.") for n in _changed(enc_dec, g0))  # decoder
        assert not _changed(fusion_only, f0)  # fusion layers are not part of pre-training
        assert all(p.requires_grad for p in discs.parameters())
        assert set(terms) == {"enc", "content", "corr", "adv_g"}


def test_content_loss_values():
    x = torch.rand(2, 2, 16, 16)
    assert content_loss(x, x).item() == pytest.approx(0.0, abs=1e-5)
    y = (x + 0.1).clamp(0, 1)
    expected = sum(
        (x[:, m] - y[:, m]).pow(2).mean().item() + 1 - ssim(y[:, m : m + 1], x[:, m : m + 1]).item()
        for m in range(2)
    )
    assert content_loss(x, y).item() == pytest.approx(expected, rel=1e-5)


def test_fusion_text_loss_gradient_term_is_eq13():
    # A fused image equal to the source with the larger gradients everywhere gives 0 gradient term.
    ramp = torch.linspace(0, 1, 16).repeat(16, 1)[None, None]  # (1, 1, 16, 16)
    flat = torch.full_like(ramp, 0.5)
    sources = torch.cat([ramp, flat], dim=1)
    discs = DiscriminatorPair(2, width=4, depth=2)
    total, grad, adv = fusion_text_loss(ramp, sources, discs, adv_weight=0.0)
    assert grad.item() == pytest.approx(0.0, abs=1e-5)
    assert total.item() == pytest.approx(0.0, abs=1e-5)
    _, grad_flat, _ = fusion_text_loss(flat, sources, discs, adv_weight=0.0)
    assert grad_flat.item() > 0.01


def test_random_crop_keeps_labels_aligned():
    x = torch.arange(2 * 2 * 10 * 10, dtype=torch.float32).reshape(2, 2, 10, 10)
    y = x[:, 0].long()
    xc, yc = random_crop(x, 4, y, torch.Generator().manual_seed(1))
    assert xc.shape == (2, 2, 4, 4) and yc.shape == (2, 4, 4)
    assert torch.equal(xc[:, 0].long(), yc)
    same, _ = random_crop(x, 64)
    assert same is x


def test_cooperative_levels_update_their_own_networks(setup):
    from fuse4seg.models import create_seg_net

    cfg, net, discs, x = setup
    seg = create_seg_net("tiny", 1, num_classes=4)
    y = torch.randint(0, 4, (2, 32, 32))
    opt_f, _ = make_adam(list(net.parameters()), cfg, 1e-3)
    opt_d, _ = make_adam(list(discs.parameters()), cfg, 1e-3)
    state = CooperativeState(
        net, seg, discs, opt_f, make_seg_sgd(seg, cfg), opt_d, make_seg_loss(cfg)
    )

    n0, s0, d0 = _snapshot(net), _snapshot(seg), _snapshot(discs)
    coop_discriminator_step(state, x)
    assert _changed(discs, d0) and not _changed(net, n0) and not _changed(seg, s0)

    n0, s0, d0 = _snapshot(net), _snapshot(seg), _snapshot(discs)
    lower_level_step(state, net(x).fused, y)
    assert _changed(seg, s0) and not _changed(net, n0) and not _changed(discs, d0)

    n0, s0, d0 = _snapshot(net), _snapshot(seg), _snapshot(discs)
    seg_buffers = {k: v.clone() for k, v in seg.state_dict().items()}
    terms = upper_level_step(state, x, y, cfg)
    changed = _changed(net, n0)
    assert not _changed(seg, s0) and not _changed(discs, d0)
    assert all(torch.equal(seg.state_dict()[k], v) for k, v in seg_buffers.items())
    # the segmentation loss reaches the cross-attention through the fused image
    assert any(n.startswith("cross_attention.") for n in changed)
    assert any(n.startswith("encoder.") for n in changed)
    assert terms["upper"] == pytest.approx(
        terms["upper_seg"] + terms["grad"] + 0.1 * terms["adv_f"], rel=1e-4
    )
