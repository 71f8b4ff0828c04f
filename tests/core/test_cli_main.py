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


def test_threads_flag_on_every_torch_command_and_applied_before_run(monkeypatch, capsys):
    import torch

    for argv in (["predict"], ["fuse"], ["export", "nnunet"], ["benchmark", "seg"], ["train"]):
        parser = cli_main.build_parser(argv[0])
        sub = parser._subparsers._group_actions[0].choices[argv[0]]
        for name in argv[1:]:
            sub = next(
                a for a in sub._actions if isinstance(a, argparse._SubParsersAction)
            ).choices[name]
        assert any("--threads" in a.option_strings for a in sub._actions), argv

    seen = []

    class FakeModule:
        HELP = "fake"

        @staticmethod
        def add_arguments(parser):
            pass

        @staticmethod
        def run(args):
            seen.append(torch.get_num_threads())
            return 0

    before = torch.get_num_threads()
    monkeypatch.setitem(cli_main.COMMANDS, "predict", ("fake", "fake predict"))
    monkeypatch.setattr(cli_main, "_load", lambda name: FakeModule)
    try:
        assert cli_main.main(["predict", "--threads", "1"]) == 0
        assert seen == [1]
        with pytest.raises(SystemExit):
            cli_main.main(["predict", "--threads", "0"])
        assert "must be >= 1, got 0" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def _command_parser(words: list[str]) -> argparse.ArgumentParser:
    parser = cli_main.build_parser(words[0])
    sub = parser._subparsers._group_actions[0].choices[words[0]]
    for name in words[1:]:
        sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction))
        sub = sub.choices[name]
    return sub


def test_readme_flag_table_matches_the_parsers():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("| command | inputs | outputs | main options |") :]
    table = table[: table.index("\n\n")]
    rows = re.findall(r"^\| `([a-z -]+)` \|(.*)\|$", table, flags=re.MULTILINE)
    commands = {r[0] for r in rows}
    assert {"train", "predict", "evaluate-seg", "benchmark seg", "export nnunet"} <= commands
    for command, rest in rows:
        parser = _command_parser(command.split())
        known = {s for a in parser._actions for s in a.option_strings}
        flags = set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", rest))
        missing = sorted(f for f in flags if f not in known)
        assert not missing, f"README lists {missing} for `{command}`"
