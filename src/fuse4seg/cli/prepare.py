"""``fuse4seg prepare``: normalise BraTS cases into a memory-mapped training store.

``fuse4seg prepare -o STORE --folds K`` (no ``-i``) adds K-fold cross-validation folds
(``splits_final.json``) to an existing store without preparing it again.
"""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["HELP", "add_arguments", "run"]

HELP = "normalise BraTS cases into a training store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fuse4seg prepare``."""
    from fuse4seg.data.discovery import MODALITIES

    parser.add_argument(
        "-i",
        "--input",
        default=None,
        help="BraTS folder: a case folder or a folder of them (required, except with --folds "
        "alone, which adds folds to the existing store in --output)",
    )
    parser.add_argument("-o", "--output", required=True, help="store folder (PREP_DIR)")
    parser.add_argument(
        "--modalities",
        nargs="+",
        default=["t1ce", "flair"],
        choices=MODALITIES,
        help="modalities to store, in channel order (default: t1ce flair)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="in-plane scale (0.5 = 2x downsampling, anti-aliased; default 1)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="in-plane side after scaling, centre crop/pad around the brain "
        "(default: the largest scaled in-plane side, 240 * scale for BraTS)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="split and fold seed (default 0; with --folds and no -i: the store's seed)",
    )
    parser.add_argument(
        "--split",
        type=float,
        nargs=3,
        default=[0.7, 0.1, 0.2],
        metavar=("TRAIN", "VAL", "TEST"),
        help="patient-level split fractions (default 0.7 0.1 0.2)",
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=None,
        metavar="K",
        help="also write patient-level K-fold cross-validation folds over all cases "
        "(STORE/splits_final.json, nnU-Net format) for `train --fold` and "
        "`benchmark seg --folds`; --split still sets the store's fixed split",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="parallel processes (default 1; ~1 GB each)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing store in --output (without -i: replace different folds)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Prepare the store; returns 0, or 2 when any case failed."""
    from fuse4seg.data.prepare import PrepareOptions, prepare_dataset

    if args.input is None:
        return _add_folds(args)
    options = PrepareOptions(
        modalities=tuple(args.modalities),
        size=args.size,
        scale=args.scale,
        seed=0 if args.seed is None else args.seed,
        split=tuple(args.split),
        folds=args.folds,
    )
    start = time.perf_counter()
    result = prepare_dataset(
        args.input,
        args.output,
        options,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    took = time.perf_counter() - start
    n_ok, n_bad = len(result.prepared), len(result.failed)
    if result.manifest is not None:
        sizes = {k: len(v) for k, v in result.manifest["splits"].items()}
        print(
            f"prepared {n_ok} cases into {result.output} in {took:.1f} s "
            f"(train {sizes['train']}, val {sizes['val']}, test {sizes['test']})"
            + (f"; {args.folds} cross-validation folds" if args.folds else "")
        )
    if n_bad:
        print(
            f"error: {n_bad} of {n_ok + n_bad} cases failed: {', '.join(sorted(result.failed))}"
            + ("" if n_ok else " (no store written)"),
            file=sys.stderr,
        )
        return 2
    return 0


def _add_folds(args: argparse.Namespace) -> int:
    """``prepare -o STORE --folds K`` without ``-i``: write the folds of an existing store."""
    from fuse4seg.data.prepare import write_folds
    from fuse4seg.errors import ConfigError

    if args.folds is None:
        raise ConfigError("-i/--input is required (only `prepare -o STORE --folds K` omits it)")
    folds = write_folds(args.output, args.folds, seed=args.seed, overwrite=args.overwrite)
    sizes = ", ".join(f"{len(f['train'])}/{len(f['val'])}" for f in folds)
    print(f"{len(folds)} folds (train/val cases: {sizes}) in {args.output}/splits_final.json")
    return 0
