"""``benchmark seg``: the rows of Table 1 and Table 3 of the Fuse4Seg paper, trained and
scored under identical data, split, follower and schedule.

Every method is trained by :class:`fuse4seg.train.trainer.Trainer` on the prepared store's
``train`` split with the same :class:`~fuse4seg.train.config.TrainConfig` (preset + YAML +
overrides; only ``method``, the ablation flags and ``seed`` differ), so every row makes the
same number of follower steps on the same batches. The final model (EMA leader + follower,
no checkpoint selection) is scored on every case of the ``test`` split: Dice, IoU and
HD95 (mm, at the store's voxel spacing) of the labels NCR, ED, ET and the regions WT, TC. IoU
and HD95 are 3D; Dice is 3D per case (``dice_level="case"``, default) or the 2D slice Dice of
2D BraTS papers (``"slice"``, see :mod:`fuse4seg.metrics.segmentation`); the level is recorded
in ``benchmark_seg.json`` and named in the tables.

Methods (``--methods``; default: all):

=================  ==========================================================================
disjoint pipelines (fuse, then segment with the SegNet follower on the fused image)
``average``        rule: mean of the modalities (the trainer's ``average`` method)
``max``            rule: per-pixel maximum
``laplacian``      rule: Laplacian pyramid
``dwt``            rule: discrete wavelet transform (PyWavelets)
``pca``            rule: PCA weighting
``disjoint``       our FusionNet trained on its own (CDDFuse's objective, ``disjoint_objective``),
                   frozen, then the follower
direct multi-channel segmentation (the M modalities as input channels)
``multichannel``   our SegNet with M input channels
``dynunet``        MONAI DynUNet 2D (nnU-Net-like), same schedule and loss
``swinunetr``      MONAI SwinUNETR 2D (sides padded to a multiple of 32)
Fuse4Seg and ablations (Table 3)
``bilevel-only``   incremental "+bi-level": bi-level, no L_decomp, no L_grad (alpha = beta = 0)
``bilevel-decomp`` incremental "+L_decomp": bi-level + L_decomp, no L_grad (beta = 0)
``fuse4seg``       full bi-level training (incremental "full", "+L_grad")
``no-bilevel``     leave-one-out: joint training of leader and follower (one loss)
``no-decomp``      leave-one-out: alpha = 0 (no L_decomp)
``no-grad``        leave-one-out: beta = 0 (no L_grad)
=================  ==========================================================================

Named row sets (:data:`ROW_SETS`, ``--rows``): ``table1`` (the rule pipelines, disjoint,
the multi-channel networks and fuse4seg), ``table3-incremental`` (the paper's Table 3:
``disjoint`` -> ``bilevel-only`` -> ``bilevel-decomp`` -> ``fuse4seg``, each row adding one
component; L_recon stays on in every row), ``table3-ablation`` (``fuse4seg`` and the
leave-one-out rows) and ``core`` (``average``, ``multichannel``, ``fuse4seg``).

Cross-validation (``folds=K``): every row is trained on every selected fold (``fold_ids``)
and seed, on the fold's training cases, and scored on the fold's held-out cases. The folds
are the store's ``splits_final.json`` when it holds K folds, else
:func:`fuse4seg.data.splits.make_folds` with the store's seed (the folds ``fuse4seg prepare
-o STORE --folds K`` would write; the store is not modified); ``OUT/splits_final.json``
records them. Each finished run writes ``runs/<row>/fold<i>/seed<s>/result.json``; a later
call with the same ``OUT``, config and folds reuses those results instead of retraining, and
the tables always summarise every result in ``OUT``, so a long cross-validation can be split
over sessions (``fold_ids``) and a partial run is usable. Tables then give mean ± sd over the
runs (folds x seeds) of each run's mean over its held-out cases; ``seg_per_fold.csv`` holds
the per-run numbers.

Rule pipelines train the follower on the rule's output at every step (warm-up and rollout),
the trainer methods ``rule-<name>`` of :mod:`fuse4seg.train.rule_methods` (registered
whenever :mod:`fuse4seg.train.methods` is imported; :func:`register_rule_methods` is
re-exported here).

Outputs in ``OUT``: ``seg_results.md`` (Dice, IoU, HD95 and cost tables), ``seg_results.csv``
(mean and std columns), ``seg_per_case.csv``, ``seg_examples_<group>.png``, ``report.html``,
``benchmark_seg.json`` and one trainer run folder per method and seed under ``runs/``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fuse4seg.benchmark.tables import MeanStd, mean_std, to_csv, to_markdown
from fuse4seg.errors import ConfigError, Fuse4SegError, InputError
from fuse4seg.io.atomic import atomic_path, save_json_atomic
from fuse4seg.metrics.segmentation import DICE_LEVELS
from fuse4seg.train.rule_methods import RULE_METHOD_RULES, register_rule_methods
from fuse4seg.train.run_folder import RunFolder

__all__ = [
    "SegMethod",
    "SEG_METHODS",
    "ROW_SETS",
    "expand_rows",
    "GROUPS",
    "LABELS",
    "register_rule_methods",
    "MethodRun",
    "SegBenchmarkResult",
    "run_seg_benchmark",
]

#: scored labels and regions, in table order
LABELS: tuple[str, ...] = ("NCR", "ED", "ET", "WT", "TC")
GROUPS: tuple[str, ...] = ("disjoint", "multichannel", "fuse4seg")
_GROUP_TITLES = {
    "disjoint": "Disjoint fusion-segmentation pipelines",
    "multichannel": "Direct multi-channel segmentation",
    "fuse4seg": "Fuse4Seg and ablations",
}
#: the rule pipelines: the mean (trainer method ``average``), then the ``rule-<name>`` methods
_RULES = ("average", *RULE_METHOD_RULES)


@dataclass(frozen=True)
class SegMethod:
    """One benchmark row.

    Attributes:
        name: the ``--methods`` name.
        group: ``disjoint``, ``multichannel`` or ``fuse4seg``.
        train_method: trainer method (:mod:`fuse4seg.train.methods`).
        flags: config overrides (ablation flags).
        backbone: external MONAI follower (``dynunet``, ``swinunetr``) or None (SegNet).
        description: one line for the report.
    """

    name: str
    group: str
    train_method: str
    flags: dict = field(default_factory=dict)
    backbone: str | None = None
    description: str = ""


SEG_METHODS: dict[str, SegMethod] = {
    m.name: m
    for m in [
        SegMethod("average", "disjoint", "average", description="mean of the modalities + SegNet"),
        *[
            SegMethod(r, "disjoint", f"rule-{r}", description=f"{r} fusion rule + SegNet")
            for r in _RULES[1:]
        ],
        SegMethod(
            "disjoint",
            "disjoint",
            "disjoint",
            description="FusionNet trained on its own (CDDFuse objective), then SegNet",
        ),
        SegMethod(
            "multichannel",
            "multichannel",
            "multichannel",
            description="SegNet on the M stacked modalities",
        ),
        SegMethod(
            "dynunet",
            "multichannel",
            "multichannel",
            backbone="dynunet",
            description="MONAI DynUNet 2D (nnU-Net-like) on the M modalities",
        ),
        SegMethod(
            "swinunetr",
            "multichannel",
            "multichannel",
            backbone="swinunetr",
            description="MONAI SwinUNETR 2D on the M modalities",
        ),
        SegMethod(
            "bilevel-only",
            "fuse4seg",
            "fuse4seg",
            {"use_decomp": False, "use_grad": False},
            description="Table 3 +bi-level: bi-level, no L_decomp, no L_grad",
        ),
        SegMethod(
            "bilevel-decomp",
            "fuse4seg",
            "fuse4seg",
            {"use_grad": False},
            description="Table 3 +L_decomp: bi-level + L_decomp, no L_grad",
        ),
        SegMethod("fuse4seg", "fuse4seg", "fuse4seg", description="Fuse4Seg, bi-level (full)"),
        SegMethod(
            "fuse4seg-v1",
            "fuse4seg",
            "fuse4seg-v1",
            description="Fuse4Seg first version: discriminator pre-training, cross-attention "
            "fusion, cooperative training (fuse4seg.v1)",
        ),
        SegMethod(
            "no-bilevel",
            "fuse4seg",
            "fuse4seg",
            {"bilevel": False},
            description="Fuse4Seg without bi-level (joint training)",
        ),
        SegMethod(
            "no-decomp",
            "fuse4seg",
            "fuse4seg",
            {"use_decomp": False},
            description="Fuse4Seg without L_decomp",
        ),
        SegMethod(
            "no-grad",
            "fuse4seg",
            "fuse4seg",
            {"use_grad": False},
            description="Fuse4Seg without L_grad",
        ),
    ]
}


#: named sets of rows (``--rows``), each in table order
ROW_SETS: dict[str, tuple[str, ...]] = {
    "table1": (
        "average",
        "max",
        "laplacian",
        "dwt",
        "pca",
        "disjoint",
        "multichannel",
        "dynunet",
        "swinunetr",
        "fuse4seg",
    ),
    "table3-incremental": ("disjoint", "bilevel-only", "bilevel-decomp", "fuse4seg"),
    "table3-ablation": ("fuse4seg", "no-bilevel", "no-decomp", "no-grad"),
    "core": ("average", "multichannel", "fuse4seg"),
}


def expand_rows(
    methods: Sequence[str] | None = None, row_sets: Sequence[str] | None = None
) -> list[str]:
    """Row names of ``methods`` plus those of the named ``row_sets``, without repeats
    (all rows of :data:`SEG_METHODS` when both are empty).

    Raises:
        ConfigError: an unknown row or row-set name.
    """
    unknown_sets = [r for r in row_sets or () if r not in ROW_SETS]
    if unknown_sets:
        raise ConfigError(f"unknown row sets {unknown_sets}; choose from {list(ROW_SETS)}")
    names = [*(methods or ()), *(m for r in row_sets or () for m in ROW_SETS[r])]
    if not names:
        return list(SEG_METHODS)
    names = list(dict.fromkeys(names))
    unknown = [m for m in names if m not in SEG_METHODS]
    if unknown:
        raise ConfigError(f"unknown benchmark methods {unknown}; choose from {list(SEG_METHODS)}")
    return names


@dataclass
class MethodRun:
    """One trained and scored (method, seed[, fold])."""

    method: str
    seed: int
    fold: int | None = None
    cases: list[dict[str, Any]] = field(default_factory=list)
    parameters: int = 0
    train_seconds: float = 0.0
    infer_ms_per_slice: float = 0.0
    follower_steps: int = 0
    leader_steps: int = 0
    example: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class SegBenchmarkResult:
    """All runs, the summary rows and the files written."""

    out_dir: Path
    runs: list[MethodRun] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def _example_slice(store, case_id: str) -> int:
    """The test slice with the most tumour voxels (the middle slice when there is none)."""
    label = np.asarray(store.label(case_id))
    counts = (label > 0).reshape(label.shape[0], -1).sum(axis=1)
    return int(np.argmax(counts)) if counts.max() > 0 else label.shape[0] // 2


def _score_model(
    model: torch.nn.Module,
    store,
    case_ids: Sequence[str],
    device: torch.device,
    example: tuple[str, int] | None,
    dice_level: str = "case",
) -> tuple[list[dict], float, dict]:
    """Per-case metrics, inference ms per slice, and the example slice's fused/pred."""
    from fuse4seg.metrics.segmentation import compute_segmentation_metrics, dice_scores
    from fuse4seg.train.evaluate import predict_volume, store_spacing

    rows, seconds, slices, ex = [], 0.0, 0, {}
    model.eval()
    for cid in case_ids:
        image = np.asarray(store.image(cid), dtype=np.float32)
        t0 = time.perf_counter()
        pred, fused = predict_volume(model, image, device, batch_size=16, return_fused=True)
        seconds += time.perf_counter() - t0
        slices += image.shape[0]
        gt = np.asarray(store.label(cid))
        scores = compute_segmentation_metrics(pred, gt, spacing=store_spacing(store, cid))
        row: dict[str, Any] = {"case_id": cid}
        for metric in ("Dice", "IoU", "HD95"):
            row.update({f"{metric}_{lab}": float(scores[lab][metric]) for lab in LABELS})
        if dice_level != "case":  # store volumes are (D, H, W): axial slices on axis 0
            row.update(dice_scores(pred, gt, level=dice_level, axis=0))
        rows.append(row)
        if example is not None and cid == example[0]:
            z = example[1]
            ex = {"pred": pred[z], "fused": None if fused is None else fused[z]}
    return rows, 1000.0 * seconds / max(1, slices), ex


