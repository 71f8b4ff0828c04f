"""``Predictor`` and ``fuse4seg predict``: geometry, label conventions, TTA, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from fuse4seg.cli.main import main
from fuse4seg.data import discover_cases
from fuse4seg.data.preprocess import brain_mask, normalise_volume
from fuse4seg.inference import Predictor, output_paths, write_prediction
from fuse4seg.models.model_file import save_model_file


def _assert_same_geometry(out: Path, ref: Path) -> nib.Nifti1Image:
    img, ref_img = nib.load(out), nib.load(ref)
    assert img.shape[:3] == ref_img.shape
    np.testing.assert_array_equal(img.affine, ref_img.affine)
    for key in ("qform_code", "sform_code"):
        assert int(img.header[key]) == int(ref_img.header[key]), key
    np.testing.assert_allclose(img.header.get_zooms()[:3], ref_img.header.get_zooms()[:3])
    return img


def _no_temporaries(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]


def test_threshold_model_matches_hand_computation(phantom_root, make_threshold_model):
    case = discover_cases(phantom_root / "Phantom_000")[0]
    pred = Predictor(make_threshold_model(), device="cpu", batch_size=5).predict_case(case)
    images = [nib.load(case.files[m]).get_fdata(dtype=np.float32) for m in ("t1ce", "flair")]
    mask = brain_mask(images)
    fused = (normalise_volume(images[0], mask)[0] + normalise_volume(images[1], mask)[0]) / 2
    expect = np.digitize(fused, [0.2, 0.3, 0.4]).astype(np.uint8)
    no_brain = ~mask.any(axis=(0, 1))
    expect[:, :, no_brain] = 0
    fused[:, :, no_brain] = 0
    assert pred.seg.dtype == np.uint8 and pred.seg.shape == mask.shape
    near = np.abs(fused[..., None] - np.array([0.2, 0.3, 0.4])).min(-1) < 1e-5
    assert np.array_equal(pred.seg[~near], expect[~near])
    np.testing.assert_allclose(pred.fused, fused, atol=1e-6)
    assert set(np.unique(pred.seg)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(pred.seg_in_file_convention == 4, pred.seg == 3)
    dice = pred.dice()
    assert set(dice) == {"WT", "TC", "ET", "NCR", "ED"}
    assert all(0.0 <= v <= 1.0 for v in dice.values())


def test_tta_and_scale_on_a_pointwise_model(phantom_root, make_threshold_model):
    # A pointwise model is flip-equivariant: TTA must give the same probabilities.
    case = phantom_root / "Phantom_001"
    plain = Predictor(make_threshold_model(), "cpu", keep_probabilities=True).predict_case(case)
    tta = Predictor(make_threshold_model(), "cpu", tta=True, keep_probabilities=True).predict_case(
        case
    )
    np.testing.assert_allclose(tta.probabilities, plain.probabilities, atol=1e-6)
    probs = plain.probabilities
    assert probs.shape == (*plain.seg.shape, 4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(-1), plain.seg)
    # Odd in-plane sizes (40 x 36 here is even; 0.7 gives 28 x 25) come back at full size.
    for scale in (0.5, 0.7):
        half = Predictor(make_threshold_model(scale=scale), "cpu").predict_case(case)
        assert half.seg.shape == plain.seg.shape and half.fused.shape == plain.fused.shape
        assert np.mean(half.seg == plain.seg) > 0.8


def test_write_prediction_and_probabilities(phantom_root, tmp_path, make_threshold_model):
    case = discover_cases(phantom_root / "Phantom_002")[0]
    model = make_threshold_model(fusion_rule=None)  # multichannel: no fused image
    pred = Predictor(model, "cpu", keep_probabilities=True).predict_case(case)
    assert pred.fused is None
    written = write_prediction(pred, tmp_path)
    paths = output_paths(case.case_id, tmp_path)
    assert written == [paths["prob"], paths["seg"]] and not paths["fused"].exists()
    seg = _assert_same_geometry(paths["seg"], case.files["t1ce"])
    assert seg.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(seg.dataobj), pred.seg_in_file_convention)
    prob = _assert_same_geometry(paths["prob"], case.files["t1ce"])
    assert prob.shape == (*pred.seg.shape, 4) and prob.get_data_dtype() == np.float32
    np.testing.assert_allclose(prob.get_fdata(), pred.probabilities, atol=1e-7)
    _no_temporaries(tmp_path)


@pytest.mark.realdata
def test_real_brats_cases(brats_dir, trained_model_file, tmp_path, capsys, make_threshold_model):
    # BraTS 2018 naming through the CLI with a trained tiny model: ET written as 4.
    case18 = brats_dir / "Brats18_2013_2_1"
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            "-m",
            str(trained_model_file),
            "-i",
            str(case18),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "32",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "Brats18_2013_2_1: Dice WT" in captured.out
    ref = case18 / "Brats18_2013_2_1_t1.nii.gz"
    seg = _assert_same_geometry(out / "Brats18_2013_2_1_seg.nii.gz", ref)
    assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1, 2, 4}
    fused = _assert_same_geometry(out / "Brats18_2013_2_1_fused.nii.gz", ref)
    assert fused.get_data_dtype() == np.float32
    f = fused.get_fdata()
    assert f.min() >= 0.0 and f.max() <= 1.0 and f.max() > 0.5
    args = json.loads((out / "predict_args.json").read_text())
    assert args["tta"] is False and args["modalities"] == ["t1ce", "flair"]
    _no_temporaries(out)

    # BraTS 2023 naming through the API with the threshold model: ET written as 3.
    case23 = discover_cases(brats_dir / "BraTS-GLI-00000-000")[0]
    pred = Predictor(make_threshold_model(scale=0.5), "cpu", batch_size=32).predict_case(case23)
    assert 3 in pred.seg  # the model does predict ET here
    write_prediction(pred, tmp_path / "out23")
    seg23 = _assert_same_geometry(
        tmp_path / "out23" / "BraTS-GLI-00000-000_seg.nii.gz", case23.files["t1ce"]
    )
    values = set(np.unique(np.asanyarray(seg23.dataobj)).tolist())
    assert 3 in values and values <= {0, 1, 2, 3}
    np.testing.assert_array_equal(np.asanyarray(seg23.dataobj), pred.seg)  # canonical == 2023
    assert pred.dice() is not None

    # the fused volume is 0 outside the brain (every modality 0), kept there on request
    from fuse4seg.data.preprocess import brain_mask

    loaded = [nib.load(case23.files[m]).get_fdata() for m in ("t1ce", "flair")]
    outside = ~brain_mask(loaded)
    assert outside.any() and not pred.fused[outside].any()
    model = make_threshold_model(scale=0.5)
    raw = Predictor(model, "cpu", batch_size=32, mask_fused=False).predict_case(case23)
    np.testing.assert_array_equal(raw.fused[~outside], pred.fused[~outside])
    assert raw.fused[outside].any()  # this model's fused image is not 0 there by itself

    # nnU-Net naming and the compact fused volume: <case>.nii.gz, uint8 with slope 1/255
    written = write_prediction(pred, tmp_path / "nn", naming="nnunet", fused_dtype="uint8")
    assert sorted(p.name for p in written) == [
        "BraTS-GLI-00000-000.nii.gz",
        "BraTS-GLI-00000-000_fused.nii.gz",
    ]
    seg_nn = _assert_same_geometry(written[-1], case23.files["t1ce"])
    np.testing.assert_array_equal(np.asanyarray(seg_nn.dataobj), pred.seg)
    small = nib.load(written[0])
    assert small.get_data_dtype() == np.uint8
    assert np.abs(small.get_fdata() - pred.fused).max() <= 0.5 / 255 + 1e-6


def _copy_case(src: Path, root: Path, new_id: str) -> Path:
    folder = root / new_id
    folder.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, folder / f.name.replace(src.name, new_id))
    return folder


def _resave(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    ref = nib.load(path)
    nib.save(nib.Nifti1Image(data, ref.affine if affine is None else affine), path)


def test_bad_cases_fail_alone_and_leave_no_file(phantom_root, tmp_path, capsys):
    good = phantom_root / "Phantom_000"
    root = tmp_path / "cases"
    _copy_case(good, root, "Good")
    bad = {
        name: _copy_case(good, root, name)
        for name in ("Missing", "Shape", "Affine", "Corrupt", "Dims", "NaN", "Zero")
    }
    (bad["Missing"] / "Missing_flair.nii.gz").unlink()
    _resave(bad["Shape"] / "Shape_flair.nii.gz", np.ones((40, 36, 15), np.int16))
    img = nib.load(bad["Affine"] / "Affine_flair.nii.gz")
    shifted = img.affine.copy()
    shifted[0, 3] += 5
    _resave(bad["Affine"] / "Affine_flair.nii.gz", np.asanyarray(img.dataobj), shifted)
    corrupt = bad["Corrupt"] / "Corrupt_flair.nii.gz"
    corrupt.write_bytes(corrupt.read_bytes()[:400])
    _resave(bad["Dims"] / "Dims_t1ce.nii.gz", np.ones((40, 36, 16, 2), np.int16))
    nan = nib.load(bad["NaN"] / "NaN_flair.nii.gz").get_fdata(dtype=np.float32)
    nan[5, 5, 5] = np.nan
    _resave(bad["NaN"] / "NaN_flair.nii.gz", nan)
    _resave(bad["Zero"] / "Zero_t1ce.nii.gz", np.zeros((40, 36, 16), np.int16))
    bad_seg = _copy_case(good, root, "BadSeg")  # seg is optional: predicted, not scored
    _resave(bad_seg / "BadSeg_seg.nii.gz", np.full((40, 36, 16), 7, np.uint8))
    model_path = tmp_path / "model.pt"
    save_model_file(_average_rule_model(), model_path)
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            "-m",
            str(model_path),
            "-i",
            str(root),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2
    assert "note: BadSeg: seg not scored (" in captured.out and "Good: Dice WT" in captured.out
    failed = {ln.split(":")[0].split()[1]: ln for ln in err.splitlines() if ln.startswith("FAILED")}
    assert set(failed) == set(bad)
    expected = {
        "Missing": "missing flair",
        "Shape": "Shape_flair.nii.gz: shape (40, 36, 15) differs",
        "Affine": "Affine_flair.nii.gz: affine differs",
        "Corrupt": "Corrupt_flair.nii.gz: cannot read NIfTI",
        "Dims": "Dims_t1ce.nii.gz: expected a 3D volume",
        "NaN": "NaN_flair.nii.gz: 1 NaN/Inf voxels",
        "Zero": "Zero_t1ce.nii.gz: all-zero volume",
    }
    for name, text in expected.items():
        assert text in failed[name], failed[name]
    assert "2 cases done, 0 skipped, 7 failed" in err
    assert sorted(p.name for p in out.iterdir()) == [
        "BadSeg_fused.nii.gz",
        "BadSeg_seg.nii.gz",
        "Good_fused.nii.gz",
        "Good_seg.nii.gz",
        "predict_args.json",
    ]
    # A second run keeps finished outputs (skipped with a note) unless --overwrite.
    before = (out / "Good_seg.nii.gz").stat().st_mtime_ns
    for name in ("Missing", "BadSeg", "Shape", "Affine", "Corrupt", "Dims", "NaN", "Zero"):
        shutil.rmtree(root / name)
    assert (
        main(
            [
                "predict",
                "-m",
                str(model_path),
                "-i",
                str(root),
                "-o",
                str(out),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "skipped Good:" in capsys.readouterr().out
    assert (out / "Good_seg.nii.gz").stat().st_mtime_ns == before
    assert (
        main(
            [
                "predict",
                "-m",
                str(model_path),
                "-i",
                str(root),
                "-o",
                str(out),
                "--device",
                "cpu",
                "--no-progress",
                "--overwrite",
            ]
        )
        == 0
    )
    assert (out / "Good_seg.nii.gz").stat().st_mtime_ns != before


def _average_rule_model(modalities=("t1ce", "flair")):
    """A saveable model: average-rule fusion + tiny SegNet (random weights)."""
    from fuse4seg.models import create_seg_net
    from fuse4seg.models.model_file import FusionSegModel

    torch.manual_seed(0)
    return FusionSegModel(
        "average",
        list(modalities),
        create_seg_net("tiny", 1),
        fusion_rule="average",
        seg_preset="tiny",
    )


def test_model_problems_are_one_line_errors(phantom_root, tmp_path, capsys):
    partial = tmp_path / "cases" / "Two"
    partial.mkdir(parents=True)
    for m in ("t1ce", "flair"):
        shutil.copy(
            phantom_root / "Phantom_000" / f"Phantom_000_{m}.nii.gz", partial / f"Two_{m}.nii.gz"
        )
    other = tmp_path / "t1t2.pt"
    save_model_file(_average_rule_model(("t1", "t2")), other)
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            "-m",
            str(other),
            "-i",
            str(partial),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "FAILED Two: " in err and "model needs modalities t1, t2; missing t1, t2" in err
    assert not [p for p in out.iterdir() if p.suffix == ".gz"]
    rc = main(
        [
            "predict",
            "-m",
            str(tmp_path / "junk.pt"),
            "-i",
            str(partial),
            "-o",
            str(tmp_path / "o2"),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {tmp_path / 'junk.pt'}: ")
    assert err.count("\n") == 1 and not (tmp_path / "o2").exists()


def test_predict_slices_resamples_like_prepare(make_threshold_model):
    from fuse4seg.data.preprocess import resample_slices

    x = torch.rand(3, 2, 37, 45, generator=torch.Generator().manual_seed(0))
    for scale in (0.5, 0.75):
        pred = Predictor(make_threshold_model(scale=scale), "cpu")
        fused, probs = pred.predict_slices(x)
        assert fused.shape == (3, 1, 37, 45) and probs.shape == (3, 4, 37, 45)
        arr = x.numpy()
        if scale == 0.5:  # block mean after zero padding to even sizes
            arr = np.pad(arr, ((0, 0), (0, 0), (0, 1), (0, 1)))
        small, _ = resample_slices(arr, None, scale)
        expect = torch.nn.functional.interpolate(
            torch.from_numpy(small).mean(1, keepdim=True),
            size=arr.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )[..., :37, :45]
        torch.testing.assert_close(fused, expect, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"expected slices \(N, 2, H, W\)"):
        pred.predict_slices(torch.rand(1, 3, 8, 8))


def test_write_failure_fails_that_case_only(phantom_root, tmp_path, capsys, monkeypatch):
    """Outputs are written on a background thread: a write error still fails only its case,
    in order, and the other cases' files are complete."""
    import fuse4seg.inference.writer as writer_module
    from fuse4seg.errors import InputError

    root = tmp_path / "cases"
    for name in ("A", "B", "C"):
        _copy_case(phantom_root / "Phantom_000", root, name)
    model_path = tmp_path / "model.pt"
    save_model_file(_average_rule_model(), model_path)
    real_write = writer_module.write_prediction

    def flaky_write(pred, out_dir, *options):
        if pred.case.case_id == "B":
            raise InputError(Path(out_dir) / "B_seg.nii.gz", "disk full (simulated)")
        return real_write(pred, out_dir, *options)

    monkeypatch.setattr(writer_module, "write_prediction", flaky_write)
    out = tmp_path / "out"
    args = ["predict", "-m", str(model_path), "-i", str(root), "-o", str(out)]
    rc = main([*args, "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "FAILED B: " in captured.err and "disk full (simulated)" in captured.err
    assert "2 cases done, 0 skipped, 1 failed" in captured.err
    assert captured.out.index("A: Dice") < captured.out.index("C: Dice")
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [
        "A_fused.nii.gz",
        "A_seg.nii.gz",
        "C_fused.nii.gz",
        "C_seg.nii.gz",
    ]
    _no_temporaries(out)


def test_label_warning_flags_predictions_of_nearly_one_class():
    from fuse4seg.inference.predictor import label_warning

    brain = np.zeros((10, 10, 4), bool)
    brain[1:9, 1:9] = True  # 256 voxels
    seg = np.zeros(brain.shape, np.uint8)
    assert "no tumour predicted" in label_warning(seg, brain)
    assert "no brain voxels" in label_warning(seg, np.zeros_like(brain))
    seg[2:5, 2:5] = 2  # 36 voxels of ED: 14 % of the brain, plausible
    assert label_warning(seg, brain) is None
    seg[brain] = 2
    seg[1, 1] = 3
    assert label_warning(seg, brain).startswith("ED covers 98% of the brain")
    seg[~brain] = 3  # labels outside the brain do not count
    assert label_warning(seg, brain).startswith("ED covers")


def test_predict_warns_when_a_model_labels_the_whole_brain(phantom_root, tmp_path, capsys):
    model = _average_rule_model()
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert head.out_channels == 4
    with torch.no_grad():  # constant logits: class 3 (ET) everywhere
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0]))
    model_path = tmp_path / "model.pt"
    save_model_file(model.eval(), model_path)
    out = tmp_path / "out"
    args = ["predict", "-m", str(model_path), "-i", str(phantom_root / "Phantom_000"), "-o"]
    assert main([*args, str(out), "--device", "cpu", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: Phantom_000: ET covers 100% of the brain" in err


def test_predict_folder_python_api_writes_records_and_skips_finished_cases(phantom_root, tmp_path):
    """`predict_folder` (the case loop behind `fuse4seg predict`) as a typed Python call."""
    from fuse4seg import FolderOptions, predict_folder
    from fuse4seg.errors import InputError

    root = tmp_path / "cases"
    for name in ("A", "B"):
        _copy_case(phantom_root / "Phantom_000", root, name)
    model_path = tmp_path / "model.pt"
    save_model_file(_average_rule_model(), model_path)
    out = tmp_path / "out"
    said: list[str] = []
    opts = FolderOptions(device="cpu", naming="nnunet", fused_dtype="uint8", progress=False)
    report = predict_folder(model_path, root, out, opts, say=said.append, warn=said.append)
    assert report.done == ["A", "B"] and not report.failed and report.exit_code == 0
    assert [line.split(":")[0] for line in said if "Dice" in line] == ["A", "B"]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [
        "A.nii.gz", "A_fused.nii.gz", "B.nii.gz", "B_fused.nii.gz",
    ]  # fmt: skip
    assert nib.load(str(out / "A_fused.nii.gz")).get_data_dtype() == np.uint8
    record = json.loads((out / "predict_args.json").read_text())
    assert record["naming"] == "nnunet" and record["model"] == str(model_path)
    assert record["outputs"]["A"]["status"] == "done" and record["method"] is not None
    # a second call skips what this model finished
    again = predict_folder(model_path, root, out, opts, say=said.append, warn=said.append)
    assert again.done == [] and [name for name, _ in again.skipped] == ["A", "B"]
    with pytest.raises(InputError, match="batch-size must be >= 1, got 0"):
        predict_folder(model_path, root, tmp_path / "o2", FolderOptions(batch_size=0))
