from __future__ import annotations

import dataclasses

import pytest
import torch

from fuse4seg.errors import ConfigError
from fuse4seg.losses import DiceCELoss
from fuse4seg.models import (
    FusionNet,
    count_parameters,
    create_fusion_net,
    create_seg_net,
)


@pytest.fixture(scope="module")
def tiny_nets():
    torch.manual_seed(0)
    return {m: create_fusion_net("tiny", m).eval() for m in (1, 2, 3, 4)}


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("size", [(64, 64), (97, 83), (240, 240)])
def test_fusion_shapes(tiny_nets, m, size):
    net = tiny_nets[m]
    x = torch.rand(1, m, *size)
    with torch.no_grad():
        out = net(x)
    assert out.fused.shape == (1, 1, *size)
    c = net.config.dim
    f = 2**net.config.squeeze_levels
    h, w = -(-size[0] // f), -(-size[1] // f)
    assert out.low.shape == (1, m, c, h, w)
    assert out.high.shape == (1, m, c, h, w)
    assert torch.isfinite(out.fused).all()
    assert out.fused.min() >= 0 and out.fused.max() <= 1
    if net.config.output_norm == "minmax":  # normalised per image: the range is used
        assert out.fused.min().item() == pytest.approx(0.0, abs=1e-6)
        assert out.fused.max().item() == pytest.approx(1.0, abs=1e-3)
    else:  # clipped: the untrained leader keeps the sources' intensity scale (~ x_avg)
        assert (out.fused - x.mean(dim=1, keepdim=True)).abs().max() < 0.05


def test_fusion_single_modality_and_base_shapes(tiny_nets):
    with torch.no_grad():
        assert tiny_nets[1](torch.rand(2, 1, 31, 17)).fused.shape == (2, 1, 31, 17)
        base = create_fusion_net("base", 3, inn_haar=True, squeeze_levels=1).eval()
        out = base(torch.rand(1, 3, 97, 83))
        # the base preset itself squeezes twice (features at 1/4 resolution)
        out2 = create_fusion_net("base", 3, inn_haar=True).eval()(torch.rand(1, 3, 97, 83))
    assert out.fused.shape == (1, 1, 97, 83)
    assert out.low.shape == (1, 3, 32, 50, 42)  # padded to 100 x 84 (multiple of 4), squeezed once
    assert out2.fused.shape == (1, 1, 97, 83)
    # padded to 104 x 88 (multiple of 8), squeezed twice
    assert out2.low.shape == (1, 3, 32, 26, 22)


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_fused_is_finite_in_range_for_constant_inputs(tiny_nets, value):
    x = torch.full((2, 2, 40, 36), value, requires_grad=True)
    out = tiny_nets[2](x)
    assert torch.isfinite(out.fused).all()
    assert out.fused.min() >= 0 and out.fused.max() <= 1
    out.fused.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_high_frequency_branches_are_invertible(tiny_nets):
    net = tiny_nets[3]
    feats = torch.randn(2, net.config.dim, 12, 10)
    with torch.no_grad():
        for branch in (net.high_branch, net.fuse_high):
            assert (branch.inverse(branch(feats)) - feats).abs().max() < 1e-4


def test_segmentation_gradients_reach_every_fusion_parameter():
    torch.manual_seed(1)
    fusion = create_fusion_net("tiny", 2)
    with torch.no_grad():  # a transfer function that has left its zero start
        fusion.transfer.net[-1].weight.normal_(0.0, 0.1)
    seg = create_seg_net("tiny", in_channels=1)
    x = torch.rand(2, 2, 48, 40)
    target = torch.randint(0, 4, (2, 48, 40))
    loss = DiceCELoss()(seg(fusion(x).fused), target)
    loss.backward()
    # the source decoder serves only the information anchor L_info, not L_seg
    params = [(n, p) for n, p in fusion.named_parameters() if not n.startswith("source_decoder")]
    assert all(p.grad is None for n, p in fusion.named_parameters() if n.startswith("source_"))
    missing = [n for n, p in params if p.grad is None]
    assert not missing
    zero = [n for n, p in params if p.grad.abs().sum() == 0]
    assert not zero, zero
    assert all(torch.isfinite(p.grad).all() for _, p in params)


def test_config_round_trip_and_overrides(tiny_nets):
    net = tiny_nets[3]
    cfg = dataclasses.asdict(net.config)
    assert cfg["num_modalities"] == 3 and cfg["dim"] == 16
    clone = FusionNet.from_config(cfg)
    clone.load_state_dict(net.state_dict())
    clone.eval()
    x = torch.rand(1, 3, 33, 29)
    with torch.no_grad():
        torch.testing.assert_close(clone(x).fused, net(x).fused)
    assert FusionNet.from_config(net.config).config == net.config
    assert create_fusion_net("tiny", 2, dim=24, heads=4).config.dim == 24


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown preset"):
        create_fusion_net("huge", 2)
    with pytest.raises(ConfigError, match="widht"):
        create_fusion_net("tiny", 2, widht=3)
    with pytest.raises(ConfigError, match="divisible"):
        create_fusion_net("tiny", 2, dim=18, heads=4)
    with pytest.raises(ConfigError, match="num_modalities"):
        create_fusion_net("tiny", 0)
    with pytest.raises(ConfigError, match="num_modalities"):
        FusionNet.from_config({"dim": 16})
    with pytest.raises(ValueError, match="expects"):
        create_fusion_net("tiny", 2)(torch.rand(1, 3, 16, 16))


def test_paper_preset_size_and_small_input():
    net = create_fusion_net("paper", 2)
    cfg = net.config
    assert (cfg.dim, cfg.heads, cfg.encoder_blocks, cfg.decoder_blocks) == (64, 8, 4, 4)
    assert cfg.squeeze_levels == 0 and cfg.high_nodes == 3
    # the spec's leader: Haar squeeze inside the INN nodes, anchor-free decoder
    assert cfg.inn_haar and not cfg.mean_skip and cfg.output_mode == "image"
    assert 0.5e6 < count_parameters(net) < 1.5e6
    with torch.no_grad():
        out = net.eval()(torch.rand(1, 2, 17, 15))
    # features at the padded size (a multiple of 2 for the Haar squeeze)
    assert out.fused.shape == (1, 1, 17, 15) and out.low.shape == (1, 2, 64, 18, 16)
    # the high-frequency branch stays exactly invertible with the squeeze
    z = torch.randn(2, 64, 8, 6)
    with torch.no_grad():
        back = net.high_branch.inverse(net.high_branch(z))
    assert torch.allclose(back, z, atol=1e-4)


def test_paper_leader_has_no_residual_on_the_modality_mean():
    torch.manual_seed(0)
    net = create_fusion_net("paper", 2, dim=16, heads=2).eval()
    x = torch.rand(1, 2, 16, 16)
    xp = x.clone()
    with torch.no_grad():
        low, high = net.encode(x)
        a = net.decode(low, high, x)
        b = net.decode(low, high, xp + 0.5)  # same features, another x: same output
    assert torch.equal(a, b)


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_untrained_leader_starts_near_the_normalised_modality_mean(preset):
    torch.manual_seed(0)
    net = create_fusion_net(preset, 2).eval()
    x = torch.rand(2, 2, 40, 36)
    with torch.no_grad():
        fused = net(x).fused
    mean = x.mean(dim=1, keepdim=True)
    lo = mean.amin(dim=(-2, -1), keepdim=True)
    hi = mean.amax(dim=(-2, -1), keepdim=True)
    expected = (mean - lo) / (hi - lo)
    assert (fused - expected).abs().max() < 0.05
    no_skip = create_fusion_net(preset, 2, mean_skip=False, head_init_scale=1.0).eval()
    with torch.no_grad():
        assert (no_skip(x).fused - expected).abs().max() > 0.05


def test_weights_mode_with_a_zero_head_is_exactly_the_normalised_mean():
    net = create_fusion_net(
        "tiny", 3, output_mode="weights", head_init_scale=0.0, output_norm="minmax"
    ).eval()
    x = torch.rand(2, 3, 33, 29)
    with torch.no_grad():
        fused = net(x).fused
        weights = net.weight_maps(x)
    assert weights.shape == (2, 3, 33, 29)
    assert torch.allclose(weights, torch.full_like(weights, 1 / 3))
    mean = x.mean(dim=1, keepdim=True)
    lo = mean.amin(dim=(-2, -1), keepdim=True)
    hi = mean.amax(dim=(-2, -1), keepdim=True)
    assert torch.allclose(fused, (mean - lo) / (hi - lo + net.config.eps), atol=1e-5)


def test_weights_mode_output_is_linear_in_the_sources_given_the_weights():
    """y = sum_m W_m x_m + b: scaling one pixel of one source moves y by W_m at that pixel."""
    torch.manual_seed(1)
    net = create_fusion_net("tiny", 2, output_mode="weights", head_init_scale=1.0).eval()
    x = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        weights = net.weight_maps(x)
        y = net.decode(*net.encode(x), x)
        # same features (encode(x)), source pixel changed only in the mixing step
        x2 = x.clone()
        x2[0, 1, 5, 7] += 0.25
        y2 = net.decode(*net.encode(x), x2)
    diff = y2 - y
    assert diff[0, 0, 5, 7].item() == pytest.approx(0.25 * weights[0, 1, 5, 7].item(), abs=1e-6)
    diff[0, 0, 5, 7] = 0
    assert diff.abs().max() < 1e-6
    with pytest.raises(ValueError, match="output_mode"):
        create_fusion_net("tiny", 2, output_mode="image", transfer_hidden=0).weight_maps(x)
    with pytest.raises(ConfigError, match="output_mode"):
        create_fusion_net("tiny", 2, output_mode="pixels")


def test_transfer_function_is_zero_at_init_and_at_the_zero_vector():
    from fuse4seg.models.layers import TransferFunction

    t = TransferFunction(2, hidden=8)
    x = torch.rand(3, 2, 7, 5)
    assert torch.equal(t(x), torch.zeros(3, 1, 7, 5))  # last layer starts at zero
    torch.nn.init.normal_(t.net[-1].weight)
    assert t(torch.zeros(1, 2, 4, 4)).abs().max() < 1e-6  # background stays background
    assert t(x).abs().max() > 1e-3
    # per-pixel: moving one pixel changes only that pixel
    x2 = x.clone()
    x2[1, 0, 3, 2] += 0.5
    diff = (t(x2) - t(x)).abs()
    assert diff[1, 0, 3, 2] > 0
    diff[1, 0, 3, 2] = 0
    assert diff.max() < 1e-6
    assert t.lookup(9).shape == (9, 9)
    assert torch.allclose(t.lookup(9)[4, 8], t(torch.tensor([0.5, 1.0]).view(1, 2, 1, 1))[0, 0, 0])
    assert TransferFunction(1).lookup(5).shape == (5,)
    with pytest.raises(ValueError, match="M <= 2"):
        TransferFunction(3).lookup()
    with pytest.raises(ValueError, match="hidden"):
        TransferFunction(2, hidden=0)


def test_leader_with_transfer_starts_at_the_mean_and_learns_a_non_linear_mapping():
    torch.manual_seed(0)
    net = create_fusion_net("tiny", 2, transfer_hidden=8, output_norm="clamp", head_init_scale=0.0)
    x = torch.rand(2, 2, 32, 32) * 0.9
    with torch.no_grad():
        fused = net(x).fused
    # untrained: exactly the clipped modality mean (no per-image rescaling with "clamp")
    assert torch.allclose(fused, x.mean(dim=1, keepdim=True), atol=1e-6)
    # the transfer function gets gradients from a loss on the fused image
    loss = (net(x).fused - x[:, :1] ** 2).pow(2).mean()
    loss.backward()
    assert net.transfer.net[-1].weight.grad.abs().sum() > 0
    round_trip = FusionNet.from_config(dataclasses.asdict(net.config))
    assert round_trip.transfer is not None and round_trip.config.output_norm == "clamp"
    assert FusionNet(2, preset=None).transfer is None  # off unless a preset asks for it
    with pytest.raises(ConfigError, match="output_mode"):
        create_fusion_net("tiny", 2, output_mode="image", transfer_hidden=4)
    with pytest.raises(ConfigError, match="output_norm"):
        create_fusion_net("tiny", 2, output_norm="sigmoid")
    with pytest.raises(ConfigError, match="transfer_hidden"):
        create_fusion_net("tiny", 2, transfer_hidden=-1)


def test_clamp_output_keeps_intensities_across_images():
    """minmax rescales every image to [0, 1]; clamp keeps a tissue's value from image to image."""
    net_mm = create_fusion_net("tiny", 2, head_init_scale=0.0, output_norm="minmax").eval()
    net_cl = create_fusion_net("tiny", 2, head_init_scale=0.0, output_norm="clamp").eval()
    x = torch.full((2, 2, 16, 16), 0.3)
    x[0, :, :4, :4] = 0.9  # a bright spot in image 0 only
    x[:, :, -4:, -4:] = 0.0  # background
    with torch.no_grad():
        mm, cl = net_mm(x).fused, net_cl(x).fused
    assert cl[0, 0, 8, 8] == pytest.approx(cl[1, 0, 8, 8]) == pytest.approx(0.3)
    assert mm[0, 0, 8, 8] < mm[1, 0, 8, 8] - 0.3  # same tissue, different value


def test_source_decoder_maps_the_fused_value_to_every_source():
    net = create_fusion_net("tiny", 3, source_decoder_hidden=8)
    fused = torch.rand(2, 1, 9, 7)
    assert net.decode_sources(fused).shape == (2, 3, 9, 7)
    # per pixel: one fused pixel changes one decoded pixel
    f2 = fused.clone()
    f2[1, 0, 4, 4] += 0.3
    diff = (net.decode_sources(f2) - net.decode_sources(fused)).abs().sum(dim=1)
    diff[1, 4, 4] = 0
    assert diff.max() < 1e-6
    with pytest.raises(ValueError, match="source_decoder_hidden"):
        create_fusion_net("tiny", 3, source_decoder_hidden=0).decode_sources(fused)
    with pytest.raises(ConfigError, match="source_decoder_hidden"):
        create_fusion_net("tiny", 3, source_decoder_hidden=-2)


def test_clamped_output_gradient_only_leads_back_into_the_range():
    """Clipped pixels get the gradient that moves them back (no dead leader), never the part
    that pushes them further out (no unbounded drift)."""
    net = create_fusion_net("tiny", 2, output_norm="clamp")
    y = torch.tensor([-0.5, -0.5, 0.5, 1.5, 1.5]).view(1, 1, 1, 5).requires_grad_(True)
    out = net.normalise(y)
    assert torch.equal(out.detach().flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    upstream = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0]).view(1, 1, 1, 5)
    out.backward(upstream)
    # descent moves y by -grad: -0.5 may only rise (grad < 0), 1.5 may only fall (grad > 0)
    assert torch.equal(y.grad.flatten(), torch.tensor([0.0, -1.0, 1.0, 1.0, 0.0]))


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_reconstruct_sources_decodes_each_source_alone(preset):
    torch.manual_seed(0)
    net = create_fusion_net(preset, 2, **({"dim": 16, "heads": 2} if preset == "paper" else {}))
    x = torch.rand(2, 2, 20, 18)
    recon, low, high = net.eval().reconstruct_sources(x)
    assert recon.shape == (2, 2, 20, 18) and low.shape[:2] == high.shape[:2] == (2, 2)
    assert recon.min() >= 0 and recon.max() <= 1
    if preset == "tiny":  # weights mode: an untrained blend of copies of source m is source m
        assert (recon - x).abs().max() < 0.05
    # source 0's reconstruction does not depend on source 1
    x2 = x.clone()
    x2[:, 1] = torch.rand(2, 20, 18)
    assert torch.allclose(net.reconstruct_sources(x2)[0][:, 0], recon[:, 0], atol=1e-6)
