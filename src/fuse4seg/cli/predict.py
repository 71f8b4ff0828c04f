"""``fuse4seg predict``: segment and fuse BraTS volumes into NIfTI files."""

from __future__ import annotations

import argparse
import signal
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fuse4seg.errors import Fuse4SegError, InputError

__all__ = ["HELP", "add_arguments", "run"]

HELP = "segment and fuse BraTS volumes into NIfTI"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, type=Path, help="trained model.pt")
    parser.add_argument(
        "-i",
        "--input",
        required=True,
        type=Path,
        help="one case folder or a folder of case folders (BraTS 2018-2021 or "
        "2023 naming; seg optional)",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        help="output folder: <case>_seg.nii.gz, <case>_fused.nii.gz, predict_args.json",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="slices per forward pass (default 16; lower it if out of memory)",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="average softmax over 4 flips (about 4x slower, slightly better)",
    )
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    parser.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write <case>_prob.nii.gz (float32, X x Y x Z x classes)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs (default: skip cases already done)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _terminate(signum, frame):  # pragma: no cover - exercised in a subprocess test
    # Turn SIGTERM into KeyboardInterrupt so atomic writes remove their temporary files.
    raise KeyboardInterrupt


def _print_dice(case_id: str, dice: dict[str, float]) -> None:
    parts = " ".join(f"{k} {v:.3f}" for k, v in dice.items())
    print(f"{case_id}: Dice {parts}", flush=True)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fuse4seg.data import discover_cases
    from fuse4seg.device import resolve_device
    from fuse4seg.inference.batch import BatchReport
    from fuse4seg.inference.model_loading import load_model
    from fuse4seg.inference.predictor import Predictor
    from fuse4seg.inference.writer import output_paths, write_prediction
    from fuse4seg.io.atomic import save_json_atomic

    if args.batch_size < 1:
        raise InputError(None, f"--batch-size must be >= 1, got {args.batch_size}")
    if args.output.exists() and not args.output.is_dir():
        raise InputError(args.output, "output exists and is not a folder")
    cases = discover_cases(args.input)
    if not cases:
        raise InputError(args.input, "no BraTS case found")
    device = resolve_device(args.device)
    model = load_model(args.model, device)
    if getattr(model, "spatial_dims", 2) != 2 and not hasattr(model, "predict_volume"):
        raise InputError(args.model, "3D model without a volume-level predictor")
    predictor = Predictor(
        model,
        device=device,
        batch_size=args.batch_size,
        tta=args.tta,
        amp=not args.no_amp,
        keep_probabilities=args.save_probabilities,
    )
    args.output.mkdir(parents=True, exist_ok=True)
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    record.update(
        device_used=str(device),
        method=getattr(model, "method", None),
        modalities=list(model.modalities),
    )
    save_json_atomic(record, args.output / "predict_args.json")

    previous = signal.signal(signal.SIGTERM, _terminate)
    report = BatchReport()
    # Outputs are written by one background thread (gzip compression releases the GIL) while
    # the next case is read and predicted; at most one case waits to be written.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fuse4seg-writer")
    pending: list[tuple[str, Future, Any]] = []

    def settle(keep: int) -> None:
        while len(pending) > keep:
            case_id, future, pred = pending.pop(0)
            try:
                future.result()
            except Fuse4SegError as exc:
                report.fail(case_id, str(exc))
                continue
            report.done.append(case_id)
            dice = pred.dice()
            if dice is not None:
                _print_dice(case_id, dice)
            elif pred.seg_problem:
                print(f"note: {case_id}: seg not scored ({pred.seg_problem})", flush=True)

    try:
        bar = tqdm(cases, desc="predict", unit="case", disable=args.no_progress or None)
        for case in bar:
            existing = [p for p in output_paths(case.case_id, args.output).values() if p.exists()]
            if existing and not args.overwrite:
                report.skip(case.case_id, f"{existing[0]} exists (use --overwrite)")
                continue
            try:
                pred = predictor.predict_case(case)
            except Fuse4SegError as exc:
                report.fail(case.case_id, str(exc))
                continue
            pending.append((case.case_id, writer.submit(write_prediction, pred, args.output), pred))
            settle(keep=1)
        settle(keep=0)
    finally:
        writer.shutdown(wait=True)  # a write in flight completes (atomically) even on SIGTERM
        signal.signal(signal.SIGTERM, previous)
    print(report.summary("cases"), file=sys.stderr if report.failed else sys.stdout)
    return report.exit_code
