from __future__ import annotations

import numpy as np
import pytest
import torch

from fuse4seg.train.evaluate import dice_per_label, evaluate_cases, quick_dice, summarise


class _Store:
    """In-memory store: channel 0 of the image encodes the label (label / 3)."""

    manifest = {"scale": 0.5}

    def __init__(self, labels):
        self.labels = labels

    def case_ids(self, split=None):
        return list(self.labels)

    def label(self, cid):
        return self.labels[cid]

    def image(self, cid):
        lab = self.labels[cid].astype(np.float32)
        return np.stack([lab / 3.0, np.zeros_like(lab)], axis=1)  # (D, M, H, W)

    def case_info(self, cid):
        return {"spacing": [1.0, 1.0, 2.0]}


class _Oracle(torch.nn.Module):
    """Reads the label back from channel 0 (a perfect segmenter), no fused image."""

    def forward(self, x):
        lab = torch.round(x[:, 0] * 3).long()
        return None, torch.nn.functional.one_hot(lab, 4).permute(0, 3, 1, 2).float()


def _labels():
    a = np.zeros((3, 8, 8), np.uint8)
    a[1, 2:5, 2:5] = 2
    a[1, 3, 3] = 3
    b = np.zeros((3, 8, 8), np.uint8)
    b[0, 1:3, 1:3] = 1
    return {"a": a, "b": b}


def test_dice_per_label_hand_values():
    gt = np.array([[1, 1, 0, 2]])
    pred = np.array([[1, 0, 0, 2]])
    d = dice_per_label(pred, gt)
    assert d["NCR"] == pytest.approx(2 * 1 / 3) and d["ED"] == 1.0 and d["ET"] == 1.0


def test_perfect_model_scores_one_and_hd95_zero():
    store = _Store(_labels())
    assert quick_dice(_Oracle(), store, ["a", "b"]) == {"NCR": 1, "ED": 1, "ET": 1, "mean": 1}
    rows = evaluate_cases(_Oracle(), store, ["a", "b"], batch_size=2)
    assert [r["case_id"] for r in rows] == ["a", "b"]
    s = summarise(rows)
    assert s["Dice_mean"] == 1.0 and s["IoU_mean"] == 1.0 and s["Dice_WT"] == 1.0
    assert s["HD95_ET"] == 0.0


def test_empty_prediction_scores_zero_where_tumour_exists():
    class Empty(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 4, *x.shape[2:])
            logits[:, 0] = 1
            return None, logits

    store = _Store(_labels())
    rows = evaluate_cases(Empty(), store, ["a"])
    # case a has ED and ET but no NCR: NCR both empty -> 1, ED/ET -> 0
    assert rows[0]["Dice_NCR"] == 1.0 and rows[0]["Dice_ED"] == 0.0 and rows[0]["IoU_ET"] == 0.0
    assert rows[0]["HD95_ED"] > 0
