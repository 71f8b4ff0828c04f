"""Algorithm 1 steps change exactly the parameters they should."""

from __future__ import annotations

import pytest
import torch

from fuse4seg.errors import ConfigError
from fuse4seg.losses import DiceCELoss
from fuse4seg.models import create_fusion_net, create_seg_net
from fuse4seg.train import bilevel
from fuse4seg.train.bilevel import LossWeights, TrainState
from fuse4seg.train.ema import EMA
from fuse4seg.train.methods import METHODS, check_method_options, get_method


def _state(
    in_channels: int = 1,
    leader: bool = True,
    inner_steps: int = 2,
    fusion: dict | None = None,
    weights: LossWeights | None = None,
    lr_leader: float = 1e-2,
    ema: bool = True,
) -> TrainState:
    torch.manual_seed(0)
    fus = create_fusion_net("tiny", 2, **(fusion or {})) if leader else None
    seg = create_seg_net("tiny", in_channels)
    return TrainState(
        follower=seg,
        opt_follower=torch.optim.AdamW(seg.parameters(), lr=1e-2),
        seg_criterion=DiceCELoss(4),
        leader=fus,
        opt_leader=torch.optim.AdamW(fus.parameters(), lr=lr_leader) if fus else None,
        ema=EMA(fus, 0.9) if fus and ema else None,
        weights=weights or LossWeights(1.0, 5.0, 0.05),
        inner_steps=inner_steps,
    )


def _batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 2, 16, 16, generator=g)
    y = torch.randint(0, 4, (4, 16, 16), generator=g)
    return x, y, ["p1", "p1", "p2", "p2"]


