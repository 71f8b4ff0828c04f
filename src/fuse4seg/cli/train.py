"""``fuse4seg train``: train Fuse4Seg (bi-level, Algorithm 1) or a baseline on a prepared store.

Examples::

    fuse4seg train -d prep -o runs/f4s --preset tiny
    fuse4seg train -d prep -o runs/avg --method average --preset tiny
    fuse4seg train -d prep -o runs/f4s --resume            # continue from runs/f4s/last.pt
    fuse4seg train -d prep -o runs/f4s_fold0 --fold 0     # cross-validation fold 0
    torchrun --nproc_per_node 2 -m fuse4seg train -d prep -o runs/ddp   # DDP
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run"]

HELP = "train Fuse4Seg (bi-level) or a baseline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fuse4seg train``."""
    from fuse4seg.train.config import PRESETS
    from fuse4seg.train.methods import METHODS

    parser.add_argument(
        "-i",
        "--input",
        "-d",
        "--data",
        dest="data",
        required=True,
        help="prepared store (PREP_DIR) of `fuse4seg prepare` (-d/--data: older spelling)",
    )
    parser.add_argument("-o", "--output", required=True, help="run folder (RUN_DIR)")
    parser.add_argument(
        "--method",
        default=None,
        choices=sorted(METHODS),
        help="training method (default fuse4seg): "
        + "; ".join(f"{k}: {v.description}" for k, v in sorted(METHODS.items())),
    )
    parser.add_argument("--no-bilevel", action="store_true", help="ablation: joint training")
    parser.add_argument("--no-decomp", action="store_true", help="ablation: drop L_decomp")
    parser.add_argument("--no-grad", action="store_true", help="ablation: drop L_grad")
    parser.add_argument("--no-ema", action="store_true", help="ablation: no EMA of the leader")
    parser.add_argument(
        "--preset",
        default="base",
        choices=list(PRESETS),
        help="config preset (default base; tiny = CPU demo, paper = sec. 4.1)",
    )
    parser.add_argument(
        "-c",
        "--config",
        default=None,
        help="YAML file of config overrides (unknown keys rejected; default: none)",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after N optimiser steps (follower + leader), at a batch boundary "
        "(default: run the preset's whole schedule)",
    )
    parser.add_argument(
        "--fold",
        type=int,
        default=None,
        metavar="I",
        help="train on cross-validation fold I of the store's splits_final.json (`prepare "
        "--folds K`): its train cases train, its held-out cases validate (default: the "
        "store's fixed train/val split)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in a non-empty RUN_DIR (its config, logs, checkpoints and "
        "model.pt; other files are kept). Default: refuse a non-empty RUN_DIR",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader worker processes (default: the config's num_workers, 0 = in the "
        "main process)",
    )
    parser.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default all)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _claim_run_folder(args: argparse.Namespace) -> None:
    """The output policy for RUN_DIR (:mod:`fuse4seg.io.output_policy`).

    Never inside (or equal to) the store or the config file; a non-empty RUN_DIR is refused
    unless ``--resume`` (continue it) or ``--overwrite`` (remove the run's own files first:
    :data:`fuse4seg.train.run_folder.RUN_FILES`, the same for every method).
    Under torchrun only rank 0 looks at the folder, before any rank writes to it.
    """
    import shutil

    from fuse4seg.errors import ConfigError, InputError
    from fuse4seg.io.atomic import remove_stale_temporaries
    from fuse4seg.io.output_policy import check_output_location
    from fuse4seg.train.run_folder import RUN_FILES

    if args.resume and args.overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: give one")
    check_output_location(args.output, [args.data, args.config])
    if os.environ.get("RANK", "0") != "0":
        return
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a folder")
    if not out.is_dir():
        return
    remove_stale_temporaries(out, recursive=True)
    if args.resume:
        return
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith(".tmp-"))
    if entries and not args.overwrite:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise InputError(
            out,
            f"run folder is not empty ({shown}); use --resume to continue the run, "
            "--overwrite to replace it, or a new folder",
        )
    for name in RUN_FILES:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def run(args: argparse.Namespace) -> int:
    """Train; returns 0 (2 on user errors / NaN stop, raised as Fuse4SegError)."""
    import torch

    from fuse4seg.errors import ConfigError
    from fuse4seg.train.config import make_config
    from fuse4seg.train.methods import get_method

    if args.max_steps is not None and args.max_steps < 1:
        raise ConfigError(f"--max-steps must be >= 1, got {args.max_steps}")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    configure = None if args.method is None else get_method(args.method).load_configure()
    if configure is not None:  # a method with its own configuration (rmr3d)
        cfg, run_options = configure(vars(args))
        method = args.method
    else:
        cfg = make_config(
            args.preset,
            args.config,
            method=args.method,
            bilevel=False if args.no_bilevel else None,
            use_decomp=False if args.no_decomp else None,
            use_grad=False if args.no_grad else None,
            use_ema=False if args.no_ema else None,
            max_steps=args.max_steps,
            seed=args.seed,
            num_workers=args.workers,
            tensorboard=True if args.tensorboard else None,
        )
        method, run_options = cfg.method, {}
        spec = get_method(method)
        if spec.configure is not None:
            raise ConfigError(
                f"method {method!r} has its own configuration: give --method {method}"
            )
        if args.fold is not None:
            if spec.runner != "fuse4seg.train.trainer:run_training":
                raise ConfigError(f"--fold is not supported by method {method!r}")
            run_options = {"fold": args.fold}
    run_training = get_method(method).load_runner()  # 2D trainer or the method's own
    _claim_run_folder(args)  # after the option checks: those errors come first
    result = run_training(
        cfg,
        args.data,
        args.output,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
        **run_options,
    )
    from fuse4seg.train.distributed import cleanup_distributed, is_main_process

    if is_main_process():
        print(result.summary_line(method, args.output))
    cleanup_distributed()
    return 0
