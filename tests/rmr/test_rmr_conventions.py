"""RMR-Fusion: gradient / TV conventions of the losses and the "w/o L_VF" switch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fuse4seg.data.volume_store import phantom_store
from fuse4seg.errors import ConfigError
from fuse4seg.losses import gradient_magnitude, soft_dice_loss
from fuse4seg.rmr.networks import create_rmr_net
from fuse4seg.rmr.train import (
    CHECKPOINT_NAME,
    load_train_config,
    stage1_loss,
    stage2_loss,
    train_rmr_on_store,
)

PATCH = (8, 16, 16)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return create_rmr_net("tiny", 2, seg_head="unet", patch_size=PATCH).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(1, 2, *PATCH, generator=g)
    labels = torch.randint(0, 4, (1, *PATCH), generator=g)
    return images, labels


@pytest.mark.parametrize(
    ("preset", "grad", "tv"),
    [("tiny", "unit", "abs"), ("base", "unit", "abs"), ("paper", "cddfuse", "squared")],
)
def test_convention_defaults_follow_the_preset(preset, grad, tv):
    cfg = load_train_config({"preset": preset})
    assert (cfg.grad_convention, cfg.tv_convention, cfg.use_vf) == (grad, tv, True)
    assert cfg.to_dict()["grad_convention"] == grad  # recorded resolved, not None
    explicit = load_train_config(
        {"preset": preset, "grad_convention": "unit", "tv_convention": "abs"}
    )
    assert (explicit.grad_convention, explicit.tv_convention) == ("unit", "abs")


def test_bad_conventions_are_rejected():
    with pytest.raises(ConfigError, match="grad_convention"):
        load_train_config({"grad_convention": "sobel"})
    with pytest.raises(ConfigError, match="tv_convention"):
        load_train_config({"tv_convention": "l2"})
    with pytest.raises(ConfigError, match="use_vf"):
        load_train_config({"use_vf": "no"})


def _tv(x: torch.Tensor, power: int) -> torch.Tensor:
    return sum(x.diff(dim=a).abs().pow(power).mean() for a in (2, 3, 4))


def test_stage1_tv_convention_is_the_one_used(net, batch):
    images, _ = batch
    degraded = (images + 0.05).clamp(0, 1)
    with torch.no_grad():
        losses = {}
        for tv in ("abs", "squared"):
            cfg = load_train_config({"preset": "tiny", "tv_convention": tv, "ssim_weight": 0.0})
            losses[tv], _ = stage1_loss(net, images, degraded, cfg)
        # by hand: L_IR + alpha L_FR with Q = 40 MSE + 20 TV(residual), power 1 or 2
        feats, feats_d = net.encode(images), net.encode(degraded)
        for tv, power in (("abs", 1), ("squared", 2)):
            l_ir = l_fr = 0.0
            for i in range(2):
                target = images[:, i : i + 1]
                for rec in (net.decoder(feats[i]), net.decoder(feats_d[i])):
                    l_ir = l_ir + 40 * F.mse_loss(rec, target) + 20 * _tv(rec - target, power)
                r = feats_d[i] - feats[i]
                l_fr = l_fr + 40 * F.mse_loss(feats_d[i], feats[i]) + 20 * _tv(r, power)
            expected = l_ir / 2 + l_fr / 2
            assert losses[tv].item() == pytest.approx(expected.item(), rel=1e-5)
    assert losses["abs"].item() != pytest.approx(losses["squared"].item(), rel=1e-3)


@pytest.mark.parametrize("grad", ["unit", "cddfuse"])
def test_stage2_gradient_convention_by_hand(net, batch, grad):
    images, labels = batch
    cfg = load_train_config({"preset": "tiny", "grad_convention": grad})
    with torch.no_grad():
        loss, parts = stage2_loss(net, images, labels, 1, cfg)
        fused_feats = net.fusion(net.encode(images))
        fused = net.decoder(fused_feats)
        target = gradient_magnitude(images, grad).amax(dim=1, keepdim=True)
        l_vf = F.l1_loss(fused, images[:, 1:2]) + 0.08 * F.l1_loss(
            gradient_magnitude(fused, grad), target
        )
        probs = torch.softmax(net.seg_head(fused_feats), dim=1)
        l_ls = soft_dice_loss(probs, labels, include_background=True)
    assert parts["L_VF"] == pytest.approx(l_vf.item(), rel=1e-5)
    assert loss.item() == pytest.approx((l_vf + 0.1 * l_ls).item(), rel=1e-5)


def test_without_l_vf_stage2_is_the_segmentation_term_only(net, batch):
    images, labels = batch
    full = load_train_config({"preset": "tiny"})
    ablated = load_train_config({"preset": "tiny", "use_vf": False})
    with torch.no_grad():
        loss_full, parts_full = stage2_loss(net, images, labels, 1, full)
        loss_abl, parts_abl = stage2_loss(net, images, labels, 1, ablated)
    assert "L_VF" in parts_full and "L_VF" not in parts_abl
    assert parts_abl["L_LS"] == pytest.approx(parts_full["L_LS"])
    assert loss_abl.item() == pytest.approx(0.1 * parts_abl["L_LS"], rel=1e-6)
    assert loss_full.item() == pytest.approx(parts_full["L_VF"] + 0.1 * parts_full["L_LS"])
    # the fusion module's gradient comes from L_LS alone: the decoder gets none
    net.zero_grad(set_to_none=True)
    loss, _ = stage2_loss(net, images, labels, 1, ablated)
    loss.backward()
    assert all(p.grad is None for p in net.decoder.parameters())
    assert any(p.grad is not None for p in net.fusion.parameters())
    net.zero_grad(set_to_none=True)


def test_resume_keeps_the_conventions_of_the_run(tmp_path):
    store = phantom_store(1, (32, 32, 16), seed=0, modalities=("t1", "flair"))
    cfg = {"preset": "tiny", "seg_head": "unet", "patch_size": PATCH, "batch_size": 1,
           "stage1_steps": 1, "stage2_steps": 1, "log_every": 1}  # fmt: skip
    train_rmr_on_store(store, tmp_path, cfg, device="cpu", log=None)
    ck_path = tmp_path / CHECKPOINT_NAME
    ck = torch.load(ck_path, weights_only=True)
    assert ck["train_config"]["grad_convention"] == "unit"
    with pytest.raises(ConfigError, match="grad_convention 'unit'"):
        train_rmr_on_store(
            store, tmp_path, {**cfg, "grad_convention": "cddfuse"}, resume=True, log=None
        )
    # a checkpoint from before the conventions were named resumes as unit / abs
    for key in ("grad_convention", "tv_convention", "use_vf"):
        del ck["train_config"][key]
    torch.save(ck, ck_path)
    with pytest.raises(ConfigError, match="tv_convention 'abs'"):
        train_rmr_on_store(
            store, tmp_path, {**cfg, "tv_convention": "squared"}, resume=True, log=None
        )
    out = train_rmr_on_store(store, tmp_path, cfg, device="cpu", resume=True, log=None)
    assert out.is_file()