def _dice_mean(row: dict) -> float:
    vals = [row.get(f"Dice_{k}") for k in ("NCR", "ED", "ET")]
    return float(np.mean(vals)) if all(v is not None for v in vals) else math.nan


def _train_one(
    method: SegMethod,
    seed: int,
    cfg_base,
    store,
    dataset,
    run_dir: Path,
    device: torch.device,
    test_ids: Sequence[str],
    example: tuple[str, int] | None,
    log: Callable[[str], None] | None,
    fold: int | None = None,
    dice_level: str = "case",
) -> MethodRun:
    from fuse4seg.train.trainer import Trainer

    cfg = dataclasses.replace(cfg_base, method=method.train_method, seed=seed, **method.flags)
    cfg = cfg.validate()
    if method.train_method == "fuse4seg-v1":
        return _train_v1(
            method, seed, cfg, store, run_dir, device, test_ids, example, log, dice_level
        )
    networks = None
    modalities = list(store.modalities)
    if method.backbone is not None:
        from fuse4seg.models.backbones import create_backbone

        torch.manual_seed(seed)
        networks = (
            None,
            create_backbone(method.backbone, len(modalities), cfg.num_classes, cfg.seg_preset),
        )
    trainer = Trainer(
        cfg,
        dataset,
        run_dir,
        store=store,
        modalities=modalities,
        normalisation={  # as fuse4seg.train.trainer.run_training records it in model.pt
            "scale": store.manifest.get("scale"),
            "size": store.manifest.get("size"),
            **dict(store.manifest.get("normalisation", {})),
        },
        input_size=int(store.manifest.get("size", 0)) or None,
        device=device,
        networks=networks,
        progress=False,
        run_info={
            "benchmark_method": method.name,
            "prep_dir": str(store.root),
            **(
                {}
                if fold is None
                else {
                    "fold": fold,
                    "fold_train_cases": store.case_ids("train"),
                    "fold_val_cases": store.case_ids("val"),
                }
            ),
        },
    )
    t0 = time.perf_counter()
    trainer.fit()
    run = MethodRun(
        method=method.name, seed=seed, fold=fold, train_seconds=time.perf_counter() - t0
    )
    run.follower_steps = trainer.state.follower_steps
    run.leader_steps = trainer.state.leader_steps
    model = trainer.export_model().to(device)
    run = _score_run(run, model, store, test_ids, device, example, log, dice_level)
    mode = getattr(getattr(model.fusion_net, "config", None), "output_mode", None)
    if example is not None and mode == "weights":  # the leader's glass-box view
        from fuse4seg.train.leader_view import plot_leader_view

        cid, z = example
        png = Path(run_dir) / "leader_view.png"
        plot_leader_view(
            model.fusion_net, np.asarray(store.image(cid)[z], dtype=np.float32),
            np.asarray(store.label(cid)[z]), list(store.modalities), png,
            title=f"{method.name}: {cid} slice {z}",
        )  # fmt: skip
        run.example["leader_png"] = str(png)
    return run


