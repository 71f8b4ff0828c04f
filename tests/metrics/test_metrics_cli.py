"""CLI round trips: ``fuse4seg evaluate-fusion`` and ``fuse4seg evaluate-seg``."""

from __future__ import annotations

import csv
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from fuse4seg.cli.main import main
from fuse4seg.metrics import read_gray_reference

HEADER = "image,EN,SD,SF,AG,MI,SCD,VIF,Qabf,SSIM,PSNR"


def _read_csv(path):
    with path.open() as fh:
        return list(csv.reader(fh))


@pytest.fixture
def fusion_dirs(tmp_path, harvard_dir):
    """Three MRI-CT pairs and their 'max'-rule fusions, as PNG folders."""
    dirs = {k: tmp_path / k for k in ("a", "b", "f")}
    for d in dirs.values():
        d.mkdir()
    for name in ("11.png", "12.png", "13.png"):
        shutil.copy(harvard_dir / "MRI_CT" / "MRI" / name, dirs["a"] / name)
        shutil.copy(harvard_dir / "MRI_CT" / "CT" / name, dirs["b"] / name)
        fa = read_gray_reference(dirs["a"] / name)
        fb = read_gray_reference(dirs["b"] / name)
        Image.fromarray(np.maximum(fa, fb).astype(np.uint8)).save(dirs["f"] / name)
    return dirs


