from __future__ import annotations

import pytest
import torch
from torch import nn

from fuse4seg.train.ema import EMA, ema_decay


def test_ema_update_matches_formula():
    net = nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.fill_(0.0)
    ema = EMA(net, momentum=0.9)
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.bias.fill_(-1.0)
    ema.update(net)
    # theta_hat = 0.9 * 1 + 0.1 * 3 = 1.2 ; bias 0.9 * 0 + 0.1 * -1 = -0.1
    assert torch.allclose(ema.module.weight, torch.full((2, 3), 1.2))
    assert torch.allclose(ema.module.bias, torch.full((2,), -0.1))
    ema.update(net)  # 0.9 * 1.2 + 0.1 * 3 = 1.38
    assert torch.allclose(ema.module.weight, torch.full((2, 3), 1.38))
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_warmup_decay_and_integer_buffers():
    assert ema_decay(0.99, 1, warmup=True) == pytest.approx(2 / 11)
    assert ema_decay(0.99, 10_000, warmup=True) == 0.99
    assert ema_decay(0.99, 1, warmup=False) == 0.99
    net = nn.BatchNorm1d(2)
    ema = EMA(net, 0.5)
    net.num_batches_tracked += 7
    ema.update(net)
    assert int(ema.module.num_batches_tracked) == 7  # copied, not averaged


def test_ema_state_dict_round_trip():
    net = nn.Linear(2, 2)
    ema = EMA(net, 0.8, warmup=True)
    ema.update(net)
    other = EMA(nn.Linear(2, 2), 0.5)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1 and other.momentum == 0.8 and other.warmup
    assert torch.equal(other.module.weight, ema.module.weight)
    with pytest.raises(ValueError, match="momentum"):
        EMA(net, 1.0)
