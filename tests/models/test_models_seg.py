from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn

from fuse4seg.errors import ConfigError
from fuse4seg.losses import DiceCELoss
from fuse4seg.models import (
    SegNet,
    count_flops,
    create_fusion_net,
    create_seg_net,
    model_summary,
)


@pytest.fixture(scope="module")
def tiny_seg():
    torch.manual_seed(0)
    return {c: create_seg_net("tiny", in_channels=c).eval() for c in (1, 4)}


@pytest.mark.parametrize("in_ch", [1, 4])
@pytest.mark.parametrize("size", [(64, 64), (97, 83), (240, 240), (5, 7)])
def test_seg_shapes(tiny_seg, in_ch, size):
    with torch.no_grad():
        logits = tiny_seg[in_ch](torch.rand(1, in_ch, *size))
    assert logits.shape == (1, 4, *size)
    assert torch.isfinite(logits).all()


def test_seg_base_shape_and_classes():
    net = create_seg_net("base", in_channels=2, num_classes=3).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 2, 97, 83)).shape == (1, 3, 97, 83)


def test_seg_structure():
    net = create_seg_net("tiny", 1)
    blocks = [m for m in net.modules() if m.__class__.__name__ == "ConvNeXtBlock"]
    assert blocks and all(b.dwconv.kernel_size == (7, 7) for b in blocks)
    assert all(b.pwconv1.out_channels == 4 * b.pwconv1.in_channels for b in blocks)
    assert len(net.bottleneck) == net.config.bottleneck_blocks >= 1
    assert len(net.up) == len(net.config.widths) - 1


def test_seg_round_trip_and_errors(tiny_seg):
    net = tiny_seg[4]
    clone = SegNet.from_config(dataclasses.asdict(net.config))
    clone.load_state_dict(net.state_dict())
    x = torch.rand(1, 4, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x), net(x))
    with pytest.raises(ConfigError, match="unknown preset"):
        create_seg_net("xl", 1)
    with pytest.raises(ConfigError, match="depth"):
        create_seg_net("tiny", 1, depth=3)
    with pytest.raises(ConfigError, match="same length"):
        create_seg_net("tiny", 1, widths=(8, 16))
    with pytest.raises(ValueError, match="expects"):
        net(torch.rand(1, 1, 16, 16))


def test_summary_counts_hand_computed_flops():
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    # 2 outputs x 9 MACs per pixel x 64 pixels x 2 FLOPs per MAC
    assert count_flops(conv, (1, 1, 8, 8)) == 2 * 9 * 64 * 2
    line = model_summary(conv, (1, 1, 8, 8))
    assert line == "Conv2d: 18 parameters, 0.0 MFLOPs per (1, 1, 8, 8) input (1 MAC = 2 FLOPs)"
    fusion_line = model_summary(create_fusion_net("tiny", 2), (1, 2, 64, 64))
    assert fusion_line.startswith("FusionNet: ") and "MFLOPs" in fusion_line


def test_flops_include_attention():
    from fuse4seg.models.layers import SpatialSelfAttention

    attn = SpatialSelfAttention(8, 2, kv_size=2)
    # q, kv, proj 1x1 convs on 16 pixels: (8*8 + 8*16 + 8*8) MACs per pixel; kv on 4 pooled
    # pixels; attention: 2 heads x 16 queries x 4 keys x 4 dims x 2 (QK^T and AV)
    convs = (8 * 8 + 8 * 8) * 16 + 8 * 16 * 4
    attention = 2 * 16 * 4 * 4 * 2
    assert count_flops(attn, (1, 8, 4, 4)) == 2 * (convs + attention)


@pytest.mark.parametrize("stride", [2, 4])
@pytest.mark.parametrize("size", [(97, 83), (240, 240), (5, 7), (1, 1)])
def test_seg_stem_stride_shapes(stride, size):
    torch.manual_seed(0)
    net = create_seg_net("tiny", in_channels=2, num_classes=3, stem_stride=stride).eval()
    assert net.pad_factor == stride * 2 ** (len(net.config.widths) - 1)
    with torch.no_grad():
        logits = net(torch.rand(2, 2, *size))
    assert logits.shape == (2, 3, *size)
    assert torch.isfinite(logits).all()


