"""``prepare`` and ``phantom`` follow the output policy; one bad case folder fails alone
(issue 14)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from fuse4seg.cli.main import main
from fuse4seg.data import discover_cases, write_phantom_dataset
from fuse4seg.errors import InputError

SHAPE = ["24", "24", "16"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_phantom_dataset(root, cases=3, shape=(24, 24, 16), seed=4)
    return root


def _prepare(inp: Path, out: Path, *extra: str) -> int:
    args = ["prepare", "-i", str(inp), "-o", str(out), "--size", "24", "--no-progress"]
    return main([*args, "--split", "1", "0", "0", *extra])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["raw", "raw/Phantom_000", "raw/new/store", "."])
@pytest.mark.parametrize("overwrite", [False, True])
def test_prepare_output_inside_or_holding_the_input_is_refused(
    raw, tmp_path, capsys, where, overwrite
):
    local = tmp_path / "raw"
    shutil.copytree(raw, local)
    before = _snapshot(local)
    out = tmp_path / where
    assert _prepare(local, out, *(["--overwrite"] if overwrite else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert ("input folder" in err) or ("holds the input" in err)
    assert _snapshot(local) == before


def test_ambiguous_case_folders_fail_alone_in_prepare(raw, tmp_path, capsys):
    local = tmp_path / "raw"
    shutil.copytree(raw, local)
    a = local / "Phantom_000"
    shutil.copy(a / "Phantom_000_flair.nii.gz", a / "Phantom_000_flair.nii")
    shutil.copy(local / "Phantom_002" / "Phantom_002_t2.nii.gz", local / "Phantom_001")
    assert _prepare(local, tmp_path / "store") == 2
    captured = capsys.readouterr()
    assert "FAILED Phantom_000: " in captured.err and "two files for flair" in captured.err
    assert "FAILED Phantom_001: " in captured.err and "several cases" in captured.err
    assert "prepared 1 cases" in captured.out
    assert (tmp_path / "store" / "cases" / "Phantom_002" / "image.npy").is_file()


def test_discover_cases_without_problems_list_still_raises(raw, tmp_path):
    local = tmp_path / "raw"
    shutil.copytree(raw, local)
    shutil.copy(local / "Phantom_002" / "Phantom_002_t2.nii.gz", local / "Phantom_001")
    with pytest.raises(InputError, match="several cases"):
        discover_cases(local)
    problems: list[tuple[str, str]] = []
    assert [c.case_id for c in discover_cases(local, problems=problems)] == [
        "Phantom_000",
        "Phantom_002",
    ]
    assert [name for name, _ in problems] == ["Phantom_001"]
    # the same case id in two folders: both fail (which one is right is unknown)
    shutil.copytree(local / "Phantom_000", local / "copy")
    problems.clear()
    assert [c.case_id for c in discover_cases(local, problems=problems)] == ["Phantom_002"]
    assert sorted(name for name, _ in problems) == ["Phantom_000", "Phantom_001", "copy"]


def test_prepare_non_empty_folder_needs_overwrite_and_keeps_foreign_files(raw, tmp_path, capsys):
    out = tmp_path / "store"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _prepare(raw, out) == 2
    assert "not empty (notes.txt); use --overwrite" in capsys.readouterr().err
    assert _prepare(raw, out, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "manifest.json").is_file()


def test_prepare_disk_full_is_one_line(raw, tmp_path, capsys, monkeypatch):
    import numpy as np

    def full(fh, arr, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    out = tmp_path / "store"
    assert _prepare(raw, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "image.npy: not written: no space left" in err
    assert err.count("\n") == 1 and not (out / "manifest.json").exists()


def test_phantom_refuses_an_existing_dataset_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "ph"
    args = ["phantom", "-o", str(out), "--shape", *SHAPE, "--no-progress"]
    assert main([*args, "--cases", "3"]) == 0
    before = _snapshot(out)
    assert main([*args, "--cases", "2", "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: output folder is not empty (Phantom_000")
    assert _snapshot(out) == before
    # --overwrite replaces the dataset: no case of the old one is left to mix in
    assert main([*args, "--cases", "2", "--seed", "5", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Phantom_000", "Phantom_001"]
    assert (
        _snapshot(out)["Phantom_000/Phantom_000_t1.nii.gz"]
        != (before["Phantom_000/Phantom_000_t1.nii.gz"])
    )
    # anything that is not a phantom case is never deleted, even with --overwrite
    (out / "mine.txt").write_text("x")
    assert main([*args, "--cases", "2", "--overwrite"]) == 2
    assert "not phantom cases (mine.txt)" in capsys.readouterr().err
    assert (out / "mine.txt").exists() and (out / "Phantom_001").is_dir()
