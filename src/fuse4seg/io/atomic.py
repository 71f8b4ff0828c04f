"""Atomic file writing: write to a temporary name in the same folder, then rename.

A reader (or a user killing the process) never sees a half-written output: either the old
file / no file, or the complete new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "save_json_atomic", "save_torch_atomic", "TMP_PREFIX"]

#: Prefix of temporary files; they are hidden and recognisable (``.tmp-<name>-XXXX``).
TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary file keeps ``path``'s suffixes (so ``.nii.gz`` writers pick the right
    format). On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(
        prefix=f"{TMP_PREFIX}{path.stem}-", suffix=suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def save_json_atomic(obj: Any, path: str | Path, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


def save_torch_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (the checkpoint is complete or absent)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