def _train_v1(
    method, seed, cfg, store, run_dir, device, test_ids, example, log, dice_level="case"
) -> MethodRun:
    """The first-version variant has its own two-stage loop (fuse4seg.v1), run on the shared
    schedule: pre-training for ``warmup_epochs`` and cooperative training for
    ``rollout_epochs`` (``steps_per_epoch`` batches of ``batch_size`` each); per cooperative
    batch ``inner_steps`` follower steps and one leader step."""
    from fuse4seg.models.model_file import load_model_file
    from fuse4seg.v1.runner import run_v1_training

    overrides = {
        "pretrain_epochs": cfg.warmup_epochs,
        "coop_epochs": cfg.rollout_epochs,
        "batch_size": cfg.batch_size,
        "follower_steps": cfg.inner_steps,
    }
    t0 = time.perf_counter()
    run_v1_training(
        cfg, store.root, run_dir, device=str(device), progress=False, v1_overrides=overrides
    )
    run = MethodRun(method=method.name, seed=seed, train_seconds=time.perf_counter() - t0)
    v1_cfg = RunFolder(run_dir).read_config()
    batches = v1_cfg.get("steps_per_epoch") or 0  # None: whole epochs (not counted)
    run.leader_steps = (v1_cfg["pretrain_epochs"] + v1_cfg["coop_epochs"]) * batches
    run.follower_steps = v1_cfg["coop_epochs"] * batches * v1_cfg["follower_steps"]
    model = load_model_file(Path(run_dir) / "model.pt").to(device)
    run = _score_run(run, model, store, test_ids, device, example, log, dice_level)
    if example is not None:  # the cross-attention of the example slice, for the report
        from fuse4seg.v1.attention_maps import attention_report_png, fuse_with_attention

        cid, z = example
        x = torch.as_tensor(np.asarray(store.image(cid)[z], dtype=np.float32))[None]  # (1, 2, H, W)
        with torch.no_grad():
            fused, attention, grid = fuse_with_attention(model.fusion_net, x.to(device))
        png = attention_report_png(
            x[0], fused[0].cpu(), attention.cpu(), grid, Path(run_dir) / "attention_example.png",
            names=tuple(store.modalities[:2]),
        )  # fmt: skip
        run.example["attention_png"] = str(png)
    return run


