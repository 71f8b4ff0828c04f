"""Bookkeeping for batch commands (``predict``, ``fuse``): successes, skips, failures, summary."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["BatchReport"]


@dataclass
class BatchReport:
    """Outcome of a batch run; ``exit_code`` is 0 when nothing failed, else 2."""

    done: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, name: str, message: str, stream: TextIO | None = None) -> None:
        """Record a failure and print ``FAILED <name>: <message>`` (one line)."""
        self.failed.append((name, message))
        print(f"FAILED {name}: {message}", file=stream or sys.stderr, flush=True)

    def skip(self, name: str, reason: str, stream: TextIO | None = None) -> None:
        self.skipped.append((name, reason))
        print(f"skipped {name}: {reason}", file=stream or sys.stdout, flush=True)

    @property
    def exit_code(self) -> int:
        return 2 if self.failed else 0

    def summary(self, what: str = "cases") -> str:
        line = (
            f"{len(self.done)} {what} done, {len(self.skipped)} skipped, {len(self.failed)} failed"
        )
        if self.failed:
            line += " (" + ", ".join(name for name, _ in self.failed) + ")"
        return line