def _snap(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return [k for k, v in module.state_dict().items() if not torch.equal(before[k], v)]


def test_inner_follower_steps_do_not_touch_the_leader():
    s = _state()
    x, y, _ = _batch()
    lead, foll = _snap(s.leader), _snap(s.follower)
    fused = bilevel.frozen_fusion(s.leader, x)
    assert not fused.requires_grad and fused.shape == (4, 1, 16, 16)
    for _ in range(2):
        bilevel.follower_step(s, fused, y)
    assert _changed(lead, s.leader) == []
    assert _changed(foll, s.follower)
    assert all(p.grad is None for p in s.leader.parameters())
    assert (s.step, s.follower_steps, s.leader_steps) == (2, 2, 0)


def test_leader_step_does_not_touch_the_follower():
    s = _state()
    x, y, _ = _batch()
    lead, foll = _snap(s.leader), _snap(s.follower)
    ema_before = _snap(s.ema.module)
    terms = bilevel.leader_step(s, x, y)
    assert _changed(foll, s.follower) == []  # parameters and buffers
    assert all(p.requires_grad for p in s.follower.parameters())  # unfrozen afterwards
    assert s.follower.training
    assert _changed(lead, s.leader)
    assert set(terms) == {"seg", "decomp", "grad", "recon", "upper"}
    up = terms["seg"] + 1.0 * terms["decomp"] + 5.0 * terms["grad"] + 0.05 * terms["recon"]
    assert terms["upper"] == pytest.approx(up, rel=1e-5)
    # EMA moved by (1 - m) towards the new leader weights
    name = next(k for k, v in s.leader.named_parameters())
    new = s.leader.state_dict()[name]
    expect = 0.9 * ema_before[name] + 0.1 * new
    assert torch.allclose(s.ema.module.state_dict()[name], expect, atol=1e-6)


def test_bilevel_cycle_splits_by_patient_and_counts_steps():
    s = _state(inner_steps=3)
    x, y, ids = _batch()
    calls = []
    orig_follower, orig_leader = bilevel.follower_step, bilevel.leader_step

    def spy_follower(state, xin, yy):
        calls.append(("f", xin.shape[0]))
        return orig_follower(state, xin, yy)

    def spy_leader(state, xx, yy):
        calls.append(("l", xx.shape[0]))
        return orig_leader(state, xx, yy)

    bilevel.follower_step, bilevel.leader_step = spy_follower, spy_leader
    try:
        terms = bilevel.bilevel_cycle(s, x, y, ids)
    finally:
        bilevel.follower_step, bilevel.leader_step = orig_follower, orig_leader
    # K = 3 follower steps on D_tr (patient p1: 2 slices), then 1 leader step on D_val (p2)
    assert calls == [("f", 2)] * 3 + [("l", 2)]
    assert (s.step, s.follower_steps, s.leader_steps) == (4, 3, 1)
    assert "inner_seg" in terms and "leader_upper" in terms
    with pytest.raises(ValueError, match="2 patients"):
        bilevel.bilevel_cycle(s, x, y, ["p1"] * 4)


@pytest.mark.parametrize(
    "method, flags, stage, leader_changes, follower_changes",
    [
        ("fuse4seg", {}, "warmup", False, True),
        ("fuse4seg", {"leader_pretrain": True}, "warmup", True, True),
        ("fuse4seg", {}, "rollout", True, True),
        ("fuse4seg", {"bilevel": False}, "rollout", True, True),
        ("disjoint", {}, "warmup", True, True),
        ("disjoint", {}, "rollout", False, True),
        ("average", {}, "rollout", None, True),
        ("multichannel", {}, "warmup", None, True),
    ],
)
def test_each_method_changes_the_right_networks(
    tiny_cfg, method, flags, stage, leader_changes, follower_changes
):
    cfg = tiny_cfg(method=method, **flags)
    spec = check_method_options(cfg)
    s = _state(2 if spec.seg_input == "channels" else 1, leader=spec.has_leader)
    x, y, ids = _batch()
    lead = _snap(s.leader) if s.leader is not None else None
    foll = _snap(s.follower)
    fn = spec.warmup if stage == "warmup" else spec.rollout
    fn(s, x, y, ids, cfg)
    if leader_changes is None:
        assert s.leader is None
    else:
        assert bool(_changed(lead, s.leader)) is leader_changes
    assert bool(_changed(foll, s.follower)) is follower_changes
    leader_n, follower_n = spec.steps_per_batch(cfg, stage)
    assert (s.leader_steps, s.follower_steps) == (leader_n, follower_n)


def test_follower_step_count_is_equal_across_methods(tiny_cfg):
    counts = set()
    for name in ("fuse4seg", "disjoint", "average", "multichannel"):
        cfg = tiny_cfg(method=name)
        spec = METHODS[name]
        counts.add(tuple(spec.steps_per_batch(cfg, st)[1] for st in ("warmup", "rollout")))
    assert counts == {(1, 2)}


def test_ablation_flags_are_checked(tiny_cfg):
    from fuse4seg.errors import ConfigError

    with pytest.raises(ConfigError, match="--no-ema"):
        check_method_options(tiny_cfg(method="average", use_ema=False))
    with pytest.raises(ConfigError, match="unknown method"):
        get_method("nope")
    s = _state()
    s.weights = LossWeights(alpha=0.0, beta=0.0, gamma=0.05)
    x, y, _ = _batch()
    assert set(bilevel.leader_step(s, x, y)) == {"seg", "recon", "upper"}


def test_nan_loss_raises_before_the_update():
    s = _state()
    x, y, _ = _batch()
    x[0, 0, 0, 0] = float("nan")
    lead = _snap(s.leader)
    with pytest.raises(bilevel.NonFiniteLossError, match="NaN/Inf"):
        bilevel.leader_step(s, x, y)
    assert _changed(lead, s.leader) == []


def test_warmup_input_is_the_prior_the_untrained_leader_outputs():
    x, y, _ = _batch()
    s = _state()
    with torch.no_grad():
        lead = s.leader.eval()(x).fused
    prior = bilevel.warmup_input(s, x)
    assert prior.shape == (4, 1, 16, 16)
    assert (prior - lead).abs().max() < 0.05  # tiny head_init_scale: leader ~ prior
    assert torch.allclose(prior, s.leader.normalise(x.mean(dim=1, keepdim=True)))
    no_leader = _state(leader=False)
    assert torch.equal(bilevel.warmup_input(no_leader, x), x.mean(dim=1, keepdim=True))


def test_leader_steps_on_seg_alone_lower_seg_loss_for_a_fixed_follower():
    """The semantic gradient points the right way: for a frozen follower, a few leader
    steps on L_seg alone (alpha = beta = gamma = 0) lower L_seg on the same D_val batch."""
    s = _state(
        fusion={"transfer_hidden": 8, "output_norm": "clamp"},
        weights=LossWeights(0.0, 0.0, 0.0),
        lr_leader=3e-3,
        ema=False,
    )
    leader, follower = s.leader, s.follower
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 2, 24, 24, generator=g)
    y = (x[:, 0] > 0.6).long() + 2 * (x[:, 1] > 0.7).long()  # classes from both sources
    for _ in range(5):  # a follower that has learned something
        bilevel.follower_step(s, bilevel.frozen_fusion(leader, x), y)
    before = _snap(follower)
    losses = [bilevel.leader_step(s, x, y)["seg"] for _ in range(6)]
    assert losses[-1] < losses[0]
    assert _changed(before, follower) == []


