"""The output policy (fuse4seg.io.output_policy) and the safety of atomic writes."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fuse4seg.cli import main as cli_main
from fuse4seg.errors import InputError, OutputError
from fuse4seg.io.atomic import (
    atomic_path,
    current_umask,
    remove_stale_temporaries,
    save_json_atomic,
    save_torch_atomic,
)
from fuse4seg.io.output_policy import (
    check_not_an_input,
    check_output_location,
    claim_output_folder,
    file_sha256,
    open_item_folder,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "in" / "case").mkdir(parents=True)
    (tmp_path / "in" / "case" / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "model.pt").write_bytes(b"m")
    return tmp_path


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ("in", "is the input folder"),
        ("in/case", "is inside the input folder"),
        ("in/new/deeper", "is inside the input folder"),
        ("in/case/a.nii.gz", "is inside the input folder"),
        ("model.pt", "is the input file"),
        ("in/./case/../case", "is inside the input folder"),
    ],
)
def test_output_in_or_equal_to_an_input_is_refused(tree, output, problem):
    with pytest.raises(InputError, match=problem) as info:
        check_output_location(tree / output, [tree / "in", tree / "model.pt"])
    assert str(info.value).startswith(f"{tree / output}: ")


def test_outputs_beside_inputs_are_allowed(tree):
    check_output_location(tree / "out", [tree / "in", tree / "model.pt", None])
    check_output_location(tree / "in-preds", [tree / "in"])  # a prefix is not a parent
    # an output folder above the inputs is fine unless the command may replace its contents
    check_output_location(tree, [tree / "in"])
    with pytest.raises(InputError, match="holds the input"):
        check_output_location(tree, [tree / "in"], replaces_contents=True)


def test_symlinked_output_into_an_input_is_refused(tree):
    (tree / "link").symlink_to(tree / "in" / "case")
    with pytest.raises(InputError, match="is inside the input folder"):
        check_output_location(tree / "link", [tree / "in"])


def test_check_not_an_input(tree):
    check_not_an_input(tree / "out" / "a.nii.gz", [tree / "in" / "case" / "a.nii.gz", None])
    with pytest.raises(InputError, match="would replace the input file"):
        check_not_an_input(tree / "in" / "case" / "a.nii.gz", [tree / "in/case/a.nii.gz"])


def test_claim_output_folder_refuses_non_empty_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    assert claim_output_folder(out, overwrite=False) == out and out.is_dir()
    claim_output_folder(out, overwrite=False)  # empty: fine
    (out / "old.txt").write_text("x")
    with pytest.raises(InputError, match=r"not empty \(old.txt\); use --overwrite"):
        claim_output_folder(out, overwrite=False)
    claim_output_folder(out, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        claim_output_folder(tmp_path / "file", overwrite=True)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".tmp-case_seg-p{dead}-abcd_123.nii.gz"
    live = tmp_path / f".tmp-case_seg-p{os.getpid()}-abcd_123.nii.gz"
    other = [tmp_path / ".tmp-notours.txt", tmp_path / "keep.nii.gz", tmp_path / ".hidden"]
    for p in (stale, live, *other):
        p.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    nested = tmp_path / "sub" / f".tmp-image-p{dead}-zzzzzzzz.npy"
    nested.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and all(p.exists() for p in other) and nested.exists()
    assert remove_stale_temporaries(tmp_path, recursive=True) == [nested]
    # opening an output folder cleans it
    stale.write_bytes(b"x")
    open_item_folder(tmp_path)
    assert not stale.exists() and live.exists()


def test_atomic_temporary_names_carry_the_pid(tmp_path):
    with atomic_path(tmp_path / "x.nii.gz") as tmp:
        assert tmp.name.startswith(f".tmp-x.nii-p{os.getpid()}-")
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"1")


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_outputs_respect_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        save_json_atomic({"a": 1}, tmp_path / "x.json")
        save_torch_atomic({"a": 1}, tmp_path / "x.pt")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what an ordinary open() gives
    finally:
        os.umask(old)
    for name in ("x.json", "x.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name
    assert stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~mask


def test_disk_full_is_an_output_error_naming_the_file(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OutputError, match="no space left on device") as info:
        save_json_atomic({"a": 1}, target)
    assert str(info.value).startswith(f"{target}: not written")
    monkeypatch.undo()
    assert target.read_text() == "old"  # nothing half-written, old file kept
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_torch_write_failure_is_an_output_error(tmp_path, monkeypatch):
    import torch

    def failing_save(obj, f, *args, **kwargs):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:595] . PytorchStreamWriter "
            "failed writing file data/0: file write failed"
        )

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OutputError, match="file write failed"):
        save_torch_atomic({"a": 1}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_read_only_folder_is_an_output_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not written"):
            save_json_atomic({}, ro / "x.json")
        with pytest.raises(OutputError, match="not writable"):
            open_item_folder(ro)
    finally:
        ro.chmod(0o700)


def test_file_sha256(tmp_path):
    import hashlib

    (tmp_path / "m").write_bytes(b"abc" * 1000)
    assert file_sha256(tmp_path / "m", chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()


def _fake_command(monkeypatch, body):
    class Module:
        HELP = "x"

        @staticmethod
        def add_arguments(parser):
            pass

        @staticmethod
        def run(args):
            return body()

    monkeypatch.setattr(cli_main, "_load", lambda command: Module)


def test_sigterm_exits_143_and_ctrl_c_130(monkeypatch, capsys):
    _fake_command(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM) or 0)
    assert cli_main.main(["phantom"]) == 143
    assert capsys.readouterr().err == "terminated\n"

    def interrupt():
        raise KeyboardInterrupt

    _fake_command(monkeypatch, interrupt)
    assert cli_main.main(["phantom"]) == 130


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/x/last.pt"), "/x/last.pt: No space"),
        (MemoryError(), "out of memory"),
    ],
)
def test_resource_errors_are_one_line(monkeypatch, capsys, exc, text):
    def fail():
        raise exc

    _fake_command(monkeypatch, fail)
    assert cli_main.main(["phantom"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and text in err and err.count("\n") == 1


def test_other_errors_keep_their_traceback(monkeypatch):
    def fail():
        raise OSError(errno.EIO, "I/O error")

    _fake_command(monkeypatch, fail)
    with pytest.raises(OSError):
        cli_main.main(["phantom"])
