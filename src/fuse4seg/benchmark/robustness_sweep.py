"""Robustness sweep: several models on the same held-out cases, clean and under each
degradation of RMR-Fusion's test protocol at several severities.

Conditions (:func:`sweep_conditions`): ``clean``; ``paper_test`` (noise std 0.04 of the range,
blur sigma 0.6 and one (4, 16, 16) structure-loss window together, the paper's test); then each
factor alone at several severities (multiples of its paper value): noise std 0.02 / 0.04 /
0.08, blur sigma 0.3 / 0.6 / 1.2, structure loss with 1 / 2 / 4 windows. Case ``i`` of the
list is degraded with seed ``seed + i`` in every condition and for every model, so all models
see the same degraded volumes.

Per model, condition and case: Dice per class (NCR, ED, ET), their mean and the regions WT,
TC on the 3D volume (:func:`fuse4seg.benchmark.robustness.dice_per_class`) and, for models
with a fused image, the fusion metrics EN, FMI, AG, SCD
(:func:`fuse4seg.benchmark.robustness.fusion_metrics`; FMI and SCD against the clean sources).

Writes ``sweep_cases.csv`` (one row per model, condition, case), ``sweep.csv`` and
``sweep.md`` (means over cases), ``dice_vs_severity.png`` (mean Dice against severity, one
panel per factor, one line per model; severity 0 = clean) and ``examples.png`` (the sources
and every model's fused image on the first case's slice with most tumour, clean and under the
first degradation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fuse4seg.benchmark.robustness import METRICS, VolumeAdapter, dice_per_class, fusion_metrics
from fuse4seg.data.volume_store import select_modalities
from fuse4seg.degradations import Degradation
from fuse4seg.errors import Fuse4SegError, InputError
from fuse4seg.io.atomic import atomic_path

__all__ = ["Condition", "sweep_conditions", "run_robustness_sweep", "FACTORS"]

#: the single factors of the paper's test and their paper values
FACTORS: dict[str, float] = {"noise": 0.04, "blur": 0.6, "structure": 1}


@dataclass(frozen=True)
class Condition:
    """One column of the sweep: a degradation (None = clean), its factor and severity."""

    name: str
    factor: str  # "clean", "paper_test", "noise", "blur" or "structure"
    severity: float  # multiple of the paper value (0 = clean, 1 = the paper's test)
    degradation: Degradation | None


def sweep_conditions(
    severities: Sequence[float] = (0.5, 1.0, 2.0), windows: Sequence[int] = (1, 2, 4)
) -> list[Condition]:
    """``clean``, ``paper_test``, noise and blur alone at ``severities`` x their paper values,
    structure loss alone with ``windows`` (4, 16, 16) windows (the paper's test has 1)."""
    if not severities or any(not s > 0 for s in severities):
        raise ValueError(f"severities must be > 0, got {list(severities)}")
    if not windows or any(int(w) < 1 for w in windows):
        raise ValueError(f"structure windows must be >= 1, got {list(windows)}")
    out = [
        Condition("clean", "clean", 0.0, None),
        Condition("paper_test", "paper_test", 1.0, Degradation.preset("paper_test")),
    ]
    for s in severities:
        d = Degradation.preset("noise", noise_std=FACTORS["noise"] * s)
        out.append(Condition(f"noise {d.noise_std:g}", "noise", float(s), d))
    for s in severities:
        d = Degradation.preset("blur", blur_sigma=FACTORS["blur"] * s)
        out.append(Condition(f"blur {d.blur_sigma:g}", "blur", float(s), d))
    for w in windows:
        d = Degradation.preset("structure", structure_windows=int(w))
        out.append(Condition(f"structure {int(w)}x(4,16,16)", "structure", float(w), d))
    return out


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def run_robustness_sweep(
    models: Mapping[str, VolumeAdapter],
    store: Any,
    out_dir: str | Path,
    case_ids: Sequence[str],
    conditions: Sequence[Condition] | None = None,
    seed: int = 0,
    fusion_scores: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Score every model on every case under every condition; write the tables and plot.

    Args:
        models: display name -> adapter (``RMRAdapter``, ``SliceAdapter``...).
        store: volume store (``image(cid) (D, M, H, W)``, ``label(cid) (D, H, W)``,
            ``modalities``).
        out_dir: output folder (created).
        case_ids: the cases (e.g. one fold's held-out cases).
        conditions: default :func:`sweep_conditions` ``()``.
        seed: case ``i`` is degraded with seed ``seed + i``.
        fusion_scores: compute EN, FMI, AG, SCD of the fused volumes.

    Returns:
        ``{"summary": {model: {condition: {metric: mean}}}, "rows": [...], "failed":
        [(model, case, message)], "files": [paths]}``.
    """
    say = log or (lambda _m: None)
    conds = list(conditions) if conditions is not None else sweep_conditions()
    ids = list(case_ids)
    if not ids:
        raise InputError(str(out_dir), "no cases to evaluate")
    if not models:
        raise ValueError("no models to evaluate")
    rows: list[dict[str, Any]] = []
    failed: list[tuple[str, str, str]] = []
    # one slice of the first case (the one with most tumour), clean and under the first
    # degradation, for the figure: condition -> {"sources" (M, H, W), model -> fused (H, W)}
    shown = [c for c in conds if c.degradation is None][:1] + [
        c for c in conds if c.degradation is not None
    ][:1]
    example: dict[str, dict[str, np.ndarray]] = {c.name: {} for c in shown}
    example_slice = None
    for i, cid in enumerate(ids):
        raw = np.asarray(store.image(cid), dtype=np.float32)  # (D, M, H, W)
        ref = np.asarray(store.label(cid))
        if i == 0:
            example_slice = int(np.argmax((ref > 0).reshape(ref.shape[0], -1).sum(1)))
        for name, adapter in models.items():
            channels = select_modalities(store.modalities, adapter.modalities, "store")
            clean = np.clip(raw[:, channels], 0.0, 1.0).transpose(1, 0, 2, 3)  # (M, D, H, W)
            clean = np.ascontiguousarray(clean)
            try:
                for cond in conds:
                    if cond.degradation is None:
                        images = clean
                    else:
                        x = torch.from_numpy(clean)[None]
                        images = cond.degradation(x, seed + i)[0].clamp(0.0, 1.0).numpy()
                    fused, labels = adapter(np.ascontiguousarray(images))
                    if i == 0 and cond.name in example:
                        example[cond.name].setdefault("sources", images[:, example_slice])
                        if fused is not None:
                            example[cond.name][name] = np.asarray(fused)[example_slice]
                    if labels.shape != ref.shape:
                        raise InputError(
                            cid, f"{name} returned labels {labels.shape}, expected {ref.shape}"
                        )
                    row: dict[str, Any] = {"model": name, "condition": cond.name,
                                           "factor": cond.factor, "severity": cond.severity,
                                           "case": cid}  # fmt: skip
                    row.update(dice_per_class(labels, ref))
                    if fused is not None and fusion_scores:
                        row.update(fusion_metrics(fused, clean))
                    rows.append(row)
                mine = [r for r in rows if r["model"] == name and r["case"] == cid]
                say(
                    f"{cid} {name}: mean Dice "
                    + ", ".join(f"{r['condition']} {r['Dice_mean']:.3f}" for r in mine[:2])
                    + f", worst {min(r['Dice_mean'] for r in mine):.3f}"
                )
            except Fuse4SegError as exc:
                failed.append((name, cid, str(exc)))
                say(f"FAILED {cid} ({name}): {exc}")
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name in models:
        summary[name] = {}
        for cond in conds:
            sel = [r for r in rows if r["model"] == name and r["condition"] == cond.name]
            summary[name][cond.name] = {
                m: _nanmean([float(r.get(m, math.nan)) for r in sel]) for m in METRICS
            }
            summary[name][cond.name]["cases"] = len(sel)
    files = _write(Path(out_dir), rows, summary, conds, list(models), len(ids))
    if example_slice is not None and all(v for v in example.values()):
        files.append(_plot_example(Path(out_dir) / "examples.png", example, ids[0],
                                   example_slice, [str(m) for m in store.modalities]))  # fmt: skip
    for name, cid, msg in failed:
        say(f"FAILED {cid} ({name}): {msg}")
    return {"summary": summary, "rows": rows, "failed": failed, "files": files}


def _fmt(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.3f}"


def _write(
    out: Path,
    rows: list[dict[str, Any]],
    summary: dict[str, dict[str, dict[str, float]]],
    conds: list[Condition],
    names: list[str],
    num_cases: int,
) -> list[Path]:
    import csv
    import io

    out.mkdir(parents=True, exist_ok=True)
    head = ["model", "condition", "factor", "severity"]

    def csv_text(records: list[dict[str, Any]], fields: list[str]) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", restval="")
        w.writeheader()
        for r in records:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
        return buf.getvalue()

    cases_csv, summary_csv, md, png = (
        out / "sweep_cases.csv",
        out / "sweep.csv",
        out / "sweep.md",
        out / "dice_vs_severity.png",
    )
    with atomic_path(cases_csv) as tmp:
        tmp.write_text(csv_text(rows, [*head, "case", *METRICS]))
    flat = [
        {
            "model": n,
            "condition": c.name,
            "factor": c.factor,
            "severity": c.severity,
            **summary[n][c.name],
        }  # fmt: skip
        for n in names
        for c in conds
    ]
    with atomic_path(summary_csv) as tmp:
        tmp.write_text(csv_text(flat, [*head, "cases", *METRICS]))
    lines = [
        "# Robustness sweep",
        "",
        f"{num_cases} case(s); mean Dice (NCR, ED, ET) per model and condition; each "
        "degradation seeded per case, the same for every model.",
        "",
        "| condition | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for c in conds:
        vals = [summary[n][c.name]["Dice_mean"] for n in names]
        lines.append(f"| {c.name} | " + " | ".join(_fmt(v) for v in vals) + " |")
    lines += ["", "Per class and fusion metrics (clean and paper_test):", ""]
    lines += ["| model | condition | " + " | ".join(METRICS) + " |",
              "|---|---|" + "---|" * len(METRICS)]  # fmt: skip
    for n in names:
        for cname in ("clean", "paper_test"):
            if cname in summary[n]:
                vals = [summary[n][cname][m] for m in METRICS]
                lines.append(f"| {n} | {cname} | " + " | ".join(_fmt(v) for v in vals) + " |")
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    _plot(png, summary, conds, names)
    return [md, summary_csv, cases_csv, png]


def _plot(
    path: Path,
    summary: dict[str, dict[str, dict[str, float]]],
    conds: list[Condition],
    names: list[str],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factors = [f for f in ("noise", "blur", "structure") if any(c.factor == f for c in conds)]
    if not factors:
        return
    fig, axes = plt.subplots(1, len(factors), figsize=(4.2 * len(factors), 3.4), squeeze=False)
    clean = next((c for c in conds if c.factor == "clean"), None)
    for ax, factor in zip(axes[0], factors, strict=True):
        pts = sorted((c for c in conds if c.factor == factor), key=lambda c: c.severity)
        for n in names:
            xs = ([0.0] if clean else []) + [c.severity for c in pts]
            ys = ([summary[n][clean.name]["Dice_mean"]] if clean else []) + [
                summary[n][c.name]["Dice_mean"] for c in pts
            ]
            ax.plot(xs, ys, marker="o", label=n)
        ax.set_title(f"{factor} ({', '.join(c.name.split(' ', 1)[1] for c in pts)})", fontsize=9)
        ax.set_xlabel("severity (x the paper's test value)")
        ax.set_ylabel("mean Dice (NCR, ED, ET)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _plot_example(
    path: Path,
    example: dict[str, dict[str, np.ndarray]],
    case: str,
    z: int,
    modalities: list[str],
) -> Path:
    """Rows: conditions; columns: the sources, then each model's fused image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(example)
    fused_names = [k for k in example[conds[0]] if k != "sources"]
    n_src = example[conds[0]]["sources"].shape[0]
    cols = n_src + len(fused_names)
    fig, axes = plt.subplots(len(conds), cols, figsize=(2.2 * cols, 2.8 * len(conds)),
                             squeeze=False)  # fmt: skip
    for r, cond in enumerate(conds):
        panels = [(m, example[cond]["sources"][k]) for k, m in enumerate(modalities[:n_src])]
        panels += [(f"{n} fused", example[cond].get(n)) for n in fused_names]
        for c, (title, img) in enumerate(panels):
            ax = axes[r][c]
            ax.axis("off")
            if img is None:
                continue
            ax.imshow(np.asarray(img).T, cmap="gray", vmin=0.0, vmax=1.0, origin="lower")
            ax.set_title(f"{title}\n{cond}", fontsize=8)
    fig.suptitle(f"{case}, slice {z}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
