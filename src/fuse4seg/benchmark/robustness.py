"""Robustness benchmark (RMR-Fusion Tables 1-4): clean vs. degraded inputs, any trained model.

For every test case of a store, the model runs on the clean volume and on a degraded copy
(:class:`fuse4seg.degradations.Degradation`, ``paper_test`` by default: noise std 0.04 of the
range, blur sigma 0.6, one (4, 16, 16) structure-loss window per modality; seeded per case;
clipped to [0, 1] like a stored image). It reports

* Dice per class (NCR, ED, ET), their mean and the regions WT, TC on the 3D volume, clean
  and degraded, and the drop ``clean - degraded`` (an empty prediction of an empty class
  counts as Dice 1);
* fusion metrics on the fused volume, clean and degraded, from ``fuse4seg.metrics``
  (``convention="standard"``, ``data_range=1``, 3D: ``spatial_dims=3``): EN, FMI, AG and SCD
  (SCD needs exactly 2 modalities, else NaN). FMI and SCD compare the fused volume with the
  **clean** sources in both settings, so restoring the clean content scores best.

Models are reached through a small adapter (:class:`VolumeAdapter`): anything with a
``modalities`` attribute and ``__call__(images (M, D, H, W) float32 in [0, 1]) ->
(fused (D, H, W) in [0, 1] or None, labels (D, H, W) canonical)``. Provided:

* :class:`RMRAdapter` -- an RMR-Fusion ``model.pt`` (3D sliding window);
* :class:`SliceAdapter` -- any 2D model (Fuse4Seg, baselines): wraps an object with
  ``predict_slices(x (N, M, H, W)) -> (fused (N, 1, H, W) | None, probabilities (N, C, H, W))``
  such as ``fuse4seg.inference.Predictor``, or a plain callable with that signature; the
  volume's axial slices (store layout ``(D, M, H, W)``) are run in batches.

:func:`run_robustness_benchmark` writes ``robustness_cases.csv`` (one row per case and
setting) and ``robustness.md`` / ``robustness.csv`` (mean over cases: clean, degraded, drop).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from fuse4seg.data.volume_store import VolumeStore, select_modalities
from fuse4seg.degradations import Degradation
from fuse4seg.errors import Fuse4SegError, InputError
from fuse4seg.io.atomic import atomic_path
from fuse4seg.metrics.segmentation import dice_scores

_LOG = logging.getLogger(__name__)

__all__ = [
    "VolumeAdapter",
    "RMRAdapter",
    "SliceAdapter",
    "dice_per_class",
    "fusion_metrics",
    "run_robustness_benchmark",
    "CLASS_NAMES",
    "METRICS",
]

#: canonical foreground classes scored by Dice
CLASS_NAMES: dict[int, str] = {1: "NCR", 2: "ED", 3: "ET"}
#: summary columns, in table order
METRICS: tuple[str, ...] = (
    "Dice_NCR",
    "Dice_ED",
    "Dice_ET",
    "Dice_mean",
    "Dice_WT",
    "Dice_TC",
    "EN",
    "FMI",
    "AG",
    "SCD",
)


class VolumeAdapter(Protocol):
    """A model seen by the robustness benchmark."""

    modalities: Sequence[str]

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]: ...


class RMRAdapter:
    """Adapter for an RMR-Fusion model (``fuse4seg.rmr.load_rmr_model``).

    ``window``: sliding-window size ``(d, h, w)``; default (and the only size that scores the
    trained network as trained) the training patch. The Swin encoders and the SwinUNETR head
    are not translation-equivariant across window sizes: their attention windows and the
    head's bottleneck (1 voxel at a 16x32x32 patch) change with the input size, so another
    window gives another prediction. Measured on CV fold 2 of the 120x120 store (model of
    docs/benchmarks.md Run R3, case Brats18_TCIA02_135_1): mean Dice 0.522 with 16x32x32
    windows, 0.062 with 32x128x128 ones (folds 0 and 1 moved by < 0.01). A window other than
    the patch logs a warning.
    ``sw_batch_size``: windows per forward pass (default
    :func:`fuse4seg.rmr.predict.windows_per_pass`).
    """

    def __init__(
        self,
        model: Any,
        overlap: float = 0.25,
        window: Sequence[int] | None = None,
        sw_batch_size: int | None = None,
    ) -> None:
        self.model = model
        self.modalities = list(model.modalities)
        self.overlap = overlap
        self.window = tuple(int(v) for v in window) if window is not None else None
        if self.window is not None and (len(self.window) != 3 or min(self.window) < 1):
            raise ValueError(f"window must be 3 positive sizes (d, h, w), got {window}")
        patch = tuple(getattr(model, "patch_size", ()) or ())
        if self.window is not None and patch and self.window != patch:
            _LOG.warning(
                "sliding window %s differs from the training patch %s: the Swin parts of "
                "RMR-Fusion depend on the window size, so Dice can drop sharply "
                "(docs/benchmarks.md Run R3)",
                "x".join(map(str, self.window)),
                "x".join(map(str, patch)),
            )
        self.sw_batch_size = sw_batch_size

    @classmethod
    def from_file(cls, path: str | Path, device: str = "auto") -> RMRAdapter:
        from fuse4seg.rmr.predict import load_rmr_model

        return cls(load_rmr_model(path, device))

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        kwargs: dict[str, Any] = {"overlap": self.overlap, "sw_batch_size": self.sw_batch_size}
        if self.window is not None:
            kwargs["roi_size"] = self.window
        return self.model.predict(images, **kwargs)


class SliceAdapter:
    """Adapter for 2D models run slice by slice on ``(M, D, H, W)`` volumes.

    Args:
        predictor: object with ``predict_slices(x)`` or a callable ``f(x)``; ``x`` is
            ``(N, M, H, W)`` float32 on the CPU, returning ``(fused (N, 1, H, W) | None,
            probabilities or logits (N, C, H, W))``.
        modalities: model modalities (default ``predictor.modalities``).
        batch_size: slices per call.
    """

    def __init__(
        self,
        predictor: Any,
        modalities: Sequence[str] | None = None,
        batch_size: int = 16,
    ) -> None:
        self.fn: Callable[[torch.Tensor], Any] = getattr(predictor, "predict_slices", predictor)
        mods = modalities if modalities is not None else getattr(predictor, "modalities", None)
        if mods is None:
            raise ValueError("SliceAdapter needs the model's modalities")
        self.modalities = list(mods)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(1, 0, 2, 3)))  # (D, M, H, W)
        fused_parts: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        has_fused = True
        for i in range(0, x.shape[0], self.batch_size):
            fused, scores = self.fn(x[i : i + self.batch_size].float())
            labels.append(scores.argmax(dim=1).cpu().numpy().astype(np.uint8))  # (n, H, W)
            if fused is None:
                has_fused = False
            else:
                fused_parts.append(fused[:, 0].float().cpu().numpy())
        fused_vol = np.concatenate(fused_parts) if has_fused and fused_parts else None
        return fused_vol, np.concatenate(labels)


def dice_per_class(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """3D Dice of canonical labels per class (NCR, ED, ET), their mean (``Dice_mean``) and
    the BraTS regions WT = {1, 2, 3} and TC = {1, 3} (``Dice_WT``, ``Dice_TC``).

    ``pred`` and ``ref`` are integer ``(D, H, W)`` arrays; a class absent from both scores 1.
    """
    out = dice_scores(pred, ref)  # BRATS_CLASSES: NCR, ED, ET, WT, TC
    out["Dice_mean"] = float(np.mean([out[f"Dice_{n}"] for n in CLASS_NAMES.values()]))
    return out


def fusion_metrics(fused: np.ndarray, sources: np.ndarray) -> dict[str, float]:
    """EN, FMI, AG, SCD of a fused volume ``(D, H, W)`` against sources ``(M, D, H, W)``.

    Standard convention of ``fuse4seg.metrics`` on [0, 1] data, 3D (``spatial_dims=3``).
    """
    from fuse4seg.metrics import fusion as fm

    f = torch.from_numpy(np.ascontiguousarray(fused, dtype=np.float64))[None]  # (1, D, H, W)
    s = torch.from_numpy(np.ascontiguousarray(sources, dtype=np.float64))[None]  # (1, M, ...)
    out = {
        "EN": float(fm.entropy(f, convention="standard", data_range=1.0, spatial_dims=3)[0]),
        "FMI": float(fm.fmi(s, f, spatial_dims=3)[0]),
        "AG": float(fm.average_gradient(f, convention="standard", spatial_dims=3)[0]),
        "SCD": float(fm.scd(s, f, spatial_dims=3)[0]) if s.shape[1] == 2 else math.nan,
    }
    return out


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def _fmt(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.4f}"


def run_robustness_benchmark(
    adapter: VolumeAdapter,
    store: VolumeStore,
    out_dir: str | Path,
    split: str = "test",
    degradation: str | Degradation = "paper_test",
    seed: int = 0,
    case_ids: Sequence[str] | None = None,
    max_cases: int | None = None,
    model_name: str = "model",
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Score ``adapter`` on clean and degraded cases of ``store``; write the tables.

    Args:
        adapter: see :class:`VolumeAdapter`.
        store: prepared store (``(D, M, H, W)`` volumes in [0, 1]) or in-memory store.
        out_dir: folder for ``robustness.md``, ``robustness.csv``, ``robustness_cases.csv``.
        split: store split to evaluate (``case_ids`` overrides it).
        degradation: preset name or a :class:`Degradation`.
        seed: case ``i`` is degraded with seed ``seed + i``.
        max_cases: evaluate at most this many cases.
        model_name: label in the Markdown table.
        log: line printer (None = silent).

    Returns:
        ``{"summary": {setting: {metric: mean}}, "drop": {metric: clean - degraded},
        "cases": [rows], "failed": [(case, message)], "files": [paths]}``.
    """
    say = log or (lambda _m: None)
    deg = Degradation.preset(degradation) if isinstance(degradation, str) else degradation
    ids = list(case_ids) if case_ids is not None else list(store.case_ids(split))
    if max_cases is not None:
        ids = ids[: int(max_cases)]
    if not ids:
        raise InputError(str(out_dir), f"no cases to evaluate in split {split!r}")
    channels = select_modalities(store.modalities, adapter.modalities, "store")
    rows: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    for i, cid in enumerate(ids):
        try:
            raw = np.asarray(store.image(cid))[:, channels].astype(np.float32)  # (D, M, H, W)
            clean = np.clip(raw, 0.0, 1.0).transpose(1, 0, 2, 3)  # (M, D, H, W)
            ref = np.asarray(store.label(cid))
            degraded = deg(torch.from_numpy(np.ascontiguousarray(clean))[None], seed + i)[0]
            degraded_np = degraded.clamp(0.0, 1.0).numpy()
            for setting, images in (("clean", clean), ("degraded", degraded_np)):
                fused, labels = adapter(np.ascontiguousarray(images))
                if labels.shape != ref.shape:
                    raise InputError(
                        cid, f"model returned labels {labels.shape}, expected {ref.shape}"
                    )
                row: dict[str, Any] = {"case": cid, "setting": setting}
                row.update(dice_per_class(labels, ref))
                if fused is not None:
                    row.update(fusion_metrics(fused, clean))
                rows.append(row)
            c, d = rows[-2], rows[-1]
            say(
                f"{cid}: Dice clean {c['Dice_mean']:.4f} degraded {d['Dice_mean']:.4f}"
                f" drop {c['Dice_mean'] - d['Dice_mean']:.4f}"
            )
        except Fuse4SegError as exc:
            failed.append((cid, str(exc)))
            say(f"FAILED {cid}: {exc}")
    summary = {
        s: {m: _nanmean([r.get(m, math.nan) for r in rows if r["setting"] == s]) for m in METRICS}
        for s in ("clean", "degraded")
    }
    drop = {m: summary["clean"][m] - summary["degraded"][m] for m in METRICS}
    files = _write_tables(
        Path(out_dir), rows, summary, drop, deg, model_name, len(ids) - len(failed)
    )
    for cid, msg in failed:
        say(f"FAILED {cid}: {msg}")
    if failed:
        say(f"{len(failed)} of {len(ids)} cases failed")
    return {"summary": summary, "drop": drop, "cases": rows, "failed": failed, "files": files}


