"""User-facing errors.

Every problem caused by the user's input (a file, a folder, an option) raises
:class:`Fuse4SegError` (or a subclass) with a one-line message that names the offending
path or value. The CLI prints it as ``error: <message>`` and exits with code 2, without a
traceback. Programming errors keep their normal exceptions.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "Fuse4SegError",
    "InputError",
    "ConfigError",
    "ModelFileError",
    "OutputError",
    "Terminated",
    "InputWarning",
]


class Fuse4SegError(Exception):
    """Base class of errors caused by user input; the message is one line."""

    exit_code = 2


class InputError(Fuse4SegError, ValueError):
    """A bad input file or folder: ``InputError(path, problem)`` -> ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")

    def __reduce__(self):  # picklable across worker processes (prepare --workers)
        return (type(self), (self.path, self.problem))


class ConfigError(Fuse4SegError, ValueError):
    """A bad option, configuration key or value."""


class ModelFileError(InputError):
    """A model/checkpoint file that is missing, truncated or not a fuse4seg model."""


class OutputError(InputError):
    """An output that cannot be written: disk full, quota exceeded, read-only or forbidden
    folder. Later outputs would fail the same way, so batch commands stop after it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so atomic writes remove their temporary files.

    A subclass of ``KeyboardInterrupt`` (code that cleans up on Ctrl-C cleans up on SIGTERM);
    the CLI exits with 143 (128 + SIGTERM) for it and 130 for Ctrl-C.
    """


class InputWarning(UserWarning):
    """A suspicious but usable input (e.g. a constant modality); the CLI prints it as one
    ``warning: <path>: <problem>`` line."""
