"""fuse4seg-v1 options: gradient convention of eq. 13, the paper's log-GAN, and the
"w/o cross-attention" ablation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fuse4seg.errors import ConfigError
from fuse4seg.losses import gradient_loss
from fuse4seg.v1.attention_maps import fuse_with_attention
from fuse4seg.v1.config import V1_PRESETS, make_v1_config, saved_v1_config
from fuse4seg.v1.cooperative import CooperativeState, make_seg_loss, make_seg_sgd, upper_level_step
from fuse4seg.v1.discriminator import (
    DiscriminatorPair,
    gan_d_loss,
    gan_g_loss,
    log_d_loss,
    log_g_loss,
)
from fuse4seg.v1.losses import fusion_text_loss
from fuse4seg.v1.networks import FusionNetV1
from fuse4seg.v1.pretrain import discriminator_loss

TINY = {"dim": 8, "heads": 2, "shared_blocks": 1, "low_blocks": 1, "high_blocks": 1,
        "decoder_blocks": 1, "attn_grid": 8}  # fmt: skip


def test_log_gan_losses_hand_values():
    zero = torch.zeros(1, 1, 2, 2)
    # sigmoid(0) = 1/2: -log(1/2) - log(1 - 1/2) = 2 log 2; generator log(1 - 1/2)
    assert log_d_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert log_g_loss(zero).item() == pytest.approx(-math.log(2))
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    p_real, p_fake = torch.sigmoid(real), torch.sigmoid(fake)
    expected_d = -(p_real.log().mean() + (1 - p_fake).log().mean())
    assert gan_d_loss(real, fake, "log").item() == pytest.approx(expected_d.item(), rel=1e-6)
    assert gan_g_loss(fake, "log").item() == pytest.approx((1 - p_fake).log().mean().item())
    # lsgan unchanged: 1/2 mean((r - 1)^2) + 1/2 mean(f^2)
    assert gan_d_loss(real, fake, "lsgan").item() == pytest.approx(
        0.5 * ((real - 1) ** 2).mean().item() + 0.5 * (fake**2).mean().item()
    )
    # finite far from 0 (softplus, no log of a rounded sigmoid)
    big = torch.tensor([80.0])
    assert torch.isfinite(gan_d_loss(-big, big, "log")) and torch.isfinite(gan_g_loss(big, "log"))
    with pytest.raises(ValueError, match="gan_loss"):
        gan_g_loss(fake, "wgan")


def test_discriminator_and_text_losses_follow_the_switches():
    torch.manual_seed(0)
    discs = DiscriminatorPair(2, width=4, depth=2)
    x = torch.rand(2, 2, 16, 16)
    fused = torch.rand(2, 1, 16, 16)
    reals = [x[:, :1], x[:, 1:]]
    with torch.no_grad():
        d_log = discriminator_loss(discs, reals, [fused, fused], "log")
        d_ls = discriminator_loss(discs, reals, [fused, fused])
        expected = sum(
            F.softplus(-d(r)).mean() + F.softplus(d(fused)).mean()
            for d, r in zip(discs, reals, strict=True)
        )
        assert d_log.item() == pytest.approx(expected.item(), rel=1e-6)
        assert d_log.item() != pytest.approx(d_ls.item(), rel=1e-3)
        total, grad, adv = fusion_text_loss(fused, x, discs, 0.1, "cddfuse", "log")
        assert grad.item() == pytest.approx(
            gradient_loss(fused, x, convention="cddfuse").item(), rel=1e-6
        )
        adv_expected = sum(-F.softplus(d(fused)).mean() for d in discs)
        assert adv.item() == pytest.approx(adv_expected.item(), rel=1e-6)
        assert total.item() == pytest.approx((grad + 0.1 * adv).item(), rel=1e-6)
        # the default is the original: unit convention, LSGAN
        _, grad_unit, adv_ls = fusion_text_loss(fused, x, discs, 0.1)
        assert grad_unit.item() == pytest.approx(gradient_loss(fused, x).item())
        assert adv_ls.item() == pytest.approx(
            sum(0.5 * ((d(fused) - 1) ** 2).mean() for d in discs).item(), rel=1e-6
        )
        # raw kernels with |gx| + |gy|: the cddfuse term is several times the unit one
        assert grad.item() > 4 * grad_unit.item()


def test_config_keys_defaults_and_legacy():
    assert make_v1_config("paper").grad_convention == "cddfuse"
    for preset in ("base", "tiny"):
        cfg = make_v1_config(preset)
        assert (cfg.grad_convention, cfg.gan_loss, cfg.cross_attention) == ("unit", "lsgan", True)
    cfg = make_v1_config("tiny", {"gan_loss": "log", "cross_attention": False})
    assert (cfg.gan_loss, cfg.cross_attention) == ("log", False)
    for key, bad in (("gan_loss", "wgan"), ("grad_convention", "sobel"), ("cross_attention", 1)):
        with pytest.raises(ConfigError, match=key):
            make_v1_config("tiny", {key: bad})
    # a paper run saved before the keys existed keeps the convention it was trained with
    old = make_v1_config("paper").to_dict()
    for key in ("grad_convention", "gan_loss", "cross_attention"):
        del old[key]
    assert saved_v1_config(old).grad_convention == "unit"
    assert saved_v1_config(make_v1_config("paper").to_dict()).grad_convention == "cddfuse"
    assert "grad_convention" in V1_PRESETS["paper"]


def test_without_cross_attention_the_modules_are_absent_and_f_is_decoded_directly():
    torch.manual_seed(0)
    full = FusionNetV1(**TINY)
    torch.manual_seed(0)
    ablated = FusionNetV1(**TINY, cross_attention=False)
    for name in ("embed_proj", "cross_attention", "attn_out"):
        assert hasattr(full, name) and not hasattr(ablated, name)
    n_full = sum(p.numel() for p in full.parameters())
    n_abl = sum(p.numel() for p in ablated.parameters())
    n_attn = sum(
        p.numel() for m in (full.embed_proj, full.cross_attention, full.attn_out)
        for p in m.parameters()
    )  # fmt: skip
    assert n_abl == n_full - n_attn
    x = torch.rand(2, 2, 20, 24)
    ablated.eval()
    with torch.no_grad():
        out = ablated(x)
        low, high = ablated.encode(x)
        expected = ablated.decoder(
            ablated.low_fuse(low[:, 0] + low[:, 1]), ablated.high_fuse(high[:, 0] + high[:, 1])
        )
    assert out.fused.shape == (2, 1, 20, 24) and out.attention is None
    assert out.attention_grid is None
    torch.testing.assert_close(out.fused, expected)
    with pytest.raises(ValueError, match="without cross-attention"):
        fuse_with_attention(ablated, x)
    # model-file round trip; configs saved before the key build the full network
    rebuilt = FusionNetV1.from_config(ablated.config.__dict__)
    assert not hasattr(rebuilt, "cross_attention")
    old = dict(full.config.__dict__)
    del old["cross_attention"]
    assert hasattr(FusionNetV1.from_config(old), "cross_attention")


def test_upper_level_step_trains_the_ablated_network_with_the_log_gan():
    torch.manual_seed(0)
    cfg = make_v1_config("tiny", {"gan_loss": "log", "cross_attention": False})
    from fuse4seg.models import create_seg_net

    net = FusionNetV1(**TINY, cross_attention=False)
    discs = DiscriminatorPair(2, width=4, depth=2)
    seg = create_seg_net("tiny", 1, num_classes=4)
    opt_f = torch.optim.Adam(net.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(discs.parameters(), lr=1e-3)
    state = CooperativeState(net, seg, discs, opt_f, make_seg_sgd(seg, cfg), opt_d,
                             make_seg_loss(cfg))  # fmt: skip
    x, y = torch.rand(2, 2, 32, 32), torch.randint(0, 4, (2, 32, 32))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    terms = upper_level_step(state, x, y, cfg)
    assert terms["adv_f"] < 0  # eq. 10: log(1 - p) < 0, summed over the two discriminators
    assert any(not torch.equal(p, before[n]) for n, p in net.named_parameters())


def test_train_cli_reaches_the_switches_through_v1_overrides(tmp_path):
    import json

    import yaml

    from fuse4seg.cli.main import main
    from fuse4seg.data.phantom import write_phantom_dataset
    from fuse4seg.data.prepare import PrepareOptions, prepare_dataset
    from fuse4seg.models.model_file import load_model_file

    write_phantom_dataset(tmp_path / "raw", cases=4, shape=(32, 32, 16), seed=3)
    prepare_dataset(
        tmp_path / "raw", tmp_path / "prep", PrepareOptions(size=32, split=(0.5, 0.25, 0.25))
    )
    yml = tmp_path / "ablation.yaml"
    yml.write_text("v1_overrides: {cross_attention: false, gan_loss: log}\nsteps_per_epoch: 2\n")
    run = tmp_path / "run"
    rc = main(["train", "-d", str(tmp_path / "prep"), "-o", str(run), "--method", "fuse4seg-v1",
               "--preset", "tiny", "--config", str(yml), "--max-steps", "3", "--device", "cpu",
               "--no-progress"])  # fmt: skip
    assert rc == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["cross_attention"], saved["gan_loss"], saved["grad_convention"]) == (
        False,
        "log",
        "unit",
    )
    model = load_model_file(run / "model.pt")
    assert not hasattr(model.fusion_net, "cross_attention")
    fused, logits = model(torch.rand(1, 2, 32, 32))
    assert fused.shape == (1, 1, 32, 32) and logits.shape == (1, 4, 32, 32)
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(
        math.isfinite(v) for r in lines for v in r.values() if isinstance(v, float)
    )


def test_without_reconstruction_decoder_segmentation_reads_the_fused_embedding(tmp_path):
    from fuse4seg.models import create_seg_net
    from fuse4seg.models.model_file import FusionSegModel, load_model_file, save_model_file

    torch.manual_seed(0)
    full = FusionNetV1(**TINY)
    torch.manual_seed(0)
    net = FusionNetV1(**TINY, recon_decoder=False).eval()
    assert (full.seg_channels, net.seg_channels) == (1, 16)  # 2C, C = dim 8
    x = torch.rand(2, 2, 20, 24)
    with torch.no_grad():
        assert full(x).seg_input is None
        out = net(x)
        low, high = net.encode(x)  # (B, 2, C, 10, 12): downsample 2
        phi = [net.embed_proj(torch.cat([low[:, m], high[:, m]], 1)) for m in (0, 1)]
        a_low, a_high = net.attn_out(net.cross_attention(*phi).fused).chunk(2, 1)
        low_f = net.low_fuse(low[:, 0] + low[:, 1]) + a_low
        high_f = net.high_fuse(high[:, 0] + high[:, 1]) + a_high
        emb = F.interpolate(torch.cat([low_f, high_f], 1), size=(20, 24), mode="bilinear")
    assert out.fused.shape == (2, 1, 20, 24) and out.seg_input.shape == (2, 16, 20, 24)
    torch.testing.assert_close(out.seg_input, emb)
    torch.testing.assert_close(out.fused, net.decoder(low_f, high_f))  # still decoded (eq. 13)
    # the segmentation loss reaches the encoder but not the decoder
    seg = create_seg_net("tiny", net.seg_channels, num_classes=4)
    seg(net(x).seg_input).logsumexp(1).mean().backward()
    assert all(p.grad is None for p in net.decoder.parameters())
    assert any(p.grad is not None for p in net.encoder.parameters())
    # model file: the segmentation network is fed the embedding after a round trip
    model = FusionSegModel("fuse4seg-v1", ["t1ce", "flair"], seg.eval(), fusion_net=net)
    save_model_file(model, tmp_path / "model.pt")
    loaded = load_model_file(tmp_path / "model.pt")
    with torch.no_grad():
        fused, logits = loaded(x)
        torch.testing.assert_close(logits, seg(net(x).seg_input))
    assert fused.shape == (2, 1, 20, 24)
    assert torch.load(tmp_path / "model.pt", weights_only=True)["segmentation"]["in_channels"] == 16


def test_cooperative_batch_without_reconstruction_decoder():
    from fuse4seg.v1.cooperative import cooperative_batch
    from fuse4seg.v1.runner import build_v1_networks

    torch.manual_seed(0)
    cfg = make_v1_config("tiny", {"recon_decoder": False})
    with pytest.raises(ConfigError, match="recon_decoder"):
        make_v1_config("tiny", {"recon_decoder": "no"})
    fusion, discs, seg = build_v1_networks(cfg)
    assert fusion.seg_channels == 2 * cfg.dim
    state = CooperativeState(
        fusion, seg, discs, torch.optim.Adam(fusion.parameters(), lr=1e-3),
        make_seg_sgd(seg, cfg), torch.optim.Adam(discs.parameters(), lr=1e-3), make_seg_loss(cfg),
    )  # fmt: skip
    x, y = torch.rand(2, 2, 32, 32), torch.randint(0, 4, (2, 32, 32))
    terms = cooperative_batch(state, x, y, cfg)
    assert all(math.isfinite(v) for v in terms.values())
    assert {"seg", "upper_seg", "grad", "adv_f", "adv_d"} <= set(terms)
