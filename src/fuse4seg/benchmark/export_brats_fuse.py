"""BraTS-Fuse export: per case, axial PNG slices of the modalities, the ground truth and the
fused images of modality combinations (the benchmark of Fuse4Seg v1, paper ``001``).

Layout written under ``OUT``::

    OUT/brats_fuse.json                       export arguments, fusers, combinations, cases
    OUT/<case>/<modality>/<case>_z077.png     8-bit grey, normalised modality (t1, t1ce, t2, flair)
    OUT/<case>/seg/<case>_z077.png            8-bit RGB colour label map (LABEL_COLOURS: NCR red,
                                              ED green, ET yellow, background black)
    OUT/<case>/label/<case>_z077.png          8-bit grey canonical label values 0..3
    OUT/<case>/fused/<fuser>/<m1>+<m2>[+...]/<case>_z077.png   8-bit grey fused image

Slices are ``vol[:, :, z]`` of the NIfTI arrays, written without rotation: image rows are the
array's X axis, columns its Y axis (the orientation of the prepared store's training slices).

Which combinations: a classical rule (``--rule``) fuses any number of modalities, so it gets
every 2-, 3- and 4-modality combination of the exported modalities (6 + 4 + 1 for all four,
the full BraTS-Fuse set). A trained model supports only its own modality list: a model trained
on ``M`` modalities fuses exactly the combination of its ``M`` modalities (in its order), so
it contributes one combination.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fuse4seg.benchmark.volumes import VolumeCase, iter_volume_cases
from fuse4seg.errors import ConfigError, Fuse4SegError, InputError
from fuse4seg.inference.image_io import write_grey_png, write_rgb_png
from fuse4seg.io.atomic import save_json_atomic
from fuse4seg.train.report import LABEL_COLOURS as _REPORT_COLOURS

__all__ = [
    "SLICE_MODES",
    "LABEL_COLOURS",
    "SliceFuser",
    "combinations",
    "label_to_rgb",
    "select_slices",
    "fuse_slices",
    "BratsFuseResult",
    "export_brats_fuse",
]

SLICE_MODES = ("all", "brain", "tumour")
#: canonical label -> RGB in [0, 1]: background black, then the report's overlay colours
#: (NCR red, ED green, ET yellow, :data:`fuse4seg.train.report.LABEL_COLOURS`)
LABEL_COLOURS = np.array(
    [(0.0, 0.0, 0.0), *(_REPORT_COLOURS[k] for k in (1, 2, 3))], dtype=np.float32
)


@dataclass
class SliceFuser:
    """A named fusion method for the export.

    Attributes:
        name: folder name under ``fused/`` (e.g. ``"average"`` or ``"fuse4seg"``).
        fuse: ``(B, m, H, W)`` in ``[0, 1]`` -> ``(B, 1, H, W)`` in ``[0, 1]``.
        modalities: the model's own modality list (one supported combination), or None for a
            rule that fuses any combination.
    """

    name: str
    fuse: Callable[[torch.Tensor], torch.Tensor]
    modalities: tuple[str, ...] | None = None

    def combinations(self, available: Sequence[str], sizes: Sequence[int]) -> list[tuple]:
        """The combinations of ``available`` this fuser supports (see the module docstring)."""
        if self.modalities is None:
            return combinations(available, sizes)
        if all(m in available for m in self.modalities):
            return [tuple(self.modalities)]
        return []


def combinations(modalities: Sequence[str], sizes: Sequence[int] = (2, 3, 4)) -> list[tuple]:
    """All combinations of ``modalities`` (kept in the given order) of each size in ``sizes``."""
    out: list[tuple] = []
    for k in sizes:
        if k < 1:
            raise ValueError(f"combination sizes must be >= 1, got {k}")
        out.extend(itertools.combinations(tuple(modalities), k))
    return out


def label_to_rgb(label: np.ndarray) -> np.ndarray:
    """Canonical labels ``(H, W)`` (0..3) -> RGB ``(H, W, 3)`` in ``[0, 1]`` (LABEL_COLOURS)."""
    label = np.asarray(label)
    if label.size and (int(label.min()) < 0 or int(label.max()) > 3):
        raise ValueError(f"labels must be in 0..3, found [{label.min()}, {label.max()}]")
    return LABEL_COLOURS[label.astype(np.intp)]


def select_slices(
    images: np.ndarray, seg: np.ndarray | None, mode: str = "brain", step: int = 1
) -> list[int]:
    """Axial slice indices ``z`` to export.

    Args:
        images: ``(M, X, Y, Z)``.
        seg: ``(X, Y, Z)`` canonical labels or None.
        mode: ``"all"``; ``"brain"`` (some modality non-zero); ``"tumour"`` (some label > 0;
            the brain slices when there is no segmentation).
        step: keep every ``step``-th selected slice.
    """
    if mode not in SLICE_MODES:
        raise ConfigError(f"slice mode must be one of {SLICE_MODES}, got {mode!r}")
    if step < 1:
        raise ConfigError(f"slice step must be >= 1, got {step}")
    depth = images.shape[-1]
    if mode == "all":
        zs = list(range(depth))
    elif mode == "tumour" and seg is not None:
        zs = np.flatnonzero(seg.reshape(-1, depth).any(axis=0)).tolist()
    else:
        zs = np.flatnonzero((images != 0).reshape(-1, depth).any(axis=0)).tolist()
    return zs[::step]


@torch.inference_mode()
def fuse_slices(
    fuse: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray,
    zs: Sequence[int],
    batch_size: int = 16,
) -> np.ndarray:
    """Fuse axial slices of a volume.

    Args:
        fuse: ``(B, m, H, W) -> (B, 1, H, W)``.
        images: ``(m, X, Y, Z)`` in ``[0, 1]``.
        zs: slice indices.
        batch_size: slices per call.

    Returns:
        float32 ``(len(zs), X, Y)`` in ``[0, 1]``.
    """
    out = np.zeros((len(zs), *images.shape[1:3]), dtype=np.float32)
    for start in range(0, len(zs), batch_size):
        chunk = list(zs[start : start + batch_size])
        x = torch.from_numpy(np.ascontiguousarray(images[..., chunk].transpose(3, 0, 1, 2)))
        y = fuse(x.float())  # (b, 1, X, Y)
        if tuple(y.shape) != (len(chunk), 1, *images.shape[1:3]):
            raise RuntimeError(f"fuser returned {tuple(y.shape)} for input {tuple(x.shape)}")
        out[start : start + len(chunk)] = y[:, 0].float().clamp(0, 1).cpu().numpy()
    return out


@dataclass
class BratsFuseResult:
    """Cases written, failures, and the number of PNG files per case."""

    out_dir: Path
    cases: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    combinations: dict[str, list[str]] = field(default_factory=dict)


def _combo_name(combo: Sequence[str]) -> str:
    return "+".join(combo)


def _export_case(
    case: VolumeCase,
    out: Path,
    fusers: Sequence[SliceFuser],
    sizes: Sequence[int],
    slices: str,
    step: int,
) -> int:
    images = case.images  # (M, X, Y, Z) normalised to [0, 1]
    zs = select_slices(images, case.seg, slices, step)
    folder = out / case.case_id
    n = 0
    for i, m in enumerate(case.modalities):
        for z in zs:
            write_grey_png(folder / m / f"{case.case_id}_z{z:03d}.png", images[i, :, :, z])
            n += 1
    if case.seg is not None:
        for z in zs:
            lab = case.seg[:, :, z]
            write_rgb_png(folder / "seg" / f"{case.case_id}_z{z:03d}.png", label_to_rgb(lab))
            write_grey_png(folder / "label" / f"{case.case_id}_z{z:03d}.png", lab / 255.0)
            n += 2
    for fuser in fusers:
        for combo in fuser.combinations(case.modalities, sizes):
            idx = [case.modalities.index(m) for m in combo]
            fused = fuse_slices(fuser.fuse, images[idx], zs)
            sub = folder / "fused" / fuser.name / _combo_name(combo)
            for k, z in enumerate(zs):
                write_grey_png(sub / f"{case.case_id}_z{z:03d}.png", fused[k])
                n += 1
    save_json_atomic(
        {
            "case_id": case.case_id,
            "modalities": list(case.modalities),
            "slices": zs,
            "has_seg": case.seg is not None,
            "fused": {
                f.name: [_combo_name(c) for c in f.combinations(case.modalities, sizes)]
                for f in fusers
            },
        },
        folder / "case.json",
    )
    return n


def export_brats_fuse(
    source: str | Path,
    out_dir: str | Path,
    fusers: Sequence[SliceFuser],
    normalise: Callable[[np.ndarray], np.ndarray],
    modalities: Sequence[str] | None = None,
    sizes: Sequence[int] = (2, 3, 4),
    slices: str = "brain",
    step: int = 1,
    log: Callable[[str], None] | None = print,
    extra_info: dict | None = None,
) -> BratsFuseResult:
    """Write the BraTS-Fuse PNG set of every case of ``source``.

    Args:
        source: BraTS case folder / folder of cases, or a prepared store.
        out_dir: output folder (created).
        fusers: fusion methods (rules and/or a model), see :class:`SliceFuser`.
        normalise: maps one raw modality volume ``(X, Y, Z)`` to ``[0, 1]`` (the model's
            normalisation); not applied to a prepared store, whose volumes are normalised.
        modalities: modalities to export (default: all available).
        sizes: combination sizes for rules.
        slices, step: slice selection, see :func:`select_slices`.
        log: progress printer (None: silent).

    Returns:
        :class:`BratsFuseResult`; a failing case is recorded and the export continues.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a folder")
    if slices not in SLICE_MODES:
        raise ConfigError(f"slice mode must be one of {SLICE_MODES}, got {slices!r}")
    if step < 1:
        raise ConfigError(f"slice step must be >= 1, got {step}")
    names = [f.name for f in fusers]
    if len(set(names)) != len(names):
        raise ConfigError(f"fuser names must be unique, got {names}")
    result = BratsFuseResult(out_dir=out)
    for item in iter_volume_cases(source, modalities):
        if isinstance(item, tuple):
            result.failed[item[0]] = item[1]
            if log:
                log(f"FAILED {item[0]}: {item[1]}")
            continue
        case = item
        for f in fusers:
            if f.modalities is not None and not f.combinations(case.modalities, sizes):
                raise InputError(
                    Path(source),
                    f"fuser {f.name!r} needs modalities {list(f.modalities)}, "
                    f"the export has {list(case.modalities)}",
                )
        try:
            if not case.normalised:
                case.images = np.stack([normalise(v) for v in case.images]).astype(np.float32)
            n = _export_case(case, out, fusers, sizes, slices, step)
        except Fuse4SegError as exc:
            result.failed[case.case_id] = str(exc)
            if log:
                log(f"FAILED {case.case_id}: {exc}")
            continue
        result.cases[case.case_id] = n
        result.combinations = {
            f.name: [_combo_name(c) for c in f.combinations(case.modalities, sizes)] for f in fusers
        }
        if log:
            log(f"{case.case_id}: {n} PNG files")
    if not result.cases and not result.failed:
        raise InputError(Path(source), "no case to export")
    info = {
        "source": str(source),
        "slices": slices,
        "step": step,
        "sizes": list(sizes),
        "combinations": result.combinations,
        "cases": result.cases,
        "failed": result.failed,
    }
    info.update(extra_info or {})
    save_json_atomic(info, out / "brats_fuse.json")
    return result