def test_seg_base_uses_stride_2_stem_and_full_resolution_head():
    net = create_seg_net("base", in_channels=1).eval()
    assert net.config.stem_stride == 2 and net.full_stem is not None
    assert net.stem.stride == (2, 2)
    x = torch.rand(1, 1, 97, 83)
    with torch.no_grad():
        assert net(x).shape == (1, 4, 97, 83)
    # the full-resolution path sees single pixels: changing one pixel changes its own logits
    x2 = x.clone()
    x2[0, 0, 40, 41] += 1.0
    with torch.no_grad():
        diff = (net(x2) - net(x)).abs().sum(dim=1)[0]
    assert diff[40, 41] > 0


def test_seg_stem_stride_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = create_seg_net("tiny", in_channels=1, stem_stride=2)
    x = torch.rand(2, 1, 37, 45)
    loss = DiceCELoss()(net(x), torch.randint(0, 4, (2, 37, 45)))
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_seg_stem_stride_round_trip_and_validation():
    torch.manual_seed(0)
    net = create_seg_net("tiny", in_channels=1, stem_stride=2, full_res_channels=8).eval()
    cfg = dataclasses.asdict(net.config)
    assert cfg["stem_stride"] == 2 and cfg["full_res_channels"] == 8
    clone = SegNet.from_config(cfg)
    assert clone.config == net.config
    clone.load_state_dict(net.state_dict())
    x = torch.rand(1, 1, 33, 29)
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x), net(x))
    assert create_seg_net("tiny", 1).config.stem_stride == 1  # tiny / paper unchanged
    assert create_seg_net("paper", 1).config.stem_stride == 1
    for bad in (0, 3, 8, -2, 2.0, True, "2"):
        with pytest.raises(ConfigError, match="stem_stride"):
            create_seg_net("tiny", 1, stem_stride=bad)
    for bad in (0, -1, 1.5):
        with pytest.raises(ConfigError, match="full_res_channels"):
            create_seg_net("tiny", 1, full_res_channels=bad)


def test_cpu_inference_chunking_matches_whole_batch():
    from fuse4seg.models._padding import CPU_INFERENCE_CHUNK

    torch.manual_seed(0)
    seg = create_seg_net("tiny", in_channels=1, stem_stride=2).eval()
    fusion = create_fusion_net("tiny", 2).eval()
    n = 2 * CPU_INFERENCE_CHUNK + 1
    xs, xf = torch.rand(n, 1, 40, 36), torch.rand(n, 2, 40, 36)
    with torch.no_grad():
        whole = seg(xs)
        parts = torch.cat([seg(xs[i : i + 1]) for i in range(n)])
        fused = fusion(xf)
        fused_parts = [fusion(xf[i : i + 1]) for i in range(n)]
    torch.testing.assert_close(whole, parts)
    for k, field in enumerate(fused):
        torch.testing.assert_close(field, torch.cat([p[k] for p in fused_parts]))


def test_seg_norm_option_and_old_configs_load_as_layer_norm():
    from fuse4seg.models.layers import InstanceNorm2d, LayerNorm2d

    tiny = create_seg_net("tiny", 1)
    assert tiny.config.norm == "instance"
    assert create_seg_net("base", 1).config.norm == "layer"
    norms = [m for m in tiny.modules() if isinstance(m, (InstanceNorm2d, LayerNorm2d))]
    # ConvNeXt blocks, downsampling and head use the config's norm; the Transformer keeps LN
    assert sum(isinstance(m, InstanceNorm2d) for m in norms) == 4 + 3 + 3 + 1
    assert all(isinstance(m, LayerNorm2d) for b in tiny.bottleneck for m in (b.norm1, b.norm2))
    # a config saved before the `norm` field existed rebuilds the LayerNorm network it was
    cfg = dataclasses.asdict(create_seg_net("tiny", 1, norm="layer").config)
    del cfg["norm"]
    old = SegNet.from_config(cfg)
    assert old.config.norm == "layer"
    assert not any(isinstance(m, InstanceNorm2d) for m in old.modules())
    with pytest.raises(ConfigError, match="norm"):
        create_seg_net("tiny", 1, norm="batch")
    # instance norm is per sample: a slice's logits do not depend on the rest of the batch
    torch.manual_seed(0)
    net = create_seg_net("tiny", 2).eval()
    x = torch.rand(3, 2, 40, 36)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[1:2], net(x[1:2]))