def test_evaluate_fusion_round_trip(fusion_dirs, reference_dir, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    d = fusion_dirs
    rc = main(
        ["evaluate-fusion", "-a", str(d["a"]), "-b", str(d["b"]), "-f", str(d["f"]), "-o", str(out)]
    )
    assert rc == 0
    rows = _read_csv(out)
    assert ",".join(rows[0]) == HEADER  # the default set: the reference evaluator's ten
    assert [r[0] for r in rows[1:]] == ["11.png", "12.png", "13.png", "mean"]
    golden = json.loads((reference_dir / "fusion_metrics_reference.json").read_text())["values"]
    names = rows[0][1:11]
    for r in rows[1:4]:
        want = golden[f"MRI_CT/{r[0]}|max"]
        for name, v in zip(names, r[1:11], strict=True):
            assert float(v) == pytest.approx(want[name], rel=1e-4, abs=1e-6), (r[0], name)
    col = np.array([[float(v) for v in r[1:]] for r in rows[1:4]])
    assert np.allclose([float(v) for v in rows[4][1:]], col.mean(0))
    printed = capsys.readouterr().out
    assert "mean" in printed and "3 image(s) scored" in printed
    assert not list(tmp_path.glob(".tmp-*"))


def test_evaluate_fusion_metrics_all_and_chosen(fusion_dirs, tmp_path, capsys):
    from fuse4seg.metrics import ALL_FUSION_METRICS

    d = fusion_dirs
    args = ["evaluate-fusion", "-a", str(d["a"]), "-b", str(d["b"]), "-f", str(d["f"])]
    out = tmp_path / "all.csv"
    assert main([*args, "--metrics", "all", "-o", str(out)]) == 0
    rows = _read_csv(out)
    assert rows[0] == ["image", *ALL_FUSION_METRICS] and len(rows[0]) - 1 == 38
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert np.isfinite(values).all()
    ms = values[:3, rows[0].index("MS-SSIM") - 1]
    assert all(0.5 < v <= 2.0 for v in ms), ms  # sum over the 2 sources, each <= 1
    chosen = tmp_path / "chosen.csv"
    assert main([*args, "--metrics", "qabf, Nabf,default", "-o", str(chosen)]) == 0
    rows2 = _read_csv(chosen)
    assert rows2[0] == ["image", "Qabf", "Nabf", *HEADER.split(",")[1:8], *HEADER.split(",")[9:]]
    for name in rows2[0][1:]:  # same values as in the full run
        i, j = rows[0].index(name), rows2[0].index(name)
        assert [r[j] for r in rows2[1:]] == [r[i] for r in rows[1:]], name
    mean = tmp_path / "mean.csv"
    assert main([*args, "--metrics", "SSIM,Qabf", "--over-sources", "mean", "-o", str(mean)]) == 0
    rows3 = _read_csv(mean)
    for r_all, r_mean in zip(rows[1:], rows3[1:], strict=True):
        ssim = float(r_all[rows[0].index("SSIM")])
        assert float(r_mean[1]) == pytest.approx(ssim / 2, rel=1e-12)
        assert r_mean[2] == r_all[rows[0].index("Qabf")]
    capsys.readouterr()
    assert main([*args, "--metrics", "EN,Qxyz"]) == 2
    assert "unknown metric 'Qxyz'" in capsys.readouterr().err


def test_evaluate_fusion_standard_convention_differs(fusion_dirs, tmp_path):
    d = fusion_dirs
    outs = {}
    for conv in ("reference", "standard"):
        outs[conv] = tmp_path / f"{conv}.csv"
        args = ["evaluate-fusion", "-a", str(d["a"]), "-b", str(d["b"]), "-f", str(d["f"])]
        assert main([*args, "--convention", conv, "-o", str(outs[conv])]) == 0
    ref, std = _read_csv(outs["reference"]), _read_csv(outs["standard"])
    i_mi, i_en = ref[0].index("MI"), ref[0].index("EN")
    assert float(std[1][i_en]) == pytest.approx(float(ref[1][i_en]))
    assert float(std[1][i_mi]) == pytest.approx(float(ref[1][i_mi]) / np.log(2))  # bits vs nats


def _png(path, size, value=100):
    Image.fromarray(np.full(size, value, np.uint8) + np.eye(*size, dtype=np.uint8) * 50).save(path)


def test_evaluate_fusion_bad_pairs_continue_and_exit_2(tmp_path, capsys):
    dirs = {k: tmp_path / k for k in ("a", "b", "f")}
    for d in dirs.values():
        d.mkdir()
    for name in ("ok", "small"):
        _png(dirs["a"] / f"{name}.png", (48, 48))
        _png(dirs["f"] / f"{name}.png", (48, 48), 120)
    _png(dirs["b"] / "ok.png", (48, 48), 60)
    _png(dirs["b"] / "small.png", (48, 50), 60)  # size mismatch
    _png(dirs["f"] / "lonely.png", (48, 48))  # no sources
    _png(dirs["a"] / "extra.png", (48, 48))  # a source without a fused image: only noted
    out = tmp_path / "s.csv"
    args = ["evaluate-fusion", "-a", str(dirs["a"]), "-b", str(dirs["b"]), "-f", str(dirs["f"])]
    rc = main([*args, "--metrics", "default,MS-SSIM", "-o", str(out)])
    assert rc == 2
    captured = capsys.readouterr()
    err = captured.err
    assert "lonely.png: no matching file in" in err and str(dirs["a"]) in err
    assert "extra.png" not in err and "1 source image(s) without a fused image" in captured.out
    assert "1 image(s) scored" in captured.out and "2 failed" in captured.out
    assert "image sizes differ" in err and "small.png" in err
    rows = _read_csv(out)
    assert [r[0] for r in rows[1:]] == ["ok.png", "mean"]
    assert rows[1][rows[0].index("MS-SSIM")] == "nan"  # 48 px: too small, left empty


def test_evaluate_fusion_user_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["evaluate-fusion", "-a", str(tmp_path / "nope"), "-b", str(empty), "-f", str(empty)]
    assert main(args) == 2
    assert "nope: folder does not exist" in capsys.readouterr().err
    args = ["evaluate-fusion", "-a", str(empty), "-b", str(empty), "-f", str(empty)]
    assert main(args) == 2
    assert "no images" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "x.txt")]) == 2
    assert "must be a .csv" in capsys.readouterr().err


#: affine of the reference segmentations; predictions must share it (within 1e-3)
REF_AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _case(root, case_id, naming, seg):
    folder = root / case_id
    folder.mkdir(parents=True)
    name = f"{case_id}_seg.nii.gz" if naming == "brats2021" else f"{case_id}-seg.nii.gz"
    nib.save(nib.Nifti1Image(seg, REF_AFFINE), folder / name)


