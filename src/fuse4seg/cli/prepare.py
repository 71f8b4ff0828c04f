"""``fuse4seg prepare``: normalise BraTS cases into a memory-mapped training store."""

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
        "-i", "--input", required=True, help="BraTS folder: a case folder or a folder of them"
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
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument(
        "--split",
        type=float,
        nargs=3,
        default=[0.7, 0.1, 0.2],
        metavar=("TRAIN", "VAL", "TEST"),
        help="patient-level split fractions (default 0.7 0.1 0.2)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="parallel processes (default 1; ~1 GB each)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing store in --output"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Prepare the store; returns 0, or 2 when any case failed."""
    from fuse4seg.data.prepare import PrepareOptions, prepare_dataset

    options = PrepareOptions(
        modalities=tuple(args.modalities),
        size=args.size,
        scale=args.scale,
        seed=args.seed,
        split=tuple(args.split),
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
        )
    if n_bad:
        print(
            f"error: {n_bad} of {n_ok + n_bad} cases failed: {', '.join(sorted(result.failed))}"
            + ("" if n_ok else " (no store written)"),
            file=sys.stderr,
        )
        return 2
    return 0
