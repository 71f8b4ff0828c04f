"""``fuse4seg evaluate-seg`` checks the geometry of each prediction (issue 14, row 3)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fuse4seg.cli.main import main

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), path)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    seg = np.zeros((12, 10, 8), np.uint8)
    seg[3:7, 3:6, 2:5] = 2
    seg[4:6, 4:5, 3:4] = 4
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for case in ("A", "B", "C", "D"):
        _save(ref / case / f"{case}_seg.nii.gz", seg)
    _save(pred / "A_seg.nii.gz", seg)
    flipped = AFFINE.copy()
    flipped[0, 0], flipped[0, 3] = -1.0, 11.0  # x flipped: same voxels, mirrored in space
    _save(pred / "B_seg.nii.gz", seg, flipped)
    shifted = AFFINE.copy()
    shifted[:3, 3] = [2.0, -1.0, 0.5]
    _save(pred / "C_seg.nii.gz", seg, shifted)
    tiny = AFFINE.copy()
    tiny[0, 3] = 5e-4  # within the loading tolerance (1e-3)
    _save(pred / "D_seg.nii.gz", seg, tiny)
    return ref, pred


def test_prediction_with_another_affine_fails_that_case(folders, capsys):
    ref, pred = folders
    rc = main(["evaluate-seg", "--pred", str(pred), "--ref", str(ref)])
    captured = capsys.readouterr()
    assert rc == 2
    failed = sorted({ln for ln in captured.err.splitlines() if ln.startswith("FAILED")})
    assert [ln.split(":")[0] for ln in failed] == ["FAILED B", "FAILED C"]
    assert (
        f"{pred / 'B_seg.nii.gz'}: affine differs from {ref / 'B' / 'B_seg.nii.gz'}" in (failed[0])
    )
    assert "by up to 11 (tolerance 0.001)" in failed[0]
    assert "by up to 2 (tolerance 0.001)" in failed[1]
    assert "2 case(s) scored, 2 failed" in captured.out
    assert "Traceback" not in captured.err


def test_csv_inside_an_input_folder_is_refused(folders, capsys):
    ref, pred = folders
    out = pred / "scores.csv"
    assert main(["evaluate-seg", "--pred", str(pred), "--ref", str(ref), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: is inside the input folder {pred}")
    assert not out.exists()


def test_ambiguous_reference_folder_fails_alone(folders, capsys):
    ref, pred = folders
    _save(ref / "A" / "A_seg.nii", np.zeros((12, 10, 8)))  # A_seg.nii beside A_seg.nii.gz
    rc = main(["evaluate-seg", "--pred", str(pred), "--ref", str(ref)])
    captured = capsys.readouterr()
    assert rc == 2
    assert "FAILED A: " in captured.err and "two files for seg" in captured.err
    assert "1 case(s) scored, 3 failed" in captured.out


def test_evaluate_fusion_csv_inside_an_input_folder_is_refused(tmp_path, capsys):
    for name in ("a", "b", "f"):
        (tmp_path / name).mkdir()
    out = tmp_path / "f" / "scores.csv"
    args = ["evaluate-fusion", "-a", str(tmp_path / "a"), "-b", str(tmp_path / "b")]
    assert main([*args, "-f", str(tmp_path / "f"), "-o", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {out}: is inside the input folder")