def _score_run(
    run: MethodRun, model, store, test_ids, device, example, log, dice_level="case"
) -> MethodRun:
    """Score a trained model on the test cases and fill ``run``'s cost columns."""
    run.parameters = sum(p.numel() for p in model.parameters())
    run.cases, run.infer_ms_per_slice, run.example = _score_model(
        model, store, test_ids, device, example, dice_level
    )
    if log:
        md = np.nanmean([_dice_mean(r) for r in run.cases])
        where = "" if run.fold is None else f" fold {run.fold}"
        log(
            f"{run.method}{where} seed {run.seed}: mean Dice {md:.3f}, "
            f"train {run.train_seconds:.0f}s, "
            f"{run.follower_steps} follower / {run.leader_steps} leader steps"
        )
    return run


def _score_columns() -> list[str]:
    return [f"{m}_{lab}" for m in ("Dice", "IoU", "HD95") for lab in LABELS]


def _case_values(case: dict) -> dict[str, float]:
    """One case's scores plus the mean Dice / IoU over NCR, ED and ET."""
    vals = {col: float(case.get(col, math.nan)) for col in _score_columns()}
    vals["Dice_mean"] = _dice_mean(case)
    vals["IoU_mean"] = float(np.mean([case[f"IoU_{k}"] for k in ("NCR", "ED", "ET")]))
    return vals


def _run_means(run: MethodRun) -> dict[str, float]:
    """Mean over ``run``'s scored cases of every score column (finite values only)."""
    per_case = [_case_values(c) for c in run.cases]
    cols = [*_score_columns(), "Dice_mean", "IoU_mean"]
    return {col: mean_std(v[col] for v in per_case).mean for col in cols}


