"""The end-to-end demo: phantom -> prepare -> train 3 methods -> evaluate -> report.html.

``run_demo(out_dir)`` writes ``out_dir/phantom`` (synthetic BraTS-like NIfTI cases),
``out_dir/prepared`` (the training store), ``out_dir/runs/<method>`` (one run folder per
method), ``out_dir/results.json`` (per-case and mean scores) and ``out_dir/report.html``
(per-region Dice/IoU table, example slices, training curves).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fuse4seg.device import resolve_device
from fuse4seg.errors import InputError
from fuse4seg.io.atomic import save_json_atomic
from fuse4seg.io.output_policy import claim_output_folder

__all__ = ["DEMO_METHODS", "DemoSettings", "run_demo"]

#: methods trained by the demo, in table order
DEMO_METHODS: tuple[str, ...] = ("fuse4seg", "average", "multichannel")


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run (full or ``--quick``)."""

    cases: int = 20
    shape: tuple[int, int, int] = (96, 96, 48)
    scale: float = 2 / 3  # 96 -> 64 pixels in-plane
    size: int = 64
    split: tuple[float, float, float] = (0.6, 0.1, 0.3)  # 12 / 2 / 6 of 20 cases
    overrides: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def quick(cls, cases: int | None = None) -> DemoSettings:
        """Seconds-long smoke variant (tiny volumes, a handful of steps)."""
        return cls(
            cases=cases or 6,
            shape=(40, 40, 16),
            scale=1.0,
            size=32,
            split=(0.6, 0.2, 0.2),
            overrides=(
                ("warmup_epochs", 1),
                ("rollout_epochs", 1),
                ("steps_per_epoch", 2),
                ("batch_size", 4),
                ("inner_steps", 2),
            ),
        )


def _scores_table(summaries: dict[str, dict[str, float]]) -> tuple[list[str], list[list]]:
    regions = ("NCR", "ED", "ET")
    header = ["method"]
    header += [f"Dice {r}" for r in regions] + ["mean Dice"]
    header += [f"IoU {r}" for r in regions] + ["mean IoU"]
    header += ["Dice WT", "Dice TC", "HD95 mean (mm, lower is better)"]
    rows = []
    for method, s in summaries.items():
        hd = [s.get(f"HD95_{r}") for r in regions]
        hd_vals = [h for h in hd if h is not None and h == h]
        rows.append(
            [method]
            + [s.get(f"Dice_{r}", float("nan")) for r in regions]
            + [s.get("Dice_mean", float("nan"))]
            + [s.get(f"IoU_{r}", float("nan")) for r in regions]
            + [s.get("IoU_mean", float("nan"))]
            + [s.get("Dice_WT", float("nan")), s.get("Dice_TC", float("nan"))]
            + [float(np.mean(hd_vals)) if hd_vals else float("nan")]
        )
    return header, rows