def test_information_anchor_enters_the_leader_step_and_trains_the_decoder():
    s = _state(
        fusion={"transfer_hidden": 4, "source_decoder_hidden": 4},
        weights=LossWeights(0.0, 0.0, 0.0, info=1.0),
        ema=False,
    )
    leader = s.leader
    x, y, _ = _batch()
    before = leader.source_decoder[0].weight.detach().clone()
    terms = bilevel.leader_step(s, x, y)
    assert terms["info"] > 0 and "decomp" not in terms
    assert terms["upper"] == pytest.approx(terms["seg"] + terms["info"], rel=1e-5)
    assert not torch.equal(before, leader.source_decoder[0].weight)


def test_info_weight_needs_a_source_decoder():
    from fuse4seg.errors import ConfigError
    from fuse4seg.train.config import make_config

    with pytest.raises(ConfigError, match="source decoder"):
        make_config("tiny", info=1.0, fusion_overrides={"source_decoder_hidden": 0})
    cfg = make_config("tiny", info=1.0, fusion_overrides={"source_decoder_hidden": 8})
    assert cfg.info == 1.0
    # tiny and base train with the anchor; paper keeps the paper's L_upper
    assert make_config("tiny").info == make_config("base").info == 1.0
    assert make_config("paper").info == 0.0
    with pytest.raises(ConfigError, match="unknown FusionNetConfig"):
        make_config("tiny", fusion_overrides={"no_such_key": 1})


def test_disjoint_fuser_follows_cddfuse_phases(tiny_cfg):
    cfg = tiny_cfg(method="disjoint")
    assert cfg.disjoint_objective == "cddfuse"
    spec = check_method_options(cfg)
    s = _state()
    s.leader_total_steps = 3  # phase I for the first third: step 0 only
    x, y, ids = _batch()
    keys = [set(spec.warmup(s, x, y, ids, cfg)) for _ in range(3)]
    assert "leader_cddfuse1_recon" in keys[0] and "leader_decomp" in keys[0]
    assert all("leader_cddfuse2_fusion" in k for k in keys[1:])
    regs = tiny_cfg(method="disjoint", disjoint_objective="regularisers")
    terms = spec.warmup(_state(), x, y, ids, regs)
    assert {"leader_grad", "leader_recon"} <= set(terms)
    from fuse4seg.errors import ConfigError

    with pytest.raises(ConfigError, match="disjoint_objective"):
        tiny_cfg(method="disjoint", disjoint_objective="cdd")


def test_rarity_weighting_changes_the_information_term():
    x, y, _ = _batch()
    infos = []
    for weighting in ("uniform", "rarity"):
        s = _state(weights=LossWeights(1.0, 5.0, 0.05, info=1.0, info_weighting=weighting))
        out = s.leader(x)
        _, terms = bilevel.upper_loss(s, out, x, None, None)
        infos.append(terms["info"])
    assert infos[0] > 0 and infos[1] > 0 and infos[0] != pytest.approx(infos[1], rel=1e-3)


def _sep_value(out, x, y):
    from fuse4seg.losses import class_separation_loss

    return class_separation_loss(out.fused, y, x.amax(dim=1) > 0)


def _floor_value(out, x, y):
    from fuse4seg.losses import contrast_floor_loss

    return contrast_floor_loss(out.fused, x.mean(dim=1, keepdim=True), y, x.amax(dim=1) > 0)


