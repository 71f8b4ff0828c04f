"""``fuse4seg demo``: phantom -> prepare -> train fuse4seg / average / multichannel ->
evaluate on the test cases -> ``DIR/report.html``."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "phantom -> prepare -> train -> evaluate -> report.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fuse4seg demo``."""
    parser.add_argument(
        "-o", "--output", default="fuse4seg-demo", help="output folder (default fuse4seg-demo)"
    )
    parser.add_argument(
        "--cases", type=int, default=None, help="phantom cases (default 20; 6 with --quick)"
    )
    parser.add_argument(
        "--preset", default="tiny", choices=["tiny", "base", "paper"], help="default tiny"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long smoke variant (tiny sizes, few steps)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: the demo's 64x64 batches gain little from more, and "
        "several threads slow down badly when other jobs share the cores)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the demo's outputs in a non-empty output folder (default: refuse it)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="training seed of every method (default 0; the phantom data do not change)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print the results table; returns 0."""
    import torch

    from fuse4seg.train.demo import run_demo

    torch.set_num_threads(max(1, args.threads))
    result = run_demo(
        args.output,
        cases=args.cases,
        preset=args.preset,
        device=args.device,
        quick=args.quick,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        seed=args.seed,
    )
    header, rows = result["table"]
    keep = [0, 1, 2, 3, 4, 5, 6, 7, 8]
    widths = [max(12, len(header[i]) + 1) for i in keep]
    print("".join(f"{header[i]:>{w}}" for i, w in zip(keep, widths, strict=True)))
    for row in rows:
        cells = [row[0]] + [f"{row[i]:.3f}" for i in keep[1:]]
        print("".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    print(f"report: {result['report']}  ({result['seconds']:.0f} s)")
    return 0
