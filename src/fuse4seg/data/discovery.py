"""Discovery of BraTS cases in a folder by file naming.

Two namings are recognised (``.nii`` or ``.nii.gz``), the case id being the file-name prefix:

* ``brats2021`` (BraTS 2018-2022): ``<case>_t1``, ``<case>_t1ce``, ``<case>_t2``,
  ``<case>_flair``, ``<case>_seg``; ET label 4.
* ``brats2023`` (BraTS 2023+): ``<case>-t1n``, ``<case>-t1c``, ``<case>-t2w``, ``<case>-t2f``,
  ``<case>-seg``; ET label 3.

Files are mapped to the canonical modality names ``t1, t1ce, t2, flair``. Missing modality
files are *not* an error here: :func:`fuse4seg.data.load_case` reports them for the
modalities actually requested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from fuse4seg.data.labels import et_label_for
from fuse4seg.errors import InputError

__all__ = [
    "MODALITIES",
    "NAMING_SUFFIXES",
    "BratsCase",
    "discover_cases",
    "match_brats_file",
    "expected_filename",
]

#: canonical modality names, in canonical order
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

#: naming -> (separator, {file key -> canonical modality or "seg"})
NAMING_SUFFIXES: dict[str, tuple[str, dict[str, str]]] = {
    "brats2021": ("_", {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"}),
    "brats2023": ("-", {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair", "seg": "seg"}),
}

_PATTERNS = {
    naming: re.compile(
        rf"^(?P<case>.+){re.escape(sep)}(?P<key>{'|'.join(sorted(keys, key=len, reverse=True))})"
        r"\.nii(?:\.gz)?$"
    )
    for naming, (sep, keys) in NAMING_SUFFIXES.items()
}


def match_brats_file(name: str) -> tuple[str, str, str] | None:
    """``(case_id, naming, canonical modality or "seg")`` for a BraTS file name, else None."""
    for naming, pattern in _PATTERNS.items():
        m = pattern.match(name)
        if m:
            return m.group("case"), naming, NAMING_SUFFIXES[naming][1][m.group("key")]
    return None


def expected_filename(case_id: str, naming: str, modality: str, ext: str = ".nii.gz") -> str:
    """File name of ``modality`` (canonical name or ``"seg"``) in ``naming``."""
    sep, keys = NAMING_SUFFIXES[naming]
    key = next(k for k, v in keys.items() if v == modality)
    return f"{case_id}{sep}{key}{ext}"


@dataclass(frozen=True)
class BratsCase:
    """One BraTS case folder.

    Attributes:
        case_id: file-name prefix shared by the case's files.
        folder: the case folder.
        naming: ``"brats2021"`` (2018-2022 releases) or ``"brats2023"``.
        files: canonical modality -> NIfTI path, for the modality files present.
        seg: path of the segmentation, or None (valid input for inference).
    """

    case_id: str
    folder: Path
    naming: str
    files: dict[str, Path] = field(default_factory=dict)
    seg: Path | None = None

    @property
    def et_label(self) -> int:
        """ET label value in this case's files: 4 (brats2021) or 3 (brats2023)."""
        return et_label_for(self.naming)

    def expected_path(self, modality: str) -> Path:
        """Where the file of ``modality`` (or ``"seg"``) would be in this case's naming."""
        return self.folder / expected_filename(self.case_id, self.naming, modality)


def _case_from_folder(folder: Path) -> BratsCase | None:
    """The case in ``folder``, None if it has no recognisable file; InputError if ambiguous."""
    hits: list[tuple[str, str, str, Path]] = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        hit = match_brats_file(path.name)
        if hit is not None:
            hits.append((*hit, path))
    if not hits:
        return None
    ids = {(case_id, naming) for case_id, naming, _, _ in hits}
    if len(ids) > 1:
        names = ", ".join(f"{c} ({n})" for c, n in sorted(ids))
        raise InputError(folder, f"files of several cases or namings in one folder: {names}")
    found: dict[str, Path] = {}
    for _, _, modality, path in hits:
        if modality in found:
            raise InputError(
                folder, f"two files for {modality}: {found[modality].name} and {path.name}"
            )
        found[modality] = path
    (case_id, naming) = ids.pop()
    seg = found.pop("seg", None)
    files = {m: found[m] for m in MODALITIES if m in found}
    return BratsCase(case_id=case_id, folder=folder, naming=naming, files=files, seg=seg)


def discover_cases(
    path: str | Path, problems: list[tuple[str, str]] | None = None
) -> list[BratsCase]:
    """Find the BraTS cases in ``path`` (one case folder or a folder of case folders).

    Returns the cases sorted by case id.

    Args:
        path: a case folder or a folder of case folders.
        problems: when given (batch commands), a case folder that mixes cases or namings or
            holds two files for one modality, and every folder of a case id found twice, is
            left out and reported here as ``(folder name, "<folder>: <problem>")`` instead of
            failing the whole batch. ``path`` itself being such a case folder still raises.

    Raises:
        InputError: ``path`` is missing or not a folder, holds no recognisable case, or
            (without ``problems``) two folders hold the same case id or a case folder mixes
            cases/namings.
    """
    root = Path(path)
    if not root.exists():
        raise InputError(root, "folder does not exist")
    if not root.is_dir():
        raise InputError(root, "not a folder")
    single = _case_from_folder(root)
    if single is not None:
        return [single]
    cases: list[BratsCase] = []
    bad = 0
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            case = _case_from_folder(sub)
        except InputError as exc:
            if problems is None:
                raise
            problems.append((sub.name, str(exc)))
            bad += 1
            continue
        if case is not None:
            cases.append(case)
    if not cases and not bad:
        raise InputError(
            root,
            "no BraTS cases found (expected case folders with files like "
            "<case>_t1ce.nii.gz (2018-2022) or <case>-t1c.nii.gz (2023))",
        )
    by_id: dict[str, list[BratsCase]] = {}
    for case in cases:
        by_id.setdefault(case.case_id, []).append(case)
    for case_id, same in by_id.items():
        if len(same) == 1:
            continue
        if problems is None:
            raise InputError(same[1].folder, f"case id {case_id!r} also found in {same[0].folder}")
        folders = ", ".join(str(c.folder) for c in same)
        for c in same:
            problems.append((c.folder.name, f"{c.folder}: case id {case_id!r} found in {folders}"))
    return sorted((c for c in cases if len(by_id[c.case_id]) == 1), key=lambda c: c.case_id)
