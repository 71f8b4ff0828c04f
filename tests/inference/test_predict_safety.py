"""``fuse4seg predict`` never touches its inputs, and no bad input stops the batch (issue 14)."""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from fuse4seg.cli.main import main
from fuse4seg.errors import InputWarning
from fuse4seg.models.model_file import FusionSegModel, save_model_file


def _model(seed: int = 0, modalities=("t1ce", "flair")) -> FusionSegModel:
    from fuse4seg.models import create_seg_net

    torch.manual_seed(seed)
    return FusionSegModel(
        "average",
        list(modalities),
        create_seg_net("tiny", 1),
        fusion_rule="average",
        seg_preset="tiny",
        preprocessing={"scale": 1.0, "percentiles": [0.5, 99.5]},
    )


@pytest.fixture
def cases(phantom_root: Path, tmp_path: Path) -> Path:
    """Three case folders A, B, C (copies of one phantom case, BraTS 2021 naming)."""
    root = tmp_path / "cases"
    for name in ("A", "B", "C"):
        folder = root / name
        folder.mkdir(parents=True)
        for f in (phantom_root / "Phantom_000").iterdir():
            shutil.copy(f, folder / f.name.replace("Phantom_000", name))
    return root


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    save_model_file(_model(), path)
    return path


def _predict(model: Path, inp: Path, out: Path, *extra: str) -> int:
    args = ["predict", "-m", str(model), "-i", str(inp), "-o", str(out)]
    return main([*args, "--device", "cpu", "--no-progress", *extra])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("where", ["cases/B", "cases", "cases/B/preds"])
def test_output_inside_the_input_is_refused(cases, model_file, capsys, where, overwrite):
    (cases / "B" / "B_seg.nii.gz").unlink()  # a case without seg: no name may be taken
    before = _snapshot(cases)
    out = cases.parent / where
    rc = _predict(model_file, cases, out, *(["--overwrite"] if overwrite else []))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"error: {out}: is ") and err.count("\n") == 1, err
    assert "input folder" in err and "Traceback" not in err
    assert _snapshot(cases) == before  # nothing written, nothing replaced


