"""Entry point of the ``fuse4seg`` console script.

Each command lives in its own module ``fuse4seg.cli.<module>`` that defines

    HELP: str                                   one-line description
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int        exit code

Only the module of the command being run is imported, so a slow import (torch, MONAI)
is paid only by the commands that need it. User errors (:class:`Fuse4SegError`) print one
line ``error: ...`` on stderr and exit with code 2, without a traceback; so do a full disk
(``OSError`` ENOSPC/EDQUOT), a forbidden write and running out of memory (host or GPU).
Ctrl-C exits with 130 and SIGTERM with 143; both first remove the temporary file of a write
in progress (the signal is raised as an exception, see :class:`fuse4seg.errors.Terminated`).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from fuse4seg import __version__
from fuse4seg.errors import Fuse4SegError, InputWarning, Terminated
from fuse4seg.log import configure_cli_logging

__all__ = ["COMMANDS", "main", "build_parser"]

#: command name -> (module under fuse4seg.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "phantom": ("phantom", "write a synthetic BraTS-like NIfTI dataset"),
    "prepare": ("prepare", "normalise BraTS cases into a training store"),
    "train": ("train", "train Fuse4Seg (bi-level) or a baseline"),
    "predict": ("predict", "segment and fuse BraTS volumes into NIfTI"),
    "fuse": ("fuse", "fuse image pairs (PNG/TIFF/NIfTI; colour PET/SPECT)"),
    "evaluate-fusion": ("evaluate_fusion", "score fused images (EN, SD, ..., PSNR)"),
    "evaluate-seg": ("evaluate_seg", "score NIfTI segmentations (Dice, IoU, HD95)"),
    "benchmark": ("benchmark", "reproduce the papers' comparison tables"),
    "export": ("export", "export BraTS-Fuse PNGs or an nnU-Net raw dataset"),
    "demo": ("demo", "phantom -> prepare -> train -> evaluate -> report.html"),
}


def _load(command: str):
    module_name, _ = COMMANDS[command]
    return importlib.import_module(f"fuse4seg.cli.{module_name}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Top-level parser; only ``command``'s sub-parser gets its full arguments."""
    parser = argparse.ArgumentParser(
        prog="fuse4seg",
        description="Task-driven multi-modal medical image fusion and segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"fuse4seg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _load(name).add_arguments(sp)
            _add_verbosity(sp)
            if name in _THREADS_HERE:
                _add_threads(sp)
    return parser


#: commands whose own parsers have no ``--threads`` and whose work is torch code on the CPU
#: (train and demo define it themselves; evaluate-* use ``--workers``)
_THREADS_HERE = ("predict", "fuse", "export", "benchmark")


def _add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads`` on a command's parser, or on each of its sub-commands."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subs:
        for sub in subs:
            for child in sub.choices.values():
                _add_threads(child)
        return
    if any("--threads" in a.option_strings for a in parser._actions):
        return
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="CPU threads for torch (default: torch's, all cores)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _apply_threads(args: argparse.Namespace) -> None:
    """``torch.set_num_threads`` for the commands :func:`_add_threads` serves."""
    threads = getattr(args, "threads", None)
    if threads is None or args.command not in _THREADS_HERE:
        return
    import torch

    torch.set_num_threads(threads)


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``-v/-q`` on a command's parser, or on each of its sub-commands (``benchmark seg``)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subs:
        for sub in subs:
            for child in sub.choices.values():
                _add_verbosity(child)
        return
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-v", "--verbose", action="store_true", help="more log lines (debug)")
    talk.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no per-epoch / per-case lines: warnings, errors and the final result only",
    )


#: OS errors reported as one line (disk full, quota, permissions) instead of a traceback
_ONE_LINE_OS_ERRORS = {
    errno.ENOSPC,
    errno.EFBIG,
    getattr(errno, "EDQUOT", errno.ENOSPC),
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
}


_format_warning = warnings.formatwarning


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """``warning: <message>`` for input warnings; Python's format for the others."""
    if issubclass(category, InputWarning):
        return f"warning: {message}\n"
    return _format_warning(message, category, filename, lineno, line)


def _terminate(signum, frame) -> None:
    raise Terminated


def _resource_error(exc: BaseException) -> str | None:
    """One-line message for a resource error (memory, disk), None for anything else."""
    if isinstance(exc, MemoryError):
        return "out of memory (free memory, or process fewer/smaller inputs at a time)"
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError (no import)
        return "out of GPU memory (lower --batch-size, or use another device)"
    if isinstance(exc, OSError) and exc.errno in _ONE_LINE_OS_ERRORS:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error / partial failure)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    warnings.formatwarning = _one_line_warning
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    configure_cli_logging(1 if verbose else -1 if quiet else 0)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        _apply_threads(args)
        return int(_load(args.command).run(args) or 0)
    except Fuse4SegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (MemoryError, OSError, RuntimeError) as exc:
        message = _resource_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