def _summary_rows(runs: Sequence[MethodRun], order: Sequence[str], cv: bool = False) -> list[dict]:
    """One summary row per method.

    Without ``cv``: mean ± std over the scored cases, pooled over seeds. With ``cv``: mean ±
    std over the runs (folds x seeds) of each run's mean over its held-out cases.
    """
    rows = []
    for name in order:
        mruns = [r for r in runs if r.method == name and r.error is None]
        if not mruns:
            continue
        cases = [c for r in mruns for c in r.cases]
        seeds = sorted({r.seed for r in mruns})
        row: dict[str, Any] = {"method": name, "group": SEG_METHODS[name].group}
        if cv:
            row["folds"] = len({r.fold for r in mruns})
            row["seeds"] = len(seeds)
            row["runs"] = len(mruns)
        else:
            row["seeds"] = len(mruns)
        row["cases"] = len(cases)
        if cv:
            means = [_run_means(r) for r in mruns]
            for col in [*_score_columns(), "Dice_mean", "IoU_mean"]:
                row[col] = mean_std(m[col] for m in means)
        else:
            per_case = [_case_values(c) for c in cases]
            for col in [*_score_columns(), "Dice_mean", "IoU_mean"]:
                row[col] = mean_std(v[col] for v in per_case)
        # spread across seeds of the mean Dice (each seed's runs pooled over folds)
        seed_means = [
            float(np.nanmean([_dice_mean(c) for r in mruns if r.seed == sd for c in r.cases]))
            for sd in seeds
        ]
        row["Dice_mean_seed_std"] = float(np.std(seed_means)) if len(seed_means) > 1 else math.nan
        row["params_M"] = mruns[0].parameters / 1e6
        row["train_s"] = float(np.mean([r.train_seconds for r in mruns]))
        row["infer_ms_per_slice"] = float(np.mean([r.infer_ms_per_slice for r in mruns]))
        row["follower_steps"] = mruns[0].follower_steps
        row["leader_steps"] = mruns[0].leader_steps
        rows.append(row)
    return rows


def _table_sections(
    summary: list[dict], dice_level: str = "case"
) -> list[tuple[str, list[str], list[dict]]]:
    """(title, columns, rows) of the Markdown / HTML tables."""
    out = []
    dice_title = "Dice (3D, per case)" if dice_level == "case" else "Dice (2D, per axial slice)"
    for metric, title in (("Dice", dice_title), ("IoU", "IoU"), ("HD95", "HD95 (mm)")):
        cols = ["method", "group", *[f"{metric}_{k}" for k in LABELS]]
        if metric != "HD95":
            cols.append(f"{metric}_mean")
        rows = [{c: r[c] for c in cols} for r in summary]
        header = {c: c.replace(f"{metric}_", "") for c in cols}
        rows = [{header[c]: v for c, v in r.items()} for r in rows]
        out.append((title, [header[c] for c in cols], rows))
    cost_cols = [
        "method",
        *(["folds", "seeds", "runs"] if summary and "folds" in summary[0] else []),
        "params_M",
        "train_s",
        "infer_ms_per_slice",
        "follower_steps",
        "leader_steps",
        "Dice_mean_seed_std",
    ]
    out.append(("Cost", cost_cols, [{c: r[c] for c in cost_cols} for r in summary]))
    return out


