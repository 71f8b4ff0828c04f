"""The output policy shared by every command that writes files.

1. **Outputs never touch inputs.** An output (file or folder) equal to an input, or inside an
   input folder, is refused before anything is written: :func:`check_output_location`.
   A command that may delete its own earlier outputs (``--overwrite``) also refuses an output
   folder that holds one of its inputs.
2. **Existing outputs, one flag.** ``--overwrite`` is the only switch:

   * per-item commands (``predict``, ``fuse``) skip an item whose outputs exist and replace
     them with ``--overwrite`` (:func:`open_item_folder`);
   * whole-folder commands (``prepare``, ``phantom``, ``export``, ``benchmark``, ``demo``,
     ``train``) refuse an output folder that is not empty and replace their own outputs in
     it with ``--overwrite`` (:func:`claim_output_folder`; ``train --resume`` continues a run).

3. **No leftovers.** Every file is written atomically (:mod:`fuse4seg.io.atomic`); opening an
   output folder removes the temporary files a killed run left there.

Every refusal is an :class:`~fuse4seg.errors.InputError` ``"<path>: <problem>"``, which the CLI
prints as one ``error:`` line with exit code 2.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from fuse4seg.errors import InputError, OutputError
from fuse4seg.io.atomic import TMP_PREFIX, remove_stale_temporaries

__all__ = [
    "file_sha256",
    "check_output_location",
    "check_not_an_input",
    "claim_output_folder",
    "open_item_folder",
]

PathLike = str | os.PathLike


def _real(path: PathLike) -> Path:
    """Absolute path with symbolic links resolved (also for paths that do not exist yet)."""
    return Path(path).expanduser().resolve(strict=False)


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_location(
    output: PathLike, inputs: Iterable[PathLike | None], replaces_contents: bool = False
) -> None:
    """Refuse an output that is an input or lies inside an input folder.

    Args:
        output: the output file or folder (need not exist).
        inputs: input files and folders (``None`` entries are ignored).
        replaces_contents: the command may delete or replace what ``output`` holds
            (``--overwrite`` of a whole-folder command); then an input inside ``output`` is
            refused too.

    Raises:
        InputError: ``"<output>: <problem>"`` naming the input concerned.
    """
    out = _real(output)
    for item in inputs:
        if item is None:
            continue
        src = _real(item)
        if out == src:
            kind = "folder" if src.is_dir() else "file"
            raise InputError(output, f"is the input {kind} {item}; write outputs elsewhere")
        if src.is_dir() and _is_within(out, src):
            raise InputError(
                output, f"is inside the input folder {item}; outputs must not go into an input"
            )
        if replaces_contents and _is_within(src, out):
            raise InputError(
                output,
                f"holds the input {item}, which replacing the output could delete; "
                "choose another output folder",
            )


def check_not_an_input(path: PathLike, inputs: Iterable[PathLike | None]) -> None:
    """Refuse writing ``path`` when it is (resolves to) one of the ``inputs``.

    Raises:
        InputError: ``"<path>: would replace the input file <input>"``.
    """
    target = _real(path)
    for item in inputs:
        if item is not None and _real(item) == target:
            raise InputError(path, f"would replace the input file {item}; not written")


def _ensure_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "output exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, f"cannot create the output folder ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(folder, "output folder is not writable")


def open_item_folder(folder: PathLike) -> Path:
    """Create (or reuse) the output folder of a per-item command and remove stale temporaries.

    Items whose outputs exist are skipped by the command unless ``--overwrite``.

    Raises:
        InputError: ``folder`` is a file; OutputError: it cannot be created or written.
    """
    folder = Path(folder)
    _ensure_folder(folder)
    remove_stale_temporaries(folder)
    return folder


def _visible_entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(TMP_PREFIX))


def claim_output_folder(
    folder: PathLike, overwrite: bool, what: str = "outputs", create: bool = True
) -> Path:
    """Create the output folder of a whole-folder command, refusing a non-empty one.

    A folder that holds anything (other than temporary files of a killed run, which are
    removed) is refused unless ``overwrite``; the command then replaces its own ``what`` in
    it. The folder is created when missing (unless ``create`` is False: the command's own
    code creates it after its own checks).

    Raises:
        InputError: ``folder`` is a file, or is not empty and ``overwrite`` is False.
        OutputError: it cannot be created or written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "output exists and is not a folder")
    if folder.is_dir():
        remove_stale_temporaries(folder, recursive=True)
        entries = _visible_entries(folder)
        if entries and not overwrite:
            shown = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise InputError(
                folder, f"output folder is not empty ({shown}); use --overwrite to replace {what}"
            )
    if create:
        _ensure_folder(folder)
    return folder


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (hex), recorded with outputs to say which model file made them."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
