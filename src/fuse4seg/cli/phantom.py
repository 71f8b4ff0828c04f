"""``fuse4seg phantom``: write the synthetic BraTS-like phantom dataset as NIfTI."""

from __future__ import annotations

import argparse
import time

from fuse4seg.errors import ConfigError

__all__ = ["HELP", "add_arguments", "run"]

HELP = "write a synthetic BraTS-like NIfTI dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fuse4seg phantom``."""
    parser.add_argument("-o", "--output", required=True, help="output folder (created)")
    parser.add_argument(
        "--cases", type=int, default=16, help="number of cases (default 16, ids Phantom_000...)"
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=[96, 96, 48],
        metavar=("X", "Y", "Z"),
        help="volume shape, Z axial (default 96 96 48; each side >= 16)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="case i uses seed + i (default 0; deterministic)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the phantom cases of an existing output folder (default: refuse a "
        "non-empty folder; other files are never deleted)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Write the phantom cases; returns 0."""
    from fuse4seg.data.phantom import write_phantom_dataset

    if args.cases < 1:
        raise ConfigError(f"--cases must be >= 1, got {args.cases}")
    if min(args.shape) < 16:
        raise ConfigError(f"--shape sides must be >= 16, got {args.shape}")
    start = time.perf_counter()
    folders = write_phantom_dataset(
        args.output,
        args.cases,
        tuple(args.shape),
        args.seed,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    took = time.perf_counter() - start
    print(
        f"wrote {len(folders)} phantom cases ({'x'.join(map(str, args.shape))}, BraTS 2021 naming)"
        f" to {args.output} in {took:.1f} s"
    )
    return 0