def _write_reports(
    res: SegBenchmarkResult,
    store,
    example: tuple[str, int] | None,
    info: dict,
    figures: bool = True,
) -> None:
    """Markdown / CSV tables; with ``figures`` also the example figures and the HTML."""
    from fuse4seg.train.report import html_table, plot_slice_grid, write_html_report

    out = res.out_dir
    sections = _table_sections(res.summary, info.get("dice_level", "case"))
    md = ["# Segmentation benchmark", ""]
    hd95 = "HD95 in mm (both empty: 0; one empty: the volume diagonal, BraTS convention)."
    if info.get("folds"):
        k = len(info["folds"])
        done = info.get("fold_ids_done", [])
        partial = "" if len(done) == k else f" (partial: folds {done} of 0..{k - 1})"
        md.append(
            f"Store `{info['prep_dir']}` ({', '.join(info['modalities'])}; "
            f"{info['num_cases']} cases), patient-level {k}-fold cross-validation{partial}: "
            "each row is trained on a fold's training cases and scored on its held-out "
            f"cases. Preset `{info['preset']}`, seeds {info['seeds_done']}, device "
            f"{info['device']}. Mean ± sd over the runs (folds x seeds) of each run's mean "
            f"of per-case 3D scores over its held-out cases (per run: seg_per_fold.csv); {hd95}"
        )
    else:
        md.append(
            f"Store `{info['prep_dir']}` ({', '.join(info['modalities'])}; "
            f"{info['num_train_cases']} train / {info['num_test_cases']} test cases), preset "
            f"`{info['preset']}`, seeds {info['seeds']}, device {info['device']}. "
            f"Mean ± std over test cases (pooled over seeds) of per-case 3D scores; {hd95}"
        )
    md.append("")
    for title, cols, rows in sections:
        md += [f"## {title}", "", to_markdown(rows, cols)]
    with atomic_path(out / "seg_results.md") as tmp:
        tmp.write_text("\n".join(md))
    wide_cols = list(res.summary[0].keys()) if res.summary else ["method"]
    with atomic_path(out / "seg_results.csv") as tmp:
        tmp.write_text(to_csv(res.summary, wide_cols))
    cv = bool(info.get("folds"))
    case_rows = [
        {"method": r.method, **({"fold": r.fold} if cv else {}), "seed": r.seed, **c}
        for r in res.runs
        if r.error is None
        for c in r.cases
    ]
    with atomic_path(out / "seg_per_case.csv") as tmp:
        tmp.write_text(to_csv(case_rows))
    if cv:
        fold_rows = [
            {
                "method": r.method,
                "fold": r.fold,
                "seed": r.seed,
                "cases": len(r.cases),
                **_run_means(r),
                "train_s": r.train_seconds,
                "follower_steps": r.follower_steps,
                "leader_steps": r.leader_steps,
            }
            for r in sorted(res.runs, key=lambda r: (r.method, r.fold or 0, r.seed))
            if r.error is None
        ]
        with atomic_path(out / "seg_per_fold.csv") as tmp:
            tmp.write_text(to_csv(fold_rows))
    if not figures:
        return

    images = []
    if example is not None and res.runs:
        cid, z = example
        image = np.asarray(store.image(cid)[z], dtype=np.float32)  # (M, H, W)
        seed0: dict[str, MethodRun] = {}  # first successful seed of each method
        for r in res.runs:
            if r.error is None and r.example and r.method not in seed0:
                seed0[r.method] = r
        for group in GROUPS:  # one figure per table group keeps the figures readable
            members = {m: r for m, r in seed0.items() if SEG_METHODS[m].group == group}
            if not members:
                continue
            row = {
                "title": f"{cid} slice {z}",
                "sources": {m: image[i] for i, m in enumerate(store.modalities)},
                "fused": {m: r.example.get("fused") for m, r in members.items()},
                "gt": np.asarray(store.label(cid)[z]),
                "preds": {m: r.example["pred"] for m, r in members.items()},
            }
            png = out / f"seg_examples_{group}.png"
            plot_slice_grid([row], png)
            images.append((png, f"{_GROUP_TITLES[group]}: test case {cid}, slice {z}"))
        for m, r in seed0.items():
            if r.example.get("leader_png") and Path(r.example["leader_png"]).is_file():
                caption = f"{m}: the leader's weight maps and transfer function, {cid} slice {z}"
                images.append((Path(r.example["leader_png"]), caption))
        v1_run = seed0.get("fuse4seg-v1")
        if v1_run is not None and v1_run.example.get("attention_png"):
            png = Path(v1_run.example["attention_png"])
            images.append((png, f"fuse4seg-v1 cross-attention (mean over heads), {cid} slice {z}"))

    html_sections: list[dict] = [{"heading": "Setup", "text": md[2]}]
    for title, cols, rows in sections:
        table_rows = []
        for r in rows:
            table_rows.append([r[c].mean if isinstance(r[c], MeanStd) else r[c] for c in cols])
        bold = [] if title.startswith("HD95") or title == "Cost" else range(1, len(cols))
        html_sections.append(
            {"heading": title, "html": html_table(cols, table_rows, bold_max_columns=bold)}
        )
    if images:
        html_sections.append({"heading": "Example", "images": images})
    if res.failed:
        html_sections.append(
            {"heading": "Failed", "text": "; ".join(f"{k}: {v}" for k, v in res.failed.items())}
        )
    write_html_report(out / "report.html", "fuse4seg segmentation benchmark", html_sections)
    res.files = [
        out / n
        for n in (
            "seg_results.md",
            "seg_results.csv",
            "seg_per_case.csv",
            *(["seg_per_fold.csv", "splits_final.json"] if cv else []),
            "report.html",
            "benchmark_seg.json",
        )
    ]
    res.files.extend(png for png, _ in images)


#: per-run result file of a cross-validation benchmark (reused by later calls)
_RESULT_NAME = "result.json"


@dataclass
class _Setting:
    """Where one group of runs trains and scores: the store's fixed split or one fold."""

    fold: int | None
    store: Any  # PreparedStore or its fold view
    train_ids: list[str]
    test_ids: list[str]

    def run_dir(self, out: Path, name: str, seed: int) -> Path:
        base = out / "runs" / name
        return (base if self.fold is None else base / f"fold{self.fold}") / f"seed{seed}"


def _benchmark_folds(store, k: int, log: Callable[[str], None] | None) -> list[dict]:
    """The store's folds when it holds ``k`` of them, else the folds ``prepare --folds k``
    would write (store seed); the store is not modified."""
    from fuse4seg.data.splits import make_folds

    folds = store.folds
    if folds is not None and len(folds) == k:
        return folds
    seed = int(store.manifest.get("seed", 0))
    try:
        folds = make_folds(store.case_ids(), k, seed)
    except ConfigError as exc:
        raise InputError(store.root, str(exc)) from None
    if log:
        have = "no folds" if store.folds is None else f"{len(store.folds)} folds"
        log(
            f"the store has {have}: using {k} folds made with seed {seed} (the folds "
            f"`fuse4seg prepare -o {store.root} --folds {k}` writes)"
        )
    return folds


def _result_key(cfg_base, setting: _Setting, dice_level: str = "case") -> dict[str, Any]:
    """What a stored cross-validation result must match to be reused (results scored with
    3D case Dice carry no ``dice_level``: those written before the option match)."""
    key = {
        "config": json.loads(json.dumps(cfg_base.to_dict())),
        "train_cases": list(setting.train_ids),
        "test_cases": list(setting.test_ids),
    }
    if dice_level != "case":
        key["dice_level"] = dice_level
    return key


