"""Fixtures of the inference tests: small real models (no mocks) and phantom cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fuse4seg.data.phantom import write_phantom_case
from fuse4seg.models.model_file import FusionSegModel, save_model_file


def threshold_model(
    modalities=("t1ce", "flair"), fusion_rule: str | None = "average", scale: float = 1.0
) -> FusionSegModel:
    """A deterministic model: classical fusion + a 1x1 conv "intensity threshold" classifier.

    On the fused image f in [0, 1] the logits are ``10 k f + b_k`` (k = 0..3); their argmax is
    class 0 for f < 0.2, 1 for 0.2-0.3, 2 for 0.3-0.4 and 3 above, so all labels occur.
    """
    in_ch = 1 if fusion_rule else len(modalities)
    seg = nn.Conv2d(in_ch, 4, 1)
    with torch.no_grad():
        seg.weight.copy_(
            torch.tensor([0.0, 10.0, 20.0, 30.0]).view(4, 1, 1, 1).repeat(1, in_ch, 1, 1) / in_ch
        )
        seg.bias.copy_(torch.tensor([0.0, -2.0, -5.0, -9.0]))
    return FusionSegModel(
        "average" if fusion_rule else "multichannel",
        list(modalities),
        seg,
        fusion_rule=fusion_rule,
        preprocessing={"scale": scale},
    ).eval()


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """Three small phantom cases (BraTS 2021 naming, ET = 4)."""
    root = tmp_path_factory.mktemp("phantom")
    for i in range(3):
        write_phantom_case(root, i, shape=(40, 36, 16), seed=3)
    return root


def _phantom_slices(n_cases: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    from fuse4seg.data.phantom import generate_phantom_case
    from fuse4seg.data.preprocess import brain_mask, normalise_volume

    xs, ys = [], []
    for i in range(n_cases):
        images, seg = generate_phantom_case((48, 48, 24), np.random.default_rng(10 + i))
        vols = [images["t1ce"], images["flair"]]
        mask = brain_mask(vols)
        norm = np.stack([normalise_volume(v, mask)[0] for v in vols])  # (2, X, Y, Z)
        zs = [z for z in range(seg.shape[2]) if seg[:, :, z].any()]
        xs.append(norm[:, :, :, zs].transpose(3, 0, 1, 2))
        ys.append(seg[:, :, zs].transpose(2, 0, 1))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)).long()


@pytest.fixture(scope="session")
def trained_model_file(tmp_path_factory) -> Path:
    """``model.pt``: tiny FusionNet + SegNet trained briefly (cross-entropy) on phantom slices."""
    from fuse4seg.models import create_fusion_net, create_seg_net

    torch.manual_seed(0)
    fusion = create_fusion_net("tiny", 2)
    seg = create_seg_net("tiny", 1)
    model = FusionSegModel(
        "fuse4seg",
        ["t1ce", "flair"],
        seg,
        fusion_net=fusion,
        preprocessing={"scale": 0.5},
        fusion_preset="tiny",
        seg_preset="tiny",
    )
    x, y = _phantom_slices()
    x = nn.functional.avg_pool2d(x, 2)
    y = y[:, ::2, ::2]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    weights = torch.tensor([0.1, 1.0, 1.0, 1.0])
    model.train()
    for step in range(25):
        idx = torch.randint(0, len(x), (8,), generator=torch.Generator().manual_seed(step))
        _, logits = model(x[idx])
        loss = nn.functional.cross_entropy(logits, y[idx], weight=weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model_file(model, path)
    return path


@pytest.fixture(scope="session")
def make_threshold_model():
    """The :func:`threshold_model` factory."""
    return threshold_model
