"""User-facing errors.

Every problem caused by the user's input (a file, a folder, an option) raises
:class:`Fuse4SegError` (or a subclass) with a one-line message that names the offending
path or value. The CLI prints it as ``error: <message>`` and exits with code 2, without a
traceback. Programming errors keep their normal exceptions.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["Fuse4SegError", "InputError", "ConfigError", "ModelFileError"]


class Fuse4SegError(Exception):
    """Base class of errors caused by user input; the message is one line."""

    exit_code = 2


class InputError(Fuse4SegError, ValueError):
    """A bad input file or folder: ``InputError(path, problem)`` -> ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class ConfigError(Fuse4SegError, ValueError):
    """A bad option, configuration key or value."""


class ModelFileError(InputError):
    """A model/checkpoint file that is missing, truncated or not a fuse4seg model."""
