"""Segmentation metrics: agreement with MONAI on real BraTS cases, conventions, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from fuse4seg.metrics import (
    BRATS_CLASSES,
    SegmentationMetrics,
    binary_metrics,
    compute_segmentation_metrics,
    hd95,
)

CASES = ("Brats18_2013_2_1", "BraTS-GLI-00000-000")


def _load_ref(brats_dir, case_id):
    from fuse4seg.data import discover_cases, read_nifti, to_canonical_labels

    (case,) = discover_cases(brats_dir / case_id)
    arr, _ = read_nifti(case.seg, as_float=False)
    return to_canonical_labels(arr, case.et_label)


def _perturb(ref: np.ndarray, kind: str) -> np.ndarray:
    if kind == "shift":
        return np.roll(ref, shift=(3, -2, 1), axis=(0, 1, 2))
    pred = ref.copy()
    pred[~ndimage.binary_erosion(ref > 0, iterations=2)] = 0
    pred[ndimage.binary_dilation(ref == 3, iterations=1) & (ref == 2)] = 3  # grow ET into ED
    return pred


def _monai(pred, ref, spacing):
    from monai.metrics import DiceMetric, HausdorffDistanceMetric

    def onehot(x):
        return torch.from_numpy(np.stack([np.isin(x, v) for v in BRATS_CLASSES.values()])[None])

    p, r = onehot(pred).float(), onehot(ref).float()
    dice = DiceMetric(include_background=True, reduction="none")(p, r)[0]
    hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
        p, r, spacing=list(spacing)
    )[0]
    return dice.numpy(), hd.numpy()


@pytest.mark.realdata
@pytest.mark.parametrize(
    "case_id,kind,spacing",
    [(CASES[0], "shift", (1.0, 1.0, 1.0)), (CASES[1], "erode", (1.0, 1.2, 2.5))],
)
def test_dice_and_hd95_agree_with_monai_on_real_cases(brats_dir, case_id, kind, spacing):
    ref = _load_ref(brats_dir, case_id)
    assert set(np.unique(ref)) <= {0, 1, 2, 3} and (ref == 3).any()
    pred = _perturb(ref, kind)
    ours = compute_segmentation_metrics(pred, ref, spacing)
    dice, hd = _monai(pred, ref, spacing)
    for i, name in enumerate(BRATS_CLASSES):
        assert ours[name]["Dice"] == pytest.approx(float(dice[i]), abs=1e-6), name
        assert ours[name]["HD95"] == pytest.approx(float(hd[i]), rel=1e-5, abs=1e-5), name
    assert 0 < ours["WT"]["Dice"] < 1 and ours["WT"]["HD95"] > 0
    voxel_ml = np.prod(spacing) / 1000
    assert ours["WT"]["VolRef_ml"] == pytest.approx((ref > 0).sum() * voxel_ml)


def test_empty_mask_conventions():
    empty = np.zeros((240, 240, 155), bool)
    one = empty.copy()
    one[100:110, 100:110, 50:60] = True
    both_empty = binary_metrics(empty, empty)
    assert both_empty["Dice"] == 1.0 and both_empty["IoU"] == 1.0 and both_empty["HD95"] == 0.0
    assert math.isnan(both_empty["Sensitivity"]) and both_empty["Specificity"] == 1.0
    for pred, ref in ((one, empty), (empty, one)):
        m = binary_metrics(pred, ref)
        assert m["Dice"] == 0.0 and m["IoU"] == 0.0
        assert m["HD95"] == pytest.approx(373.13, abs=0.01)
    assert hd95(one[..., 55], empty[..., 55], (2.0, 0.5)) == pytest.approx(math.hypot(480, 120))


def test_hand_computed_2d_case():
    ref = np.zeros((10, 12), bool)
    ref[2:6, 2:6] = True  # 16 px
    pred = np.zeros_like(ref)
    pred[2:6, 4:8] = True  # shifted by 2 columns: overlap 8
    m = binary_metrics(pred, ref, spacing=(1.0, 0.5))
    assert m["Dice"] == pytest.approx(0.5)
    assert m["IoU"] == pytest.approx(8 / 24)
    assert m["Sensitivity"] == pytest.approx(0.5)
    assert m["Specificity"] == pytest.approx((120 - 24) / (120 - 16))
    assert m["VolPred_ml"] == pytest.approx(16 * 0.5 / 1000)
    # boundaries are 2 columns apart along the 0.5 mm axis: every boundary pixel is within
    # 1 mm, the farthest (left edge of ref / right edge of pred) exactly 1 mm
    assert m["HD95"] == pytest.approx(1.0)
    assert hd95(ref, ref) == 0.0


def test_labels_and_regions_and_shape_errors():
    ref = np.zeros((20, 20, 5), np.uint8)
    ref[5:15, 5:15] = 2
    ref[8:12, 8:12] = 1
    ref[9:11, 9:11] = 3
    res = compute_segmentation_metrics(ref, ref)
    assert list(res) == ["NCR", "ED", "ET", "WT", "TC"]
    assert all(v["Dice"] == 1.0 and v["HD95"] == 0.0 for v in res.values())
    pred = ref.copy()
    pred[pred == 3] = 1  # ET predicted as NCR: TC and WT unchanged
    res = compute_segmentation_metrics(pred, ref)
    assert res["ET"]["Dice"] == 0.0 and res["TC"]["Dice"] == 1.0 and res["WT"]["Dice"] == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        compute_segmentation_metrics(ref, ref[:-1])
    with pytest.raises(ValueError, match="spacing"):
        compute_segmentation_metrics(ref, ref, spacing=(1.0, -1.0, 1.0))


def test_segmentation_metrics_accumulates():
    ref = np.zeros((16, 16), np.uint8)
    ref[4:12, 4:12] = 2
    ref[6:10, 6:10] = 3
    sm = SegmentationMetrics()
    sm.update("a", ref, ref, spacing=(1, 1))
    pred = ref.copy()
    pred[pred == 3] = 2
    sm.update("b", pred, ref, spacing=(1, 1))
    rows = sm.rows()
    assert [r["case"] for r in rows] == ["a", "b"]
    agg = sm.aggregate()
    assert agg["Dice_ET"]["mean"] == pytest.approx(0.5)
    assert agg["Dice_ET"]["std"] == pytest.approx(0.5)
    assert agg["Sensitivity_NCR"]["n"] == 0  # no NCR in the reference: NaN ignored


def _slice_case() -> tuple[np.ndarray, np.ndarray]:
    """Canonical (X, Y, Z) maps, 3 axial slices: z=0 agrees (ED), z=1 empty in both, z=2 has
    2 reference NCR voxels, the prediction 1 of them plus a false ET voxel."""
    ref = np.zeros((4, 4, 3), np.uint8)
    pred = np.zeros_like(ref)
    ref[0, :2, 0] = 2
    pred[0, :2, 0] = 2
    ref[1, :2, 2] = 1
    pred[1, 0, 2] = 1
    pred[3, 3, 2] = 3
    return pred, ref


def test_slice_dice_hand_computed():
    from fuse4seg.metrics.segmentation import dice_scores, slice_dice

    pred, ref = _slice_case()
    # kept slices: z=0 and z=2 (z=1 is empty in both); a class absent from both scores 1
    assert slice_dice(pred, ref, (1,)) == pytest.approx((1 + 2 * 1 / 3) / 2)  # NCR 5/6
    assert slice_dice(pred, ref, (2,)) == 1.0  # ED: 1 on z=0, absent from both on z=2
    assert slice_dice(pred, ref, (3,)) == pytest.approx((1 + 0) / 2)  # ET: false voxel on z=2
    assert slice_dice(pred, ref, (1, 2, 3)) == pytest.approx((1 + 2 * 1 / 4) / 2)  # WT
    slice_level = dice_scores(pred, ref, level="slice")
    case_level = dice_scores(pred, ref)
    assert slice_level["Dice_NCR"] == pytest.approx(5 / 6)
    assert case_level["Dice_NCR"] == pytest.approx(2 / 3) and case_level["Dice_ET"] == 0.0
    assert list(case_level) == [f"Dice_{c}" for c in BRATS_CLASSES]
    # the axial axis is a parameter: stored volumes are (D, H, W)
    moved = dice_scores(np.moveaxis(pred, -1, 0), np.moveaxis(ref, -1, 0), level="slice", axis=0)
    assert moved == slice_level
    empty = np.zeros_like(ref)
    assert slice_dice(empty, empty, (1,)) == 1.0
    with pytest.raises(ValueError, match="dice level"):
        dice_scores(pred, ref, level="voxel")
    with pytest.raises(ValueError, match="3D"):
        slice_dice(pred[..., 0], ref[..., 0], (1,))


def test_one_dice_for_every_caller():
    """Trainer validation, predictor, robustness and the metric table give the same Dice."""
    from fuse4seg.benchmark.robustness import dice_per_class
    from fuse4seg.inference.predictor import dice_per_region
    from fuse4seg.train.evaluate import dice_per_label

    pred, ref = _slice_case()
    table = compute_segmentation_metrics(pred, ref)
    assert dice_per_label(pred, ref) == {c: table[c]["Dice"] for c in ("NCR", "ED", "ET")}
    assert dice_per_region(pred, ref) == {c: table[c]["Dice"] for c in dice_per_region(pred, ref)}
    robust = dice_per_class(pred, ref)
    assert {k: robust[f"Dice_{k}"] for k in ("NCR", "ED", "ET")} == dice_per_label(pred, ref)
