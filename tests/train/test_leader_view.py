"""The leader's glass-box view: class contrast numbers and the figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fuse4seg.models import create_fusion_net
from fuse4seg.train.leader_view import class_contrast, plot_leader_view


def test_class_contrast_known_values():
    labels = np.zeros((1, 4, 4), np.uint8)
    labels[0, 0, :2] = 2  # ED
    labels[0, 1, :2] = 3  # ET
    brain = np.ones_like(labels, bool)
    brain[0, 3] = False
    image = np.where(labels == 2, 2.0, np.where(labels == 3, 4.0, 0.0)).astype(np.float32)
    image[0, 3] = 9.0  # outside the brain: ignored
    c = class_contrast(image, labels, brain)
    sd = image[brain].std()
    assert c["ED_vs_healthy"] == pytest.approx(2.0 / sd)
    assert c["ET_vs_healthy"] == pytest.approx(4.0 / sd)
    assert np.isnan(c["NCR_vs_healthy"]) and np.isnan(c["d_healthy_NCR"])
    assert c["d_ED_ET"] > 1e6  # constant classes: separated by far more than their spread
    # the contrast is scale-free: an affine change of the image changes nothing
    c2 = class_contrast(3.0 * image + 1.0, labels, brain)
    assert c2["ED_vs_healthy"] == pytest.approx(c["ED_vs_healthy"])
    with pytest.raises(ValueError, match="one shape"):
        class_contrast(image[0], labels, brain)


def test_plot_leader_view_draws_weights_and_transfer(tmp_path):
    torch.manual_seed(0)
    net = create_fusion_net("tiny", 2, transfer_hidden=4, output_norm="clamp")
    x = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    labels = np.zeros((32, 32), np.uint8)
    labels[10:16, 10:16] = 2
    out = plot_leader_view(net, x, labels, ["t1ce", "flair"], tmp_path / "view.png", title="t")
    assert (tmp_path / "view.png").stat().st_size > 1000
    assert out["fused"].shape == (32, 32) and out["weights"].shape == (2, 32, 32)
    assert out["lookup"].shape == (64, 64)
    plain = create_fusion_net("tiny", 2, output_mode="image", transfer_hidden=0)
    out = plot_leader_view(plain, x, labels, ["t1ce", "flair"], tmp_path / "plain.png")
    assert out["weights"] is None and out["lookup"] is None
