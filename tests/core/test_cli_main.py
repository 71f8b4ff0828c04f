"""The CLI entry point: help, unknown commands, error handling and exit codes."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from fuse4seg.cli import main as cli_main
from fuse4seg.errors import InputError


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli_main.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_every_registered_command_has_a_module_with_the_protocol():
    for name in cli_main.COMMANDS:
        module = cli_main._load(name)
        assert isinstance(module.HELP, str) and module.HELP
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        assert callable(module.run)


def test_user_error_is_one_line_exit_2_without_traceback(monkeypatch, capsys):
    class FakeModule:
        HELP = "fake"

        @staticmethod
        def add_arguments(parser):
            parser.add_argument("--x")

        @staticmethod
        def run(args):
            raise InputError("/some/file.nii.gz", "contains NaN voxels")

    monkeypatch.setitem(cli_main.COMMANDS, "fake", ("fake", "fake command"))
    monkeypatch.setattr(cli_main, "_load", lambda name: FakeModule)
    assert cli_main.main(["fake"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: /some/file.nii.gz: contains NaN voxels"
    assert "Traceback" not in err


def test_console_module_runs_as_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "fuse4seg", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("fuse4seg ")


def test_unknown_command_is_an_argparse_error():
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["no-such-command"])
    assert exc.value.code == 2