def _save_result(run: MethodRun, run_dir: Path, key: dict[str, Any]) -> None:
    data = {
        "method": run.method,
        "fold": run.fold,
        "seed": run.seed,
        **key,
        "cases": run.cases,
        "parameters": run.parameters,
        "train_seconds": run.train_seconds,
        "infer_ms_per_slice": run.infer_ms_per_slice,
        "follower_steps": run.follower_steps,
        "leader_steps": run.leader_steps,
    }
    save_json_atomic(data, run_dir / _RESULT_NAME)


def _load_results(
    out: Path,
    keys: dict[int, dict[str, Any]],
    log: Callable[[str], None] | None,
) -> dict[tuple[str, int, int], MethodRun]:
    """Finished cross-validation runs in ``out`` whose config and cases match ``keys``
    (fold -> :func:`_result_key`); others are left out with a log line."""
    found: dict[tuple[str, int, int], MethodRun] = {}
    for path in sorted(out.glob(f"runs/*/fold*/seed*/{_RESULT_NAME}")):
        try:
            data = json.loads(path.read_text())
            name, fold, seed = str(data["method"]), int(data["fold"]), int(data["seed"])
        except (OSError, ValueError, KeyError, TypeError):
            if log:
                log(f"ignoring unreadable result {path}")
            continue
        key = keys.get(fold)
        if (
            name not in SEG_METHODS
            or key is None
            or any(data.get(k) != v for k, v in key.items())
            or data.get("dice_level", "case") != key.get("dice_level", "case")
        ):
            if log:
                log(f"ignoring {path}: made with another config, fold set or case list")
            continue
        run = MethodRun(method=name, seed=seed, fold=fold, cases=list(data.get("cases", [])))
        for attr in (
            "parameters",
            "train_seconds",
            "infer_ms_per_slice",
            "follower_steps",
            "leader_steps",
        ):
            setattr(run, attr, type(getattr(run, attr))(data.get(attr, 0)))
        found[(name, fold, seed)] = run
    return found


