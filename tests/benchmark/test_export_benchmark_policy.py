"""``export`` and ``benchmark`` follow the output policy; export failures go to stderr
(issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuse4seg.cli.main import main
from fuse4seg.data import write_phantom_dataset


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_phantom_dataset(root, cases=2, shape=(24, 24, 16), seed=5)
    return root


def _brats_fuse(inp: Path, out: Path, *extra: str) -> int:
    args = ["export", "brats-fuse", "-i", str(inp), "-o", str(out), "--rule", "average"]
    return main([*args, "--modalities", "t1ce", "flair", "--step", "8", *extra])


@pytest.mark.parametrize(
    ("command", "where"),
    [
        (["export", "brats-fuse", "--rule", "average", "-i"], "in"),
        (["export", "nnunet", "-d"], "in"),
        (["benchmark", "seg", "-d"], "in"),
        (["benchmark", "fusion", "-i"], "in"),
        (["export", "nnunet", "-d"], "holds"),
        (["benchmark", "seg", "-d"], "holds"),
    ],
)
def test_output_inside_or_holding_the_input_is_refused(raw, tmp_path, capsys, command, where):
    out = raw / "Dataset001_X" if where == "in" else raw.parent
    rc = main([*command, str(raw), "-o", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {out}: ") and err.count("\n") == 1, err
    assert "input folder" in err or "holds the input" in err
    assert not (raw / "Dataset001_X").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["export", "brats-fuse", "--rule", "average", "-i"],
        ["export", "nnunet", "-d"],
        ["benchmark", "seg", "-d"],
        ["benchmark", "fusion", "-i"],
    ],
)
def test_non_empty_output_needs_overwrite(raw, tmp_path, capsys, command):
    out = tmp_path / "Dataset002_Y"
    out.mkdir()
    (out / "old.txt").write_text("x")
    assert main([*command, str(raw), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {out}: output folder is not empty (old.txt); use --overwrite to " + (
        "replace its results\n" if command[0] == "benchmark" else "replace its files\n"
    )


def test_export_failed_lines_go_to_stderr(raw, tmp_path, capsys):
    import shutil

    local = tmp_path / "raw"
    shutil.copytree(raw, local)
    (local / "Phantom_001" / "Phantom_001_flair.nii.gz").write_bytes(b"corrupt")
    out = tmp_path / "bf"
    assert _brats_fuse(local, out) == 2
    captured = capsys.readouterr()
    assert "FAILED" not in captured.out
    assert "FAILED Phantom_001: " in captured.err
    # the good case was exported; a second run needs --overwrite
    assert _brats_fuse(local, out) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert _brats_fuse(local, out, "--overwrite") == 2  # still one bad case