def test_output_equal_to_the_model_file_is_refused(cases, model_file, capsys):
    assert _predict(model_file, cases, model_file, "--overwrite") == 2
    assert "is the input file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        ("nan_weight", "NaN/Inf values"),
        ("inf_weight", "NaN/Inf values"),
        ("nan_scale", "normalisation.scale is nan"),
        ("nan_percentile", "normalisation.percentiles[1] is nan"),
        ("no_modalities", "lists no input modalities"),
    ],
)
def test_bad_model_values_are_refused_at_load(cases, tmp_path, capsys, corrupt, problem):
    path = tmp_path / f"{corrupt}.pt"
    save_model_file(_model(), path)
    data = torch.load(path, weights_only=True)
    state = data["segmentation"]["state_dict"]
    first = next(k for k, v in state.items() if v.is_floating_point())
    if corrupt == "nan_weight":
        state[first].view(-1)[0] = float("nan")
    elif corrupt == "inf_weight":
        state[first].view(-1)[-1] = float("inf")
    elif corrupt == "nan_scale":
        data["normalisation"]["scale"] = float("nan")
    elif corrupt == "nan_percentile":
        data["normalisation"]["percentiles"] = [0.5, float("nan")]
    else:
        data["modalities"] = []
    torch.save(data, path)
    out = tmp_path / "out"
    assert _predict(path, cases, out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and problem in err and err.count("\n") == 1, err
    assert not out.exists()  # no predict_args.json left behind


def _nifti_header_only(path: Path, shape: tuple[int, ...]) -> None:
    """A NIfTI whose header declares ``shape`` but holds (almost) no voxel data."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape(shape)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\x00" * 4 + b"\x00" * 64
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def test_huge_nifti_headers_fail_that_case_only(cases, model_file, tmp_path, capsys):
    a = cases / "A" / "A_flair.nii.gz"
    a.unlink()
    _nifti_header_only(a, (3000, 3000, 3000))  # 27e9 voxels claimed, 0.1 kB file
    b = cases / "B" / "B_t1ce.nii.gz"
    b.unlink()
    _nifti_header_only(b.with_name("B_t1ce.nii"), (40, 36, 16))  # fits the limit, truncated
    out = tmp_path / "out"
    assert _predict(model_file, cases, out) == 2
    err = capsys.readouterr().err
    failed = {ln.split()[1].rstrip(":"): ln for ln in err.splitlines() if ln.startswith("FAILED")}
    assert set(failed) == {"A", "B"}
    assert "3000x3000x3000 = 27000000000 voxels, more than the limit" in failed["A"]
    assert "B_t1ce.nii: header declares 40x36x16 voxels" in failed["B"]
    assert "truncated or corrupt" in failed["B"]
    assert "1 cases done, 0 skipped, 2 failed" in err
    assert (out / "C_seg.nii.gz").is_file()


def test_voxel_limit_is_configurable(cases, monkeypatch):
    import fuse4seg.data.loading as loading
    from fuse4seg.errors import InputError

    monkeypatch.setattr(loading, "MAX_VOXELS", 1000)
    with pytest.raises(InputError, match="more than the limit 1000"):
        loading.read_nifti(cases / "A" / "A_t1.nii.gz")


def test_memory_error_fails_that_case_and_the_batch_goes_on(
    cases, model_file, tmp_path, capsys, monkeypatch
):
    from fuse4seg.inference.predictor import Predictor

    real = Predictor.predict_case

    def predict_case(self, case):
        if case.case_id == "B":
            raise MemoryError
        return real(self, case)

    monkeypatch.setattr(Predictor, "predict_case", predict_case)
    out = tmp_path / "out"
    assert _predict(model_file, cases, out) == 2
    err = capsys.readouterr().err
    assert "FAILED B: " in err and "out of memory" in err and "Traceback" not in err
    assert "2 cases done, 0 skipped, 1 failed" in err
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["A_seg.nii.gz", "C_seg.nii.gz"]


def test_disk_full_stops_the_batch_with_one_line_and_no_partial_file(
    cases, model_file, tmp_path, capsys, monkeypatch
):
    import fuse4seg.data.loading as loading

    real_save = nib.save
    calls = {"n": 0}

    def save(img, filename):
        calls["n"] += 1
        if calls["n"] > 2:  # case A's two files fit, then the disk is full
            Path(filename).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(img, filename)

    monkeypatch.setattr(loading.nib, "save", save)
    out = tmp_path / "out"
    assert _predict(model_file, cases, out) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "FAILED B: " in err and "no space left on device" in err
    # C was already predicted while B was written (one case in flight): its write fails too
    assert "stopped: " in err and "case(s) not run" in err
    assert "1 cases done" in err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["A_fused.nii.gz", "A_seg.nii.gz", "predict_args.json"]  # no .tmp-*, no B
    record = json.loads((out / "predict_args.json").read_text())
    assert record["outputs"]["A"]["status"] == "done"
    assert record["outputs"]["B"]["status"] == "writing"  # never finished: redone next time


def test_ambiguous_case_folders_fail_alone(cases, model_file, tmp_path, capsys):
    a = cases / "A"
    shutil.copy(a / "A_flair.nii.gz", a / "A_flair.nii")  # X_flair.nii beside X_flair.nii.gz
    shutil.copy(cases / "C" / "C_t2.nii.gz", cases / "B" / "C_t2.nii.gz")  # stray file
    out = tmp_path / "out"
    assert _predict(model_file, cases, out) == 2
    err = capsys.readouterr().err
    assert "FAILED A: " in err and "two files for flair" in err
    assert "FAILED B: " in err and "files of several cases" in err
    assert "1 cases done, 0 skipped, 2 failed" in err
    assert (out / "C_seg.nii.gz").is_file()


def test_prediction_never_replaces_an_input_file(cases, model_file, tmp_path, capsys):
    # case folder B is a symbolic link to the output folder: B's outputs would be its inputs
    out = tmp_path / "out"
    (cases / "B").rename(out)
    (cases / "B").symlink_to(out)
    before = _snapshot(out)
    assert _predict(model_file, cases, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert f"error: {out}: is the input folder {cases / 'B'}" in err
    assert _snapshot(out) == before


def test_rerun_with_another_model_is_refused_unless_overwrite(cases, model_file, tmp_path, capsys):
    from fuse4seg.io.output_policy import file_sha256

    out = tmp_path / "out"
    assert _predict(model_file, cases, out) == 0
    sha_a = file_sha256(model_file)
    record = json.loads((out / "predict_args.json").read_text())
    assert record["model_sha256"] == sha_a
    assert {k: v["model_sha256"] for k, v in record["outputs"].items()} == dict.fromkeys(
        "ABC", sha_a
    )
    assert all(v["status"] == "done" for v in record["outputs"].values())
    assert sorted(record["outputs"]["A"]["files"]) == ["A_fused.nii.gz", "A_seg.nii.gz"]
    capsys.readouterr()

    other = tmp_path / "other.pt"
    save_model_file(_model(seed=1), other)
    before = _snapshot(out)
    assert _predict(other, cases, out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: holds outputs of another model for 3 case(s)")
    assert f"made by {model_file}" in err and "--overwrite" in err and err.count("\n") == 1
    assert _snapshot(out) == before  # record and outputs untouched

    # the same model again: finished cases are skipped, the record still names model A
    assert _predict(model_file, cases, out) == 0
    assert capsys.readouterr().out.count("skipped ") == 3
    assert _snapshot(out)["A_seg.nii.gz"] == before["A_seg.nii.gz"]

    # --overwrite replaces every case; the record says the new model made each output
    (cases / "C" / "C_t1ce.nii.gz").write_bytes(b"corrupt")  # C fails: keeps model A's files
    assert _predict(other, cases, out, "--overwrite") == 2
    record = json.loads((out / "predict_args.json").read_text())
    sha_b = file_sha256(other)
    assert record["model_sha256"] == sha_b and record["model"] == str(other)
    made = {k: v["model_sha256"] for k, v in record["outputs"].items()}
    assert made == {"A": sha_b, "B": sha_b, "C": sha_a}


def test_outputs_without_a_record_are_not_mixed(cases, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "A_seg.nii.gz").write_bytes(b"made elsewhere")
    assert _predict(model_file, cases, out) == 2
    assert "no record of the model that made it" in capsys.readouterr().err
    assert (out / "A_seg.nii.gz").read_bytes() == b"made elsewhere"


def test_stale_temporaries_are_removed_on_the_next_run(cases, model_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = out / f".tmp-A_seg.nii-p{proc.pid}-k2j4h5g6.nii.gz"
    stale.write_bytes(b"half")
    foreign = out / ".tmp-notes.txt"
    foreign.write_text("not ours")
    assert _predict(model_file, cases, out) == 0
    assert not stale.exists() and foreign.exists()


def test_constant_modality_gives_a_warning(cases):
    from fuse4seg.cli.main import _one_line_warning
    from fuse4seg.data import discover_cases, load_case

    path = cases / "A" / "A_flair.nii.gz"
    ref = nib.load(path)
    nib.save(nib.Nifti1Image(np.full(ref.shape, 7, np.int16), ref.affine), path)
    with pytest.warns(InputWarning, match="constant volume"):
        load_case(discover_cases(cases / "A")[0], ("t1ce", "flair"))
    text = _one_line_warning(InputWarning(f"{path}: constant"), InputWarning, "x.py", 1)
    assert text == f"warning: {path}: constant\n"


def test_output_files_respect_the_umask(cases, model_file, tmp_path):
    out = tmp_path / "out"
    old = os.umask(0o027)
    try:
        assert _predict(model_file, cases / "A", out) == 0
    finally:
        os.umask(old)
    for p in out.iterdir():
        assert (p.stat().st_mode & 0o777) == 0o640, p.name
