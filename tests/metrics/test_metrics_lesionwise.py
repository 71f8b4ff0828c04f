"""BraTS 2023 lesion-wise Dice/HD95, NSD and the bootstrap CI (``fuse4seg.metrics.lesionwise``)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from fuse4seg.cli.main import main
from fuse4seg.metrics.lesionwise import (
    LESIONWISE_METRICS,
    bootstrap_mean_ci,
    compute_lesionwise_metrics,
    lesion_labels,
    lesionwise_scores,
    normalized_surface_dice,
)
from fuse4seg.metrics.segmentation import dice


def _synthetic() -> tuple[np.ndarray, np.ndarray]:
    """The documented case (docs/metrics.md), 40^3 at 1 mm, masks (X, Y, Z).

    GT: L1 hit, L2 merged pair, L3 missed (6^3 = 216 voxels each), L4 small (3^3 = 27).
    Prediction: L1 exactly; L2 exactly plus a 4-voxel blob 2 voxels beyond it (inside L2's
    3-voxel dilation: a second component matched to L2); nothing on L3 and L4; a 4^3 false
    lesion far from every GT lesion.
    """
    ref = np.zeros((40, 40, 40), bool)
    pred = np.zeros_like(ref)
    ref[4:10, 4:10, 4:10] = pred[4:10, 4:10, 4:10] = True  # L1 hit
    ref[20:26, 4:10, 4:10] = pred[20:26, 4:10, 4:10] = True  # L2 ...
    pred[28, 6:8, 6:8] = True  # ... and its second predicted blob (gap x = 26, 27)
    ref[4:10, 20:26, 4:10] = True  # L3 missed
    ref[30:33, 30:33, 30:33] = True  # L4: 27 voxels <= 50, ignored
    pred[20:24, 20:24, 20:24] = True  # false positive
    return pred, ref


def test_synthetic_case_documented_values():
    pred, ref = _synthetic()
    labels, n = lesion_labels(ref, dilation=3)
    assert n == 4 and np.array_equal(labels > 0, ref)
    r = lesionwise_scores(pred, ref)  # defaults: 50 voxels, dilation 3, penalty 374
    by_size = sorted(
        (les["voxels"], les["dice"], les["hd95"], len(les["matched"])) for les in r.lesions
    )
    assert by_size[0] == (27, 0.0, 374.0, 0)  # L4: a miss, but ignored
    assert [les["kept"] for les in r.lesions].count(False) == 1
    merged = [les for les in r.lesions if len(les["matched"]) == 2]
    assert len(merged) == 1  # L2: both predicted blobs matched
    assert merged[0]["dice"] == pytest.approx(2 * 216 / (216 + 220))  # = 108/109
    # the blob's 4 boundary voxels (3 mm away) are 4/156 < 5 % of the predicted boundary
    assert merged[0]["hd95"] == 0.0
    assert (r.tp, r.fn, r.fp) == (2, 1, 1)
    # (1 + 108/109 + 0 + 0) / (3 kept lesions + 1 FP);  (0 + 0 + 374 + 374) / 4
    assert r.dice == pytest.approx(217 / 436)
    assert r.hd95 == pytest.approx(187.0)
    # ordinary Dice of the same masks: 2 * 432 / (500 + 675)
    assert dice(pred, ref) == pytest.approx(864 / 1175)
    # NSD: boundaries pred 152 + 156 + 56, GT 3 * 152 + 26; within 1 mm: 2 * (152 + 152)
    assert normalized_surface_dice(pred, ref, 1.0) == pytest.approx(608 / 846)
    assert normalized_surface_dice(pred, ref, 3.0) == pytest.approx(612 / 846)


def test_parameters_change_the_rules():
    pred, ref = _synthetic()
    # L4 kept: a fourth missed lesion
    r = lesionwise_scores(pred, ref, min_lesion_voxels=0)
    assert (r.tp, r.fn, r.fp) == (2, 2, 1) and r.dice == pytest.approx(217 / 109 / 5)
    # without dilation the far blob of L2 becomes a false positive
    r = lesionwise_scores(pred, ref, dilation=0, hd95_penalty=100.0)
    assert (r.tp, r.fn, r.fp) == (2, 1, 2)
    assert r.dice == pytest.approx(2 / 5) and r.hd95 == pytest.approx(300 / 5)
    # a prediction on an ignored small lesion is not a false positive
    pred2 = pred.copy()
    pred2[30:33, 30:33, 30:33] = True
    assert lesionwise_scores(pred2, ref).fp == 1


def test_gt_components_merge_by_dilation():
    ref = np.zeros((30, 12, 12), bool)
    ref[2:8, 3:9, 3:9] = ref[12:18, 3:9, 3:9] = True  # gap of 4 voxels along x
    assert lesion_labels(ref, dilation=3)[1] == 1  # 3 + 3 >= 4: one lesion
    assert lesion_labels(ref, dilation=1)[1] == 2


def test_empty_cases():
    z = np.zeros((12, 12, 12), bool)
    r = lesionwise_scores(z, z)
    assert (r.dice, r.hd95, r.tp, r.fn, r.fp) == (1.0, 0.0, 0, 0, 0)
    assert normalized_surface_dice(z, z) == 1.0
    small = z.copy()
    small[2:5, 2:5, 2:5] = True  # only a lesion below the threshold: nothing to count
    r = lesionwise_scores(z, small)
    assert (r.dice, r.hd95, r.fn) == (1.0, 0.0, 0)
    r = lesionwise_scores(small, z)  # a false lesion only
    assert (r.dice, r.hd95, r.fp) == (0.0, 374.0, 1)
    assert normalized_surface_dice(small, z) == 0.0
    labels = np.zeros((12, 12, 12), np.uint8)
    out = compute_lesionwise_metrics(labels, labels)
    assert set(out) == {"WT", "TC", "ET"} and set(out["WT"]) == set(LESIONWISE_METRICS)
    assert out["ET"]["LesionDice"] == 1.0 and out["ET"]["LesionHD95"] == 0.0


def test_nsd_matches_monai_with_spacing():
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(0)
    from scipy import ndimage

    ref = ndimage.binary_opening(rng.random((20, 18, 14)) > 0.4, iterations=1)
    pred = ndimage.binary_dilation(ref)
    pred[3:6, 3:6, 3:6] = True
    spacing = (1.0, 0.8, 2.5)
    for tol in (0.5, 1.0, 2.0):
        ours = normalized_surface_dice(pred, ref, tol, spacing)

        def onehot(m):
            return torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))

        theirs = monai_metrics.compute_surface_dice(
            onehot(pred), onehot(ref), [tol], spacing=spacing, use_subvoxels=False
        )
        assert ours == pytest.approx(float(theirs), abs=1e-6), tol


def test_bootstrap_mean_ci():
    v = np.array([[0.1, 1.0], [0.5, 1.0], [0.9, np.nan], [0.3, 1.0]])
    lo, hi = bootstrap_mean_ci(v, 2000, seed=1)
    assert lo.shape == hi.shape == (2,)
    assert 0.1 <= lo[0] < v[:, 0].mean() < hi[0] <= 0.9
    assert lo[1] == hi[1] == 1.0  # NaN ignored as in the means
    again = bootstrap_mean_ci(v, 2000, seed=1)
    assert np.array_equal(again[0], lo) and np.array_equal(again[1], hi)
    lo1, hi1 = bootstrap_mean_ci(np.array([0.7]), 10)
    assert lo1.shape == () and float(lo1) == float(hi1) == 0.7
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_mean_ci(v, 0)


def test_errors_name_the_value():
    z = np.zeros((4, 4), bool)
    with pytest.raises(ValueError, match="3D"):
        lesionwise_scores(z, z)
    with pytest.raises(ValueError, match="dilation"):
        lesion_labels(np.zeros((4, 4, 4), bool), dilation=-1)
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(z, z, -1.0)


def test_cli_lesion_wise_on_two_real_cases(brats_dir, tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    names = ["Brats18_2013_2_1", "BraTS-GLI-00000-000"]
    for name in names:
        if not (brats_dir / name).is_dir():
            pytest.skip(f"case {name} absent from {brats_dir}")
        (ref / name).symlink_to(brats_dir / name)
        seg = next((brats_dir / name).glob("*seg.nii.gz"))
        img = nib.load(seg)
        shifted = np.roll(np.asarray(img.dataobj), 1, axis=0)  # the GT moved by one voxel
        nib.save(nib.Nifti1Image(shifted, img.affine, img.header), pred / f"{name}.nii.gz")
    out = tmp_path / "seg.csv"
    args = ["evaluate-seg", "-i", str(pred), "--ref", str(ref), "-o", str(out), "--lesion-wise"]
    assert main([*args, "--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    assert "lesion-wise (BraTS 2023" in printed and "95% CI of the mean" in printed
    summary = json.loads(out.with_name("seg.summary.json").read_text())
    assert summary["cases_scored"] == 2
    assert summary["settings"]["lesion_wise"]["hd95_penalty"] == 374.0
    for cls in ("WT", "TC", "ET"):
        for m in ("LesionDice", "NSD"):
            key = f"{m}_{cls}"
            for case in summary["metric_per_case"]:
                assert 0.0 <= case["metrics"][key] <= 1.0, (case["case"], key)
            lo, hi = summary["ci95"][key]
            assert lo <= summary["mean"][key] <= hi
        for case in summary["metric_per_case"]:  # a one-voxel shift misses no lesion
            assert case["metrics"][f"LesionFN_{cls}"] == 0
    header = out.read_text().splitlines()[0].split(",")
    assert {"LesionDice_WT", "LesionHD95_ET", "NSD_TC", "LesionFP_WT"} <= set(header)
    assert main([*args, "--nsd-tolerance", "0"]) == 2
    assert "--nsd-tolerance must be > 0" in capsys.readouterr().err


#: the official BraTS 2023 code (rachitsaluja/BraTS-2023-Metrics, metrics.py
#: get_LesionWiseScores + its aggregation, dil_factor 3, threshold 50, run in a scratch
#: environment outside the repository) on the GT shifted by 2 voxels along X plus a false
#: 6^3 ET cube at [100:106, 100:106, 60:66]: lesion-wise Dice per region (TP 1, FP 1, FN 0 in
#: each); lesion-wise HD95 188.0 for WT and TC, and for ET 187.707 / 187.866 (its per-lesion
#: HD95 uses area-weighted surface elements: 1.41 / 1.73 mm where ours is 2.0 mm).
OFFICIAL_LESION_DICE = {
    "Brats18_2013_2_1": (0.4343701399688958, 0.43369859875529765, 0.37878857775522445),
    "BraTS-GLI-00000-000": (0.4555797923392374, 0.4549686298320178, 0.39011945861721303),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_LESION_DICE))
def test_real_case_matches_official_code(brats_dir, name):
    if not (brats_dir / name).is_dir():
        pytest.skip(f"case {name} absent from {brats_dir}")
    seg = np.asarray(nib.load(next((brats_dir / name).glob("*seg.nii.gz"))).dataobj)
    ref = np.where(seg == 4, 3, seg).astype(np.uint8)  # canonical: ET = 3
    pred = np.roll(ref, 2, axis=0)
    pred[100:106, 100:106, 60:66] = 3
    out = compute_lesionwise_metrics(pred, ref)
    for region, want in zip(("WT", "TC", "ET"), OFFICIAL_LESION_DICE[name], strict=True):
        got = out[region]
        assert got["LesionDice"] == pytest.approx(want, rel=1e-12), region
        assert (got["LesionTP"], got["LesionFP"], got["LesionFN"]) == (1, 1, 0), region
        assert got["LesionHD95"] == pytest.approx(188.0), region  # (2 mm + 374) / 2