def run_seg_benchmark(
    prep_dir: str | Path,
    out_dir: str | Path,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    preset: str = "base",
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
    max_test_cases: int | None = None,
    log: Callable[[str], None] | None = print,
    row_sets: Sequence[str] | None = None,
    folds: int | None = None,
    fold_ids: Sequence[int] | None = None,
    dice_level: str = "case",
) -> SegBenchmarkResult:
    """Train and score the selected methods on a prepared store; write tables and report.

    Args:
        prep_dir: a ``fuse4seg prepare`` store (its train split trains, its test split scores;
            with ``folds``, each fold's training cases train and its held-out cases score).
        out_dir: output folder.
        methods: names from :data:`SEG_METHODS`.
        seeds: one training run per method and seed (and fold).
        preset: training preset (``tiny``, ``base``, ``paper``).
        config_file: YAML overrides of the preset (same keys as ``fuse4seg train``).
        overrides: further config overrides (e.g. ``{"warmup_epochs": 1}``); ``method``,
            ``seed`` and the ablation flags are set per row and may not be given.
        max_test_cases: score only the first N test (held-out) cases.
        row_sets: names from :data:`ROW_SETS`, added to ``methods`` (both empty: all rows).
        folds: K for patient-level K-fold cross-validation (see the module docstring).
        fold_ids: the folds to run now (default: all K); results of other folds already in
            ``out_dir`` are reused in the tables.
        dice_level: ``"case"`` (3D Dice per case) or ``"slice"`` (2D slice Dice over the
            axial slices); IoU and HD95 are 3D either way.

    Returns:
        :class:`SegBenchmarkResult`; a method that fails (bad config, NaN loss) is recorded
        in ``failed`` and the others still run.
    """
    from fuse4seg.data import PreparedStore, SliceDataset, assert_patient_level_split
    from fuse4seg.device import resolve_device
    from fuse4seg.train.config import make_config

    names = expand_rows(methods, row_sets)
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ConfigError("give at least one seed")
    overrides = dict(overrides or {})
    fixed = {"method", "seed", "bilevel", "use_decomp", "use_grad"} & set(overrides)
    if fixed:
        raise ConfigError(f"config keys {sorted(fixed)} are set per benchmark row")
    if folds is None and fold_ids:
        raise ConfigError("--fold-ids needs --folds K")
    if dice_level not in DICE_LEVELS:
        raise ConfigError(f"dice level must be one of {DICE_LEVELS}, got {dice_level!r}")
    if folds is not None and "fuse4seg-v1" in names:
        raise ConfigError("row fuse4seg-v1 trains on the store's split only; not with --folds")
    cfg_base = make_config(preset, config_file, **overrides)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a folder")
    store = PreparedStore(prep_dir)
    try:
        assert_patient_level_split(store.manifest)
    except ValueError as exc:
        raise InputError(Path(prep_dir), f"split is not patient-level ({exc})") from None

    fold_list: list[dict] = []
    if folds is None:
        settings = [
            _Setting(None, store, list(store.case_ids("train")), list(store.case_ids("test")))
        ]
    else:
        fold_list = _benchmark_folds(store, int(folds), log)
        k = len(fold_list)
        ids = list(range(k)) if not fold_ids else list(dict.fromkeys(int(i) for i in fold_ids))
        bad = [i for i in ids if not 0 <= i < k]
        if bad:
            raise ConfigError(f"--fold-ids {bad} out of range for {k} folds (0..{k - 1})")
        settings = []
        for i in ids:
            view = store.fold(i, fold_list)
            settings.append(
                _Setting(i, view, list(view.case_ids("train")), list(view.case_ids("val")))
            )
    for st in settings:
        if max_test_cases is not None:
            st.test_ids = st.test_ids[:max_test_cases]
        where = "the store's" if st.fold is None else f"fold {st.fold}'s"
        if not st.test_ids:
            raise InputError(Path(prep_dir), f"{where} test split is empty")
        if len(st.train_ids) < cfg_base.patients_per_batch:
            fix = "" if st.fold is None else ": use more folds (--folds) or more cases"
            raise InputError(
                Path(prep_dir),
                f"{where} training split has {len(st.train_ids)} case(s); patients_per_batch "
                f"needs >= {cfg_base.patients_per_batch}{fix}",
            )
    cv = folds is not None
    dev = resolve_device(device) if isinstance(device, str) else device
    register_rule_methods()
    first = settings[0]
    example = (first.test_ids[0], _example_slice(store, first.test_ids[0]))
    res = SegBenchmarkResult(out_dir=out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    info: dict[str, Any] = {
        "prep_dir": str(prep_dir),
        "modalities": list(store.modalities),
        "methods": names,
        "seeds": seeds,
        "preset": preset,
        "config_file": None if config_file is None else str(config_file),
        "overrides": overrides,
        "config": cfg_base.to_dict(),
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "dice_level": dice_level,
    }
    done: dict[tuple[str, int, int], MethodRun] = {}
    if cv:
        save_json_atomic(fold_list, out / "splits_final.json")
        all_settings = {
            i: _Setting(
                i, None, f["train"], f["val"][:max_test_cases] if max_test_cases else f["val"]
            )
            for i, f in enumerate(fold_list)
        }
        keys = {i: _result_key(cfg_base, st, dice_level) for i, st in all_settings.items()}
        done = _load_results(out, keys, log)
        res.runs.extend(done.values())
        info.update(
            folds=fold_list,
            fold_ids=[st.fold for st in settings],
            num_cases=len(store.case_ids()),
        )
    else:
        info.update(
            train_cases=first.train_ids,
            test_cases=first.test_ids,
            num_train_cases=len(first.train_ids),
            num_test_cases=len(first.test_ids),
        )

    def write_all(complete: bool) -> None:
        present = {r.method for r in res.runs}
        order = [m for m in SEG_METHODS if m in present]  # canonical row order
        res.summary = _summary_rows(res.runs, order, cv=cv)
        if cv:
            ok = [r for r in res.runs if r.error is None]
            info.update(
                fold_ids_done=sorted({r.fold for r in ok}),
                seeds_done=sorted({r.seed for r in ok}),
            )
        info.update(
            wall_seconds=time.perf_counter() - t_start, failed=res.failed, complete=complete
        )
        save_json_atomic(info, out / "benchmark_seg.json")
        if res.summary:
            _write_reports(res, store, example, info, figures=complete)

    for st in settings:
        for name in names:
            for seed in seeds:
                run_dir = st.run_dir(out, name, seed)
                if (name, st.fold, seed) in done:
                    if log:
                        log(f"{name} fold {st.fold} seed {seed}: reusing {run_dir}/{_RESULT_NAME}")
                    continue
                if run_dir.exists() and (cv or (run_dir / "last.pt").exists()):
                    shutil.rmtree(run_dir)  # a run is always trained from scratch
                # same slices and sampling for every row; augmentation draws depend on the seed
                dataset = SliceDataset(
                    st.store,
                    "train",
                    augment=cfg_base.augment,
                    tumour_fraction=cfg_base.tumour_fraction,
                    seed=seed,
                )
                tag = (
                    f"{name}/seed{seed}" if st.fold is None else f"{name}/fold{st.fold}/seed{seed}"
                )
                try:
                    run = _train_one(
                        SEG_METHODS[name],
                        seed,
                        cfg_base,
                        st.store,
                        dataset,
                        run_dir,
                        dev,
                        st.test_ids,
                        example if st is first else None,
                        log,
                        fold=st.fold,
                        dice_level=dice_level,
                    )
                except (Fuse4SegError, ValueError, RuntimeError) as exc:
                    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    res.failed[tag] = msg
                    res.runs.append(MethodRun(method=name, seed=seed, fold=st.fold, error=msg))
                    if log:
                        log(f"FAILED {tag}: {msg}")
                        if not isinstance(exc, Fuse4SegError):
                            log(traceback.format_exc(limit=3))
                    continue
                if cv:
                    _save_result(run, run_dir, _result_key(cfg_base, st, dice_level))
                res.runs.append(run)
                write_all(complete=False)  # partial tables after every run (long CPU runs)
    write_all(complete=True)
    return res