@pytest.mark.parametrize(
    ("weights", "term", "weight", "value"),
    [
        ({"sep": 2.0}, "sep", 2.0, _sep_value),
        ({"contrast_floor": 3.0}, "floor", 3.0, _floor_value),
    ],
)
def test_label_anchors_enter_the_leader_loss_only_with_labels(weights, term, weight, value):
    x, y, _ = _batch()
    s = _state(weights=LossWeights(1.0, 5.0, 0.05, **weights))
    out = s.leader(x)
    logits = s.follower(out.fused)
    total, terms = bilevel.upper_loss(s, out, x, logits, y)
    assert terms[term] == pytest.approx(float(value(out, x, y)), rel=1e-6, abs=1e-9)
    if term == "sep":
        assert 0.0 < terms["sep"] <= 1.0
    s0 = _state()
    out0 = s0.leader(x)
    total0, terms0 = bilevel.upper_loss(s0, out0, x, s0.follower(out0.fused), y)
    assert term not in terms0
    assert float(total) == pytest.approx(float(total0) + weight * terms[term], rel=1e-5, abs=1e-6)
    _, terms_nolab = bilevel.upper_loss(s, out, x, None, None)
    assert term not in terms_nolab


def test_leader_criterion_replaces_l_seg_in_the_upper_loss_only():
    x, y, _ = _batch()
    s = _state(weights=LossWeights(0.0, 0.0, 0.0))
    out = s.leader(x)
    logits = s.follower(out.fused)
    _, plain = bilevel.upper_loss(s, out, x, logits, y)
    assert plain["seg"] == pytest.approx(float(s.seg_criterion(logits, y)), rel=1e-6)
    s.leader_seg_criterion = DiceCELoss(4, class_weights=[1.0, 1.0, 5.0, 1.0])
    _, weighted = bilevel.upper_loss(s, out, x, logits, y)
    assert weighted["seg"] == pytest.approx(float(s.leader_seg_criterion(logits, y)), rel=1e-6)
    assert weighted["seg"] != pytest.approx(plain["seg"], rel=1e-3)
    # the follower's own step keeps its criterion
    assert float(bilevel.seg_loss(s, logits, y)) == pytest.approx(plain["seg"], rel=1e-6)


def test_trainer_builds_the_leader_criterion_and_sep_weight_from_the_config(tmp_path):
    from types import SimpleNamespace

    from fuse4seg.train.config import make_config
    from fuse4seg.train.trainer import Trainer

    data = SimpleNamespace(case_ids_per_item=["a"] * 4 + ["b"] * 4)
    cfg = make_config("tiny", batch_size=4, tumour_fraction=None)
    trainer = Trainer(cfg, data, tmp_path / "plain", device="cpu", progress=False)
    assert trainer.state.leader_seg_criterion is None and trainer.state.weights.sep == 0.0
    cfg = make_config("tiny", batch_size=4, tumour_fraction=None, sep=0.5,
                      leader_class_weights=[1.0, 1.0, 1.0, 1.0])  # fmt: skip
    trainer = Trainer(cfg, data, tmp_path / "set", device="cpu", progress=False)
    assert isinstance(trainer.state.leader_seg_criterion, DiceCELoss)
    assert trainer.state.weights.sep == 0.5
    assert trainer.state.weights.contrast_floor == 0.0
    cfg = make_config("tiny", batch_size=4, tumour_fraction=None, contrast_floor=2.0)
    trainer = Trainer(cfg, data, tmp_path / "floor", device="cpu", progress=False)
    assert trainer.state.weights.contrast_floor == 2.0
    with pytest.raises(ConfigError, match="contrast_floor"):
        make_config("tiny", contrast_floor=-1.0)
    cfg = make_config("tiny", batch_size=4, tumour_fraction=None, contrast_spread="pooled")
    trainer = Trainer(cfg, data, tmp_path / "pooled", device="cpu", progress=False)
    assert trainer.state.weights.contrast_spread == "pooled"
    with pytest.raises(ConfigError, match="contrast_spread"):
        make_config("tiny", contrast_spread="brain")
    cfg = make_config("tiny", batch_size=4, tumour_fraction=None, leader_dice_over="regions")
    trainer = Trainer(cfg, data, tmp_path / "regions", device="cpu", progress=False)
    assert trainer.state.leader_seg_criterion.dice_over == "regions"
    assert trainer.state.seg_criterion.dice_over == "classes"
    assert trainer.state.leader_seg_criterion.class_weights.tolist() == cfg.class_weights
    for key in ("dice_over", "leader_dice_over"):
        with pytest.raises(ConfigError, match=key):
            make_config("tiny", **{key: "voxels"})
