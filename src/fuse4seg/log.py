"""The package's log: one line per event (epoch, case), through :mod:`logging`.

Library code logs to ``fuse4seg.<module>`` loggers and never configures handlers; the CLI calls
:func:`configure_cli_logging` once, which prints each record as one plain line on stdout
(warnings and errors keep their own ``warning:`` / ``error:`` lines on stderr). Progress bars
are for terminals only (:func:`show_progress`): in a log file a bar's ``\\r`` updates are noise.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LOGGER", "get_logger", "configure_cli_logging", "show_progress"]

#: root logger of the package
LOGGER = "fuse4seg"


def get_logger(name: str) -> logging.Logger:
    """The logger of a module (``__name__``), a child of ``fuse4seg``."""
    return logging.getLogger(name if name.startswith(LOGGER) else f"{LOGGER}.{name}")


class _StdoutHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stdout`` is at emit time (pytest swaps it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout  # not setStream: it flushes the old one, maybe closed by now
        super().emit(record)


def configure_cli_logging(verbosity: int = 0) -> None:
    """Plain one-line records on stdout: ``verbosity`` -1 (``-q``: warnings only), 0 (info:
    one line per epoch / case), 1 (``-v``: debug). Idempotent."""
    logger = logging.getLogger(LOGGER)
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    logger.setLevel(level)
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.propagate = False


def show_progress(requested: bool = True) -> bool:
    """Whether to draw a progress bar: asked for and stderr is a terminal."""
    return bool(requested) and sys.stderr.isatty()