def _seg(et: int) -> np.ndarray:
    seg = np.zeros((24, 24, 10), np.uint8)
    seg[4:20, 4:20, 2:8] = 2
    seg[8:16, 8:16, 3:7] = 1
    seg[10:14, 10:14, 4:6] = et
    return seg


def test_evaluate_seg_round_trip_both_editions(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    pred.mkdir()
    _case(ref, "Brats18_X_1", "brats2021", _seg(4))
    _case(ref, "BraTS-GLI-00001-000", "brats2023", _seg(3).astype(np.float32))
    shifted = np.roll(_seg(4), 1, axis=0)
    nib.save(nib.Nifti1Image(shifted, REF_AFFINE), pred / "Brats18_X_1_seg.nii.gz")
    nib.save(nib.Nifti1Image(_seg(3), REF_AFFINE), pred / "BraTS-GLI-00001-000.nii.gz")
    out = tmp_path / "seg.csv"
    assert main(["evaluate-seg", "--pred", str(pred), "--ref", str(ref), "-o", str(out)]) == 0
    rows = _read_csv(out)
    assert rows[0][:4] == ["case", "Dice_NCR", "IoU_NCR", "HD95_NCR"]
    assert len(rows[0]) == 1 + 5 * 3
    by_case = {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert list(by_case) == ["BraTS-GLI-00001-000", "Brats18_X_1", "mean"]
    gli = by_case["BraTS-GLI-00001-000"]
    assert all(float(gli[f"Dice_{c}"]) == 1.0 for c in ("NCR", "ED", "ET", "WT", "TC"))
    b18 = by_case["Brats18_X_1"]
    # WT is a 16x16x6 box shifted by one voxel along x: Dice = 2 * 15 / 32
    assert float(b18["Dice_WT"]) == pytest.approx(30 / 32)
    assert float(b18["Dice_ET"]) == pytest.approx(2 * 3 / 8)  # 4-voxel side shifted by 1
    assert float(b18["HD95_WT"]) == pytest.approx(1.0)  # spacing from the reference header
    assert float(by_case["mean"]["Dice_WT"]) == pytest.approx((1 + 30 / 32) / 2)
    assert "2 case(s) scored" in capsys.readouterr().out


def test_evaluate_seg_failures_are_reported(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    pred.mkdir()
    _case(ref, "Brats18_A_1", "brats2021", _seg(4))
    _case(ref, "Brats18_B_1", "brats2021", _seg(4))
    _case(ref, "Brats18_C_1", "brats2021", _seg(4))
    nib.save(nib.Nifti1Image(_seg(4), REF_AFFINE), pred / "Brats18_A_1.nii")
    nib.save(nib.Nifti1Image(_seg(4)[:-1], REF_AFFINE), pred / "Brats18_B_1_seg.nii.gz")
    out = tmp_path / "seg.csv"
    rc = main(["evaluate-seg", "--pred", str(pred), "--ref", str(ref), "-o", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Brats18_B_1_seg.nii.gz: shape (23, 24, 10) differs" in err
    assert "no prediction Brats18_C_1_seg.nii.gz" in err
    assert [r[0] for r in _read_csv(out)[1:]] == ["Brats18_A_1", "mean"]
    # canonical predictions (ET = 3) in a 2021 folder need --pred-labels canonical
    nib.save(nib.Nifti1Image(_seg(3), REF_AFFINE), pred / "Brats18_A_1.nii")
    (pred / "Brats18_B_1_seg.nii.gz").unlink()
    args = ["evaluate-seg", "--pred", str(pred), "--ref", str(ref / "Brats18_A_1")]
    assert main(args) == 2
    assert "see --pred-labels" in capsys.readouterr().err
    assert main([*args, "--pred-labels", "canonical"]) == 0


def test_evaluate_seg_workers_summary_json_and_failures_once(tmp_path, capsys):
    import json

    ref, pred = tmp_path / "ref", tmp_path / "pred"
    pred.mkdir()
    for name in ("Brats18_A_1", "Brats18_B_1", "Brats18_C_1"):
        _case(ref, name, "brats2021", _seg(4))
    nib.save(nib.Nifti1Image(_seg(4), REF_AFFINE), pred / "Brats18_A_1_seg.nii.gz")
    shifted = np.roll(_seg(4), 1, axis=0)
    nib.save(nib.Nifti1Image(shifted, REF_AFFINE), pred / "Brats18_B_1_seg.nii.gz")
    outs = []
    for workers in ("1", "2"):
        outs.append(tmp_path / f"w{workers}.csv")
        args = ["evaluate-seg", "--pred", str(pred), "--ref", str(ref), "-o", str(outs[-1])]
        assert main([*args, "--workers", workers]) == 2  # case C has no prediction
        err = capsys.readouterr().err
        assert err.count("FAILED Brats18_C_1") == 1
    assert outs[0].read_text() == outs[1].read_text()
    summary = json.loads((tmp_path / "w2.summary.json").read_text())
    assert [c["case"] for c in summary["metric_per_case"]] == ["Brats18_A_1", "Brats18_B_1"]
    assert summary["metric_per_case"][0]["metrics"]["Dice_WT"] == 1.0
    assert summary["mean"]["Dice_WT"] == pytest.approx((1 + 30 / 32) / 2)
    assert summary["cases_scored"] == 2 and len(summary["failures"]) == 1
    assert main(["evaluate-seg", "--pred", str(pred), "--ref", str(ref), "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err


def test_evaluate_fusion_worker_threads_same_csv(fusion_dirs, tmp_path, capsys):
    d = fusion_dirs
    args = ["evaluate-fusion", "-a", str(d["a"]), "-b", str(d["b"]), "-f", str(d["f"])]
    outs = []
    for workers in ("1", "3"):
        outs.append(tmp_path / f"w{workers}.csv")
        assert main([*args, "--workers", workers, "-o", str(outs[-1])]) == 0
    assert outs[0].read_text() == outs[1].read_text()
    assert main([*args, "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err


def test_evaluate_seg_dice_level_slice(tmp_path, capsys):
    # 3 axial slices: z=0 agrees (ED); z=1 empty in both (skipped); z=2: 2 reference NCR
    # voxels, the prediction has 1 of them and a false ET voxel
    ref_seg = np.zeros((4, 4, 3), np.uint8)
    pred_seg = np.zeros_like(ref_seg)
    ref_seg[0, :2, 0] = pred_seg[0, :2, 0] = 2
    ref_seg[1, :2, 2] = 1
    pred_seg[1, 0, 2] = 1
    pred_seg[3, 3, 2] = 4  # ET in the 2018-2022 convention
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    pred.mkdir()
    _case(ref, "Brats18_S_1", "brats2021", ref_seg)
    nib.save(nib.Nifti1Image(pred_seg, REF_AFFINE), pred / "Brats18_S_1_seg.nii.gz")
    scores = {}
    for level in ("case", "slice"):
        out = tmp_path / f"{level}.csv"
        args = ["evaluate-seg", "--pred", str(pred), "--ref", str(ref), "-o", str(out)]
        assert main([*args, "--dice-level", level]) == 0
        rows = _read_csv(out)
        scores[level] = dict(zip(rows[0], rows[1], strict=True))
    assert float(scores["case"]["Dice_NCR"]) == pytest.approx(2 / 3)
    assert float(scores["case"]["Dice_ET"]) == 0.0
    assert float(scores["slice"]["Dice_NCR"]) == pytest.approx((1 + 2 / 3) / 2)
    assert float(scores["slice"]["Dice_ET"]) == pytest.approx(0.5)
    assert float(scores["slice"]["Dice_ED"]) == 1.0
    assert scores["slice"]["HD95_WT"] == scores["case"]["HD95_WT"]  # HD95 stays 3D
    assert "2D slice Dice" in capsys.readouterr().out
