"""``fuse4seg benchmark``: reproduce the papers' comparison tables.

Sub-commands::

    fuse4seg benchmark seg -d PREP_DIR -o OUT [--preset tiny|base|paper] [--methods ...]
                           [--rows table3-incremental ...] [--folds K [--fold-ids I ...]]
    fuse4seg benchmark fusion -i HARVARD_DIR -o OUT [--rules ...] [--steps N]
    fuse4seg benchmark robustness ...   (RMR-Fusion robustness table)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fuse4seg.errors import ConfigError

__all__ = ["HELP", "add_arguments", "run"]

HELP = "reproduce the papers' comparison tables"

#: rows of fuse4seg.benchmark.seg.SEG_METHODS, spelled out so `--help` does not import torch
#: (a test keeps the two equal)
_SEG_METHODS = (
    "average",
    "max",
    "laplacian",
    "dwt",
    "pca",
    "disjoint",
    "multichannel",
    "dynunet",
    "swinunetr",
    "bilevel-only",
    "bilevel-decomp",
    "fuse4seg",
    "fuse4seg-v1",
    "no-bilevel",
    "no-decomp",
    "no-grad",
)
#: named row sets (fuse4seg.benchmark.seg.ROW_SETS)
_ROW_SETS = ("table1", "table3-incremental", "table3-ablation", "core")
_RULES = ("average", "max", "laplacian", "dwt", "pca")
_SCHEDULE_KEYS = ("warmup_epochs", "rollout_epochs", "steps_per_epoch", "inner_steps", "batch_size")


def _say(message: str) -> None:
    """Progress line, flushed at once (benchmarks run for a long time, often with logs)."""
    print(message, flush=True)


def _add_seg(sub) -> None:
    p = sub.add_parser(
        "seg",
        help="Table 1 / Table 3: disjoint pipelines, multi-channel nets, Fuse4Seg, ablations",
        description="Train and score every method on a prepared store under the same data, "
        "split, follower and schedule; writes seg_results.md/.csv, seg_per_case.csv, "
        "seg_examples_<group>.png and report.html.",
    )
    p.add_argument(
        "-i",
        "--input",
        "-d",
        "--data",
        dest="data",
        required=True,
        type=Path,
        help="`fuse4seg prepare` store (-d/--data: older spelling)",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument(
        "--preset",
        choices=("tiny", "base", "paper"),
        default="base",
        help="training preset: networks and schedule (default base; tiny for "
        "smoke tests, paper for GPUs)",
    )
    p.add_argument(
        "-c", "--config", type=Path, help="YAML overrides of the preset (keys of `fuse4seg train`)"
    )
    p.add_argument(
        "--methods",
        nargs="+",
        choices=_SEG_METHODS,
        help="subset of rows (default: all, unless --rows is given)",
    )
    p.add_argument(
        "--rows",
        nargs="+",
        choices=_ROW_SETS,
        help="named row sets, added to --methods: table1; table3-incremental (disjoint, "
        "bilevel-only, bilevel-decomp, fuse4seg: the paper's Table 3); table3-ablation "
        "(fuse4seg and the leave-one-out rows); core (average, multichannel, fuse4seg)",
    )
    p.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="patient-level K-fold cross-validation: every row is trained on every fold "
        "and scored on its held-out cases; tables give mean ± sd over folds and seeds "
        "(folds: the store's splits_final.json if it holds K folds, else made as "
        "`prepare --folds K` would). Finished runs in OUT are reused",
    )
    p.add_argument(
        "--fold-ids",
        type=int,
        nargs="+",
        metavar="I",
        help="with --folds: run only these folds now (e.g. 0 2), to split a long run over "
        "sessions; the tables include the other folds already in OUT",
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0],
        help="one training run per seed (default: 0); tables pool the seeds and "
        "report the spread of mean Dice across seeds",
    )
    for key in _SCHEDULE_KEYS:
        p.add_argument(
            f"--{key.replace('_', '-')}", type=int, dest=key, help=f"override the preset's {key}"
        )
    p.add_argument("--max-test-cases", type=int, help="score only the first N test cases")
    p.add_argument(
        "--dice-level",
        choices=("case", "slice"),
        default="case",
        help="case (default): one 3D Dice per test case and class, as the BraTS challenge; "
        "slice: 2D slice Dice, as the Fuse4Seg paper reports it: the Dice of each class on "
        "every axial slice, averaged over the slices where the ground truth or the prediction "
        "has any tumour label (a class absent from both on such a slice scores 1). IoU and "
        "HD95 stay 3D; the level is named in the tables and benchmark_seg.json",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N] or mps")


def _add_fusion(sub) -> None:
    p = sub.add_parser(
        "fusion",
        help="Table 2: fusion quality on the Harvard pairs (rules and our fusion net)",
        description="Score classical rules and a FusionNet trained self-supervised (fusion "
        "losses only) on a deterministic train split of the Harvard pairs; evaluated on the "
        "other pairs with EN SD SF MI SCD VIF Qabf SSIM PSNR AG (reference convention, fused "
        "images saved as 8-bit PNG and read back).",
    )
    p.add_argument(
        "-i",
        "--input",
        required=True,
        type=Path,
        help="Harvard folder with MRI_CT/, MRI_PET/, MRI_SPECT/",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument(
        "--rules",
        nargs="*",
        choices=_RULES,
        default=list(_RULES),
        help="classical rules to score (default: all five)",
    )
    p.add_argument("--no-net", action="store_true", help="do not train/score the fusion net")
    p.add_argument(
        "--preset",
        choices=("tiny", "base", "paper"),
        default="base",
        help="fusion net size and training settings (default base)",
    )
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        help="YAML overrides of the training preset for the fusion net (e.g. "
        "alpha, beta, gamma, lr_leader)",
    )
    p.add_argument("--steps", type=int, default=500, help="fusion net training steps (default 500)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch (default 8)")
    p.add_argument("--crop", type=int, default=128, help="training crop side (default 128)")
    p.add_argument(
        "--train-fraction",
        type=float,
        default=0.5,
        help="share of pair groups used for training (default 0.5)",
    )
    p.add_argument(
        "--sets",
        nargs="+",
        choices=("MRI_CT", "MRI_PET", "MRI_SPECT"),
        help="Harvard sets (default: all present)",
    )
    p.add_argument("--max-pairs", type=int, help="use only the first N pairs of each set")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N] or mps")


def _add_robustness(sub) -> None:
    p = sub.add_parser(
        "robustness",
        help="RMR-Fusion robustness table: clean vs degraded inputs (noise, blur, structure)",
        description="Score a trained model (RMR-Fusion 3D or any 2D fuse4seg model) on the "
        "clean and degraded test cases of a prepared store: Dice per class and fusion "
        "metrics (EN, FMI, AG, SCD), clean, degraded and the drop "
        "(fuse4seg.benchmark.robustness.run_robustness_benchmark).",
    )
    p.add_argument(
        "-m",
        "--model",
        required=True,
        type=Path,
        nargs="+",
        help="trained model.pt file(s); several models are scored on the same degraded "
        "volumes and reported side by side (sweep tables)",
    )
    p.add_argument(
        "--names",
        nargs="+",
        help="display name of each model (default: its method, then its folder if two agree)",
    )
    p.add_argument(
        "-i",
        "--input",
        "-d",
        "--data",
        dest="data",
        required=True,
        type=Path,
        help="`fuse4seg prepare` store (-d/--data: older spelling)",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument(
        "--split",
        choices=("train", "val", "test"),
        default="test",
        help="store split to score (default test; with --fold: the fold's held-out cases)",
    )
    p.add_argument(
        "--fold",
        type=int,
        help="score the held-out cases of this cross-validation fold (splits_final.json)",
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="clean, paper_test, and noise / blur / structure loss alone at several "
        "severities (--severities, --windows); tables sweep.md/.csv and dice_vs_severity.png "
        "(fuse4seg.benchmark.robustness_sweep)",
    )
    p.add_argument(
        "--severities",
        type=float,
        nargs="+",
        default=[0.5, 1.0, 2.0],
        help="--sweep: noise std and blur sigma as multiples of the paper's 0.04 and 0.6 "
        "(default 0.5 1 2)",
    )
    p.add_argument(
        "--window",
        type=int,
        nargs=3,
        metavar=("D", "H", "W"),
        help="3D models: sliding-window size for inference (default, and the only size that "
        "scores the model as trained: the training patch; another size warns, see "
        "docs/benchmarks.md Run R3)",
    )
    p.add_argument(
        "--windows",
        type=int,
        nargs="+",
        default=[1, 2, 4],
        help="--sweep: numbers of (4,16,16) structure-loss windows (default 1 2 4; paper 1)",
    )
    p.add_argument(
        "--degradation",
        default="paper_test",
        help="degradation preset (default paper_test: noise 0.04, blur 0.6, one "
        "(4,16,16) structure-loss window); also none, noise, blur, structure, train",
    )
    p.add_argument("--seed", type=int, default=0, help="degradation seed (default 0)")
    p.add_argument("--max-cases", type=int, help="score at most N cases")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N] or mps")


def _add_utility(sub) -> None:
    p = sub.add_parser(
        "utility",
        help="task utility of fusion methods: Dice of one trained follower on their images",
        description="Fuse the held-out cases of a store with each rule (--rules) and each "
        "trained model's leader (--fusion-models), segment every fused volume with one "
        "reference follower (--follower: a trained single-channel model, e.g. the `average` "
        "baseline) and report 3D Dice per class (fuse4seg.benchmark.utility). "
        "--adapt-steps N fine-tunes a copy of the follower on each fuser's images first.",
    )
    p.add_argument(
        "-i",
        "--input",
        dest="data",
        required=True,
        type=Path,
        help="`fuse4seg prepare` store (labels needed)",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument(
        "--follower",
        required=True,
        type=Path,
        help="model.pt whose segmentation network takes one channel (e.g. `average`)",
    )
    p.add_argument(
        "--rules",
        nargs="*",
        default=["average", "max", "laplacian", "dwt", "pca"],
        help="classical rules to score (default: all five; none: give --rules alone)",
    )
    p.add_argument(
        "--fusion-models",
        nargs="*",
        type=Path,
        default=[],
        help="trained 2D models whose fusion step is scored (fuse4seg, disjoint, ...)",
    )
    p.add_argument("--names", nargs="+", help="display names of --fusion-models")
    p.add_argument(
        "--fused-folders",
        nargs="*",
        default=[],
        metavar="[NAME=]DIR",
        help="an external method's fused slices: <case>_zNNN.png files under DIR, at the "
        "store's slice size (what it writes from `fuse4seg export brats-fuse` of the same "
        "store); NAME= sets the display name (default: the folder's name)",
    )
    p.add_argument("--fold", type=int, help="score fold i's held-out cases (splits_final.json)")
    p.add_argument(
        "--split",
        choices=("train", "val", "test"),
        default="test",
        help="store split to score without --fold (default test)",
    )
    p.add_argument(
        "--adapt-steps",
        type=int,
        default=0,
        help="fine-tune a copy of the follower this many steps on each fuser's images of "
        "the training cases before scoring (default 0: frozen)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the adaptation's slices")
    p.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N] or mps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark_command", metavar="WHICH", required=True)
    _add_seg(sub)
    _add_fusion(sub)
    _add_robustness(sub)
    _add_utility(sub)
    for p in sub.choices.values():
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="write into a non-empty output folder, replacing the benchmark's files "
            "(default: refuse a non-empty folder; `benchmark seg` into a folder holding an "
            "earlier `benchmark seg` continues it without this flag)",
        )


def _claim_output(args: argparse.Namespace) -> None:
    """The output policy (:mod:`fuse4seg.io.output_policy`): the results folder is never
    inside or holding an input, and a non-empty one needs --overwrite."""
    from fuse4seg.io.output_policy import check_output_location, claim_output_folder

    inputs = []
    for key in ("data", "input", "model", "config", "follower", "fusion_models"):
        value = getattr(args, key, None)
        inputs += value if isinstance(value, list) else [value]  # robustness: several -m
    check_output_location(args.output, inputs, replaces_contents=True)
    if continues_seg_benchmark(args):
        return  # finished runs in OUT are reused; tables are rewritten (--fold-ids over calls)
    claim_output_folder(args.output, args.overwrite, what="its results", create=False)


def continues_seg_benchmark(args: argparse.Namespace) -> bool:
    """``benchmark seg`` into a folder that holds an earlier ``benchmark seg`` (its
    ``benchmark_seg.json``) continues it: runs finished with the same settings are reused,
    others are trained, and the tables are rewritten; no ``--overwrite`` needed."""
    if getattr(args, "benchmark_command", None) != "seg":
        return False
    return (Path(args.output) / "benchmark_seg.json").is_file()


def _run_seg(args: argparse.Namespace) -> int:
    from fuse4seg.benchmark.seg import run_seg_benchmark

    overrides = {k: getattr(args, k) for k in _SCHEDULE_KEYS if getattr(args, k) is not None}
    res = run_seg_benchmark(
        args.data,
        args.output,
        methods=args.methods,
        seeds=args.seeds,
        preset=args.preset,
        config_file=args.config,
        overrides=overrides,
        device=args.device,
        max_test_cases=args.max_test_cases,
        log=_say,
        row_sets=args.rows,
        folds=args.folds,
        fold_ids=args.fold_ids,
        dice_level=args.dice_level,
    )
    print(f"results: {args.output / 'seg_results.md'} and {args.output / 'report.html'}")
    if res.failed:
        print(f"{len(res.failed)} run(s) failed: " + ", ".join(res.failed), file=sys.stderr)
        return 2
    return 0


def _run_fusion(args: argparse.Namespace) -> int:
    from fuse4seg.benchmark.fusion import run_fusion_benchmark
    from fuse4seg.device import resolve_device

    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    res = run_fusion_benchmark(
        args.input,
        args.output,
        rules=args.rules,
        train_net=not args.no_net,
        preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
        train_fraction=args.train_fraction,
        sets=args.sets,
        max_pairs=args.max_pairs,
        seed=args.seed,
        device=resolve_device(args.device),
        log=_say,
        config_file=args.config,
    )
    print(f"{len(res.test_pairs)} test pairs scored; table: {args.output / 'fusion_table.md'}")
    return 0


def _robustness_adapter(path: Path, device, window=None):
    """A 3D model (RMR-Fusion) -> RMRAdapter; any other fuse4seg model -> SliceAdapter."""
    from fuse4seg.benchmark.robustness import RMRAdapter, SliceAdapter
    from fuse4seg.inference.predictor import Predictor
    from fuse4seg.models.model_file import load_model_file

    model = load_model_file(path, device)  # ModelFileError names the file
    method = getattr(model, "method", None)
    if getattr(model, "spatial_dims", 2) == 3:
        return RMRAdapter(model, window=window), method
    predictor = Predictor(model, device=device)
    predictor.scale = 1.0  # store slices are already at the training resolution
    return SliceAdapter(predictor, modalities=predictor.model.modalities), method


def _model_names(paths: list[Path], methods: list[str | None], given: list[str] | None):
    if given is not None:
        if len(given) != len(paths):
            raise ConfigError(f"--names gives {len(given)} names for {len(paths)} models")
        return list(given)
    names = [str(m or p.stem) for p, m in zip(paths, methods, strict=True)]
    twice = {n for n in names if names.count(n) > 1}  # same method twice: add the folder
    names = [f"{n} ({p.resolve().parent.name})" if n in twice else n
             for n, p in zip(names, paths, strict=True)]  # fmt: skip
    if len(set(names)) < len(names):
        raise ConfigError("two models get the same name; give --names")
    return names


def _run_robustness(args: argparse.Namespace) -> int:
    from fuse4seg.benchmark.robustness import run_robustness_benchmark
    from fuse4seg.data import PreparedStore
    from fuse4seg.device import resolve_device

    device = resolve_device(args.device)
    store = PreparedStore(args.data)
    split = args.split
    if args.fold is not None:
        store = store.fold(args.fold)  # InputError names splits_final.json when it is absent
        split = "val"
    adapters, methods = [], []
    for path in args.model:
        adapter, method = _robustness_adapter(path, device, args.window)
        adapters.append(adapter)
        methods.append(method)
    names = _model_names(list(args.model), methods, args.names)
    if args.sweep or len(adapters) > 1:
        from fuse4seg.benchmark.robustness_sweep import (
            Condition,
            run_robustness_sweep,
            sweep_conditions,
        )
        from fuse4seg.degradations import Degradation

        if args.sweep:
            conditions = sweep_conditions(args.severities, args.windows)
        else:
            deg = Degradation.preset(args.degradation)
            conditions = [Condition("clean", "clean", 0.0, None),
                          Condition(deg.name, deg.name, 1.0, deg)]  # fmt: skip
        ids = list(store.case_ids(split))
        if args.max_cases is not None:
            ids = ids[: args.max_cases]
        if not ids:
            raise ConfigError(f"no cases in split {split!r} of {args.data}")
        result = run_robustness_sweep(
            dict(zip(names, adapters, strict=True)),
            store,
            args.output,
            ids,
            conditions,
            seed=args.seed,
        )
        print(f"table: {args.output / 'sweep.md'}")
        failed = [f"{c} ({m})" for m, c, _ in result["failed"]]
    else:
        result = run_robustness_benchmark(
            adapters[0],
            store,
            args.output,
            split=split,
            degradation=args.degradation,
            seed=args.seed,
            max_cases=args.max_cases,
            model_name=names[0],
        )
        print(f"table: {args.output / 'robustness.md'}")
        failed = [c for c, _ in result.get("failed") or []]
    if failed:
        print(f"{len(failed)} case(s) failed: " + ", ".join(failed), file=sys.stderr)
        return 2
    return 0


def _run_utility(args: argparse.Namespace) -> int:
    from fuse4seg.benchmark.utility import FusedFolder, model_fuser, rule_fuser, task_utility
    from fuse4seg.data import PreparedStore
    from fuse4seg.device import resolve_device
    from fuse4seg.models.model_file import load_model_file

    device = resolve_device(args.device)
    store = PreparedStore(args.data)
    split, train_split = args.split, "train"
    if args.fold is not None:
        store = store.fold(args.fold)
        split = "val"
    fusers = {f"rule {name}": rule_fuser(name) for name in args.rules}
    models = [load_model_file(p, device) for p in args.fusion_models]
    if args.names is not None and len(args.names) != len(models):
        raise ConfigError(f"--names gives {len(args.names)} names for {len(models)} models")
    names = args.names or _model_names(
        list(args.fusion_models), [getattr(m, "method", None) for m in models], None
    )
    for name, model in zip(names, models, strict=True):
        if list(model.modalities) != list(store.modalities):
            raise ConfigError(
                f"model {name!r} was trained on {model.modalities}, the store holds "
                f"{store.modalities}"
            )
        fusers[name] = model_fuser(model)
    for spec in args.fused_folders:
        name, sep, folder = spec.partition("=")
        folder = folder if sep else spec
        name = name if sep else f"folder {Path(folder).name}"
        if name in fusers:
            raise ConfigError(f"two fusers named {name!r}: give NAME=DIR")
        fusers[name] = FusedFolder(folder)
    if not fusers:
        raise ConfigError("nothing to score: give --rules, --fusion-models and/or --fused-folders")
    follower = load_model_file(args.follower, device)
    ids = list(store.case_ids(split))
    task_utility(
        fusers,
        follower,
        store,
        ids,
        args.output,
        device=device,
        batch_size=args.batch_size,
        adapt_steps=args.adapt_steps,
        train_ids=list(store.case_ids(train_split)) if args.adapt_steps else (),
        seed=args.seed,
    )
    print(f"table: {args.output / 'utility.md'}")
    return 0


def run(args: argparse.Namespace) -> int:
    _claim_output(args)
    if args.benchmark_command == "seg":
        return _run_seg(args)
    if args.benchmark_command == "fusion":
        return _run_fusion(args)
    if args.benchmark_command == "utility":
        return _run_utility(args)
    return _run_robustness(args)