def _case_dice(row: dict[str, Any]) -> float:
    """Mean Dice of NCR, ED, ET of one case (classes absent from both masks skipped)."""
    v = np.array([row.get(f"Dice_{c}", np.nan) for c in ("NCR", "ED", "ET")], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def _per_case_table(
    per_case: dict[str, list[dict[str, Any]]],
) -> tuple[list[str], list[list], dict[str, tuple[float, float]]]:
    """Mean Dice (NCR, ED, ET) per test case and method, then the mean and sd over cases.

    Returns the header, the rows and ``{method: (mean, sd)}``.
    """
    methods = list(per_case)
    cases = [r["case_id"] for r in per_case[methods[0]]] if methods else []
    values = {m: {r["case_id"]: _case_dice(r) for r in per_case[m]} for m in methods}
    rows: list[list] = [[c] + [values[m].get(c, float("nan")) for m in methods] for c in cases]
    spread = {}
    for m in methods:
        v = np.array([values[m][c] for c in cases], dtype=np.float64)
        v = v[np.isfinite(v)]
        mean = float(v.mean()) if len(v) else float("nan")
        spread[m] = (mean, float(v.std(ddof=1)) if len(v) > 1 else float("nan"))
    rows.append(["mean"] + [spread[m][0] for m in methods])
    rows.append(["sd over cases"] + [spread[m][1] for m in methods])
    return ["case"] + methods, rows, spread


def _interpretation(spread: dict[str, tuple[float, float]], n_cases: int) -> str:
    """Plain reading of the scores: who leads, by how much, against the case spread."""
    spread = {m: v for m, v in spread.items() if np.isfinite(v[0])}
    if not spread:
        return "No test case has a tumour class to score."
    ranked = sorted(spread, key=lambda m: spread[m][0], reverse=True)
    parts = [
        "Mean Dice over the test cases: "
        + ", ".join(f"{m} {spread[m][0]:.3f}" for m in ranked)
        + "."
    ]
    if "fuse4seg" in spread and "average" in spread:
        diff = spread["fuse4seg"][0] - spread["average"][0]
        sd = max(spread["fuse4seg"][1], spread["average"][1])
        se = sd / max(n_cases, 1) ** 0.5
        parts.append(
            f"Fuse4Seg's single fused image against the plain modality mean (its prior): "
            f"{diff:+.3f}; the per-case sd is up to {sd:.3f}, so a gap below about "
            f"{2 * se:.3f} (twice the standard error over {n_cases} cases) is within the case "
            "spread."
        )
    if "multichannel" in spread and "fuse4seg" in spread:
        gap = spread["multichannel"][0] - spread["fuse4seg"][0]
        parts.append(
            f"The follower fed both modalities as channels scores {gap:+.3f} above the fused "
            "image: what one intensity channel loses (see the class contrast table below)."
        )
    parts.append(
        "A second training seed moves these numbers by several hundredths (docs/benchmarks.md "
        "gives the spread over 3 seeds): read one run as one draw."
    )
    return " ".join(parts)


def _provenance(
    preset: str, seed: int, device: str, settings: DemoSettings, methods: Sequence[str]
) -> list[list[str]]:
    """Rows (item, value) that say what produced the report."""
    import os
    import platform
    import sys

    from fuse4seg import __version__
    from fuse4seg.train.run_folder import git_hash

    return [
        ["fuse4seg", __version__],
        ["git commit", git_hash() or "unknown (not a git checkout)"],
        ["command", " ".join(sys.argv) or "(Python API)"],
        ["date", time.strftime("%Y-%m-%d %H:%M:%S %Z")],
        ["Python / PyTorch", f"{platform.python_version()} / {torch.__version__}"],
        ["machine", f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs"],
        ["device, threads", f"{resolve_device(device)}, {torch.get_num_threads()}"],
        ["preset, seed", f"{preset}, training seed {seed} (phantom seed 0)"],
        [
            "data",
            f"{settings.cases} phantom cases {settings.shape}, in-plane scale "
            f"{settings.scale:.3f}, split {settings.split}",
        ],
        ["configs", ", ".join(f"runs/{m}/config.yaml" for m in methods)],
    ]


def _example_rows(store: Any, models: dict[str, Any], case_ids: Sequence[str], n: int = 3):
    rows = []
    for cid in list(case_ids)[:n]:
        label = np.asarray(store.label(cid))
        z = int(np.argmax((label > 0).reshape(label.shape[0], -1).sum(1)))
        image = np.array(store.image(cid)[z : z + 1], dtype=np.float32)  # (1, M, H, W)
        x = torch.from_numpy(image)
        fused, preds = {}, {}
        with torch.no_grad():
            for name, model in models.items():
                f, logits = model(x)
                fused[name] = None if f is None else f[0, 0].numpy()
                preds[name] = logits.argmax(1)[0].numpy()
        rows.append(
            {
                "title": f"{cid} z={z}",
                "sources": {m: image[0, k] for k, m in enumerate(store.modalities)},
                "fused": fused,
                "gt": label[z],
                "preds": preds,
            }
        )
    return rows


def _leader_section(
    store: Any, models: dict[str, Any], case_ids: Sequence[str], png: Path
) -> list[dict[str, Any]]:
    """Report section: the fuse4seg leader's weight/transfer view of one test slice and, per
    single-channel follower input (fused image, x_avg), how far the tumour classes stand from
    healthy brain (``class_contrast``, mean over the test cases)."""
    from fuse4seg.train.leader_view import class_contrast, plot_leader_view

    leader_model = models.get("fuse4seg")
    if leader_model is None or leader_model.fusion_net is None or not case_ids:
        return []
    cid = case_ids[0]
    label = np.asarray(store.label(cid))
    z = int(np.argmax((label > 0).reshape(label.shape[0], -1).sum(1)))
    image = np.asarray(store.image(cid), dtype=np.float32)
    plot_leader_view(
        leader_model.fusion_net, image[z], label[z], list(store.modalities), png, f"{cid} z={z}"
    )
    keys = ["NCR_vs_healthy", "ED_vs_healthy", "ET_vs_healthy", "d_healthy_ED", "d_NCR_ED",
            "d_ED_ET"]  # fmt: skip
    rows = []
    for name in ("fuse4seg", "average"):
        if name not in models:
            continue
        values = []
        for case in case_ids:
            img = np.asarray(store.image(case), dtype=np.float32)  # (D, M, H, W)
            with torch.no_grad():  # the follower's input only: x_f, or x_avg for `average`
                single = models[name].fuse(torch.from_numpy(img))[:, 0].numpy()  # (D, H, W)
            lab = np.asarray(store.label(case))
            values.append(class_contrast(single, lab, img.max(axis=1) > 0))
        label_name = "fused image (fuse4seg)" if name == "fuse4seg" else "x_avg (average)"
        rows.append([label_name] + [float(np.nanmean([v[k] for v in values])) for k in keys])
    from fuse4seg.train.report import html_table

    return [
        {
            "heading": "What the leader takes from which modality",
            "text": (
                "Sources, fused image, the leader's weight map per modality and its per-pixel "
                "transfer function (axes: the two sources' intensities; dots: class means of "
                "the slice). Table: class mean minus healthy-brain mean, in standard "
                "deviations of the brain's intensities, and Cohen's d between classes (larger "
                "= easier to tell apart by intensity), mean over the test cases."
            ),
            "images": [(png, "leader view")],
            "html": html_table(["input image", *keys], rows, digits=2),
        }
    ]


def run_demo(
    out_dir: str | Path,
    cases: int | None = None,
    preset: str = "tiny",
    device: str = "auto",
    quick: bool = False,
    methods: Sequence[str] = DEMO_METHODS,
    log: Callable[[str], None] = print,
    progress: bool = True,
    overwrite: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the whole demo into ``out_dir``; returns ``{"summaries", "seconds", "report"}``.

    ``out_dir`` must be empty or absent unless ``overwrite`` (then the demo's own outputs in
    it are replaced). The device is checked before anything is written. ``seed`` is the
    training seed of every method (the phantom and its split do not change with it).

    Raises:
        InputError: ``out_dir`` is a file, or not empty and ``overwrite`` is False.
        ConfigError: the device is not available.
    """
    from fuse4seg.data.phantom import write_phantom_dataset
    from fuse4seg.data.prepare import PrepareOptions, prepare_dataset
    from fuse4seg.data.store import PreparedStore
    from fuse4seg.models.model_file import load_model_file
    from fuse4seg.train.config import make_config
    from fuse4seg.train.evaluate import evaluate_cases, summarise
    from fuse4seg.train.report import (
        html_table,
        plot_slice_grid,
        plot_validation_comparison,
        write_html_report,
    )
    from fuse4seg.train.trainer import run_training

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a folder")
    settings = (
        DemoSettings.quick(cases) if quick else DemoSettings(cases=cases or DemoSettings.cases)
    )
    if settings.cases < 5:
        raise InputError(out, f"the demo needs >= 5 cases (train/val/test), got {settings.cases}")
    resolve_device(device)  # an unavailable device fails before anything is written
    claim_output_folder(out, overwrite, what="the demo's outputs")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    phantom_dir, prep_dir, runs_dir = out / "phantom", out / "prepared", out / "runs"
    shutil.rmtree(phantom_dir, ignore_errors=True)
    log(f"[1/4] phantom: {settings.cases} cases {settings.shape} -> {phantom_dir}")
    write_phantom_dataset(phantom_dir, settings.cases, settings.shape, seed=0)
    log(f"[2/4] prepare -> {prep_dir}")
    options = PrepareOptions(
        modalities=("t1ce", "flair"), size=settings.size, scale=settings.scale, split=settings.split
    )
    result = prepare_dataset(phantom_dir, prep_dir, options, overwrite=True, log=log)
    if not result.ok:
        raise InputError(prep_dir, f"prepare failed for {sorted(result.failed)}")
    store = PreparedStore(prep_dir)
    timings["data"] = time.perf_counter() - t0

    models, summaries, per_case, curves = {}, {}, {}, {}
    test_ids = store.case_ids("test")
    for k, method in enumerate(methods, start=1):
        t = time.perf_counter()
        log(f"[3/4] train {method} ({k}/{len(methods)}, preset {preset})")
        cfg = make_config(preset, method=method, seed=seed, **dict(settings.overrides))
        run_dir = runs_dir / method
        shutil.rmtree(run_dir, ignore_errors=True)
        run_training(cfg, prep_dir, run_dir, device=device, progress=progress)
        timings[f"train {method}"] = time.perf_counter() - t
        t = time.perf_counter()
        model = load_model_file(run_dir / "model.pt")
        rows = evaluate_cases(model, store, test_ids, batch_size=16)
        models[method], per_case[method] = model, rows
        summaries[method] = summarise(rows)
        curves[method] = run_dir / "metrics.jsonl"
        timings[f"evaluate {method}"] = time.perf_counter() - t
        log(
            f"      {method}: test mean Dice {summaries[method].get('Dice_mean', float('nan')):.3f}"
            f" ({timings[f'train {method}']:.0f} s training)"
        )

    log(f"[4/4] report -> {out / 'report.html'}")
    header, rows = _scores_table(summaries)
    case_header, case_rows, spread = _per_case_table(per_case)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    plot_slice_grid(_example_rows(store, models, test_ids), figs / "examples.png")
    plot_validation_comparison(curves, figs / "validation.png")
    leader_section = _leader_section(store, models, test_ids, figs / "leader_view.png")
    seconds = time.perf_counter() - t0
    sections = [
        {
            "heading": "Segmentation of the test cases",
            "text": (
                f"{len(test_ids)} test phantom cases ({', '.join(test_ids)}), per-case 3D scores "
                "averaged over cases. Every method uses the same data, follower network, "
                f"schedule and evaluation (preset {preset}). Total wall time {seconds:.0f} s."
            ),
            "html": html_table(
                header,
                rows,
                digits=3,
                bold_max_columns=tuple(range(1, 1 + 8 + 2)),
                bold_min_columns=(len(header) - 1,),
            )
            + "<p>Bold: the best value of each column (Dice and IoU: highest; HD95: lowest).</p>",
        },
        {
            "heading": "Reading the numbers",
            "text": _interpretation(spread, len(test_ids)),
        },
        {
            "heading": "Per test case (mean Dice of NCR, ED, ET)",
            "html": html_table(case_header, case_rows, digits=3),
        },
        {
            "heading": "Example slices",
            "text": "Sources, fused images, ground truth and predictions "
            "(NCR red, ED green, ET yellow) of the tumour-richest slice of test cases.",
            "images": [(figs / "examples.png", "example test slices")],
        },
        *leader_section,
        {
            "heading": "Training curves",
            "images": [(figs / "validation.png", "validation mean Dice per epoch")]
            + [
                (runs_dir / m / "curves.png", f"{m}: losses and validation Dice")
                for m in methods
                if (runs_dir / m / "curves.png").exists()
            ],
        },
        {
            "heading": "Timings (s)",
            "html": html_table(
                ["stage", "seconds"], [[k, v] for k, v in timings.items()], digits=1
            ),
        },
        {
            "heading": "Provenance",
            "html": html_table(
                ["item", "value"], _provenance(preset, seed, device, settings, methods)
            ),
        },
    ]
    write_html_report(out / "report.html", "fuse4seg demo: phantom segmentation", sections)
    save_json_atomic(
        {"summaries": summaries, "per_case": per_case, "timings": timings, "seconds": seconds},
        out / "results.json",
    )
    return {
        "summaries": summaries,
        "seconds": seconds,
        "report": out / "report.html",
        "table": (header, rows),
    }