def _csv_text(rows: list[dict[str, Any]], fields: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", restval="")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _write_tables(
    out_dir: Path,
    rows: list[dict[str, Any]],
    summary: dict[str, dict[str, float]],
    drop: dict[str, float],
    deg: Degradation,
    model_name: str,
    num_cases: int,
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    cases_csv = out_dir / "robustness_cases.csv"
    summary_csv = out_dir / "robustness.csv"
    md = out_dir / "robustness.md"
    with atomic_path(cases_csv) as tmp:
        tmp.write_text(_csv_text(rows, ["case", "setting", *METRICS]))
    summ_rows = [
        {"setting": "clean", **summary["clean"]},
        {"setting": "degraded", **summary["degraded"]},
        {"setting": "drop", **drop},
    ]
    with atomic_path(summary_csv) as tmp:
        tmp.write_text(_csv_text(summ_rows, ["setting", *METRICS]))
    lines = [
        f"# Robustness: {model_name}",
        "",
        f"Degradation `{deg.name}`: noise std {deg.noise_std} of the range, blur sigma "
        f"{deg.blur_sigma}, structure loss {deg.structure_windows} x {deg.structure_window}; "
        f"{num_cases} case(s). Dice per class on 3D volumes; fusion metrics in the standard "
        "convention on [0, 1] volumes (FMI, SCD against the clean sources).",
        "",
        "| metric | clean | degraded | drop |",
        "| --- | --- | --- | --- |",
    ]
    for m in METRICS:
        lines.append(
            f"| {m} | {_fmt(summary['clean'][m])} | {_fmt(summary['degraded'][m])} "
            f"| {_fmt(drop[m])} |"
        )
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return [md, summary_csv, cases_csv]
