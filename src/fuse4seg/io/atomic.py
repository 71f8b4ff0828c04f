"""Atomic file writing: write to a temporary name in the same folder, then rename.

A reader (or a user killing the process) never sees a half-written output: either the old
file / no file, or the complete new one. Temporary files are hidden and carry the writer's
process id, ``.tmp-<stem>-p<pid>-XXXXXXXX<suffix>``, so the next run into the same folder can
remove those of a killed process (:func:`remove_stale_temporaries`) without touching the
temporaries of a run still in progress.

The final file gets the mode an ordinary ``open(path, "w")`` would give, ``0o666 & ~umask``
(``tempfile.mkstemp`` creates ``0o600``). A write that fails for lack of space or permission
raises :class:`fuse4seg.errors.OutputError` naming the final path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fuse4seg.errors import InputError, ModelFileError, OutputError

__all__ = [
    "TMP_PREFIX",
    "atomic_path",
    "current_umask",
    "load_tagged_torch",
    "remove_stale_temporaries",
    "save_json_atomic",
    "save_torch_atomic",
]

#: Prefix of temporary files; they are hidden and recognisable (``.tmp-<name>-pPID-XXXX``).
TMP_PREFIX = ".tmp-"
#: our temporary names: ``.tmp-<stem>-p<pid>-<8 characters of mkstemp><suffix>``
_TMP_NAME = re.compile(r"^\.tmp-.*-p(?P<pid>\d+)-[a-z0-9_]{8}(\.[A-Za-z0-9.]+)?$")
#: errno values meaning "no room to write": the disk or the quota is full, or the file too big
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
#: errno values meaning "may not write here"
_NO_ACCESS = {errno.EACCES, errno.EPERM, errno.EROFS}
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _umask_lock:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _write_error(path: Path, exc: OSError) -> OutputError | None:
    """The one-line error for a failed write of ``path``, or None for other OS errors."""
    if exc.errno in _NO_SPACE:
        return OutputError(path, f"not written: no space left on device ({exc.strerror})")
    if exc.errno in _NO_ACCESS:
        return OutputError(path, f"not written: {exc.strerror or 'permission denied'}")
    return None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary file keeps ``path``'s suffixes (so ``.nii.gz`` writers pick the right
    format). On any exception the temporary file is removed and ``path`` is untouched. The
    final file's mode is ``0o666 & ~umask``.

    Raises:
        OutputError: no space left, quota exceeded, or no permission to write (names ``path``).
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f"{TMP_PREFIX}{path.stem}-p{os.getpid()}-", suffix=suffix, dir=path.parent
        )
    except OSError as exc:
        raise (_write_error(path, exc) or exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with contextlib.suppress(OSError):  # e.g. file systems without modes
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError):
            error = _write_error(path, exc)
            if error is not None:
                raise error from None
        raise


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def remove_stale_temporaries(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Remove the temporary files of killed writers in ``folder``; returns the removed paths.

    Only files named like ours (``.tmp-<stem>-p<pid>-XXXXXXXX<suffix>``) whose process no
    longer runs are removed; the temporaries of a live process (another run writing into the
    same folder) and every other file stay. ``recursive`` also visits sub-folders.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(f"{TMP_PREFIX}*") if recursive else folder.glob(f"{TMP_PREFIX}*")
    removed = []
    for p in candidates:
        m = _TMP_NAME.match(p.name)
        if m is None or not p.is_file() or p.is_symlink() or _pid_alive(int(m.group("pid"))):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return sorted(removed)


def save_json_atomic(obj: Any, path: str | Path, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=False, default=str) + "\n")


def load_tagged_torch(
    path: str | Path,
    tag: str,
    *,
    missing: str,
    unreadable: str,
    foreign: str,
    error: type[InputError] = ModelFileError,
    map_location: Any = "cpu",
) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a dict whose ``"format"`` is ``tag``.

    Raises:
        error: ``"<path>: <missing>"`` (no file), ``"<path>: <unreadable> (<exception>)"``
            (truncated or foreign pickle), ``"<path>: <foreign>"`` (another format).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise error(path, missing)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...
        raise error(path, f"{unreadable} ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != tag:
        raise error(path, foreign)
    return data


def save_torch_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (the checkpoint is complete or absent).

    Raises:
        OutputError: the file could not be written (torch reports a full disk as a
            ``RuntimeError`` "... file write failed").
    """
    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:
            text = str(exc).splitlines()[0] if str(exc) else ""
            if "write" not in text.lower():
                raise
            raise OutputError(path, f"not written: {text[:160]} (disk full?)") from None
