"""``fuse4seg predict``: segment and fuse BraTS volumes into NIfTI files."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fuse4seg.errors import Fuse4SegError, InputError, OutputError, Terminated

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
        help="replace existing outputs (default: skip cases this model already did; refuse "
        "a folder holding outputs of another model, see docs/inference.md)",
    )
    parser.add_argument(
        "--naming",
        choices=("fuse4seg", "nnunet"),
        default="fuse4seg",
        help="segmentation file name: fuse4seg = <case>_seg.nii.gz (default), nnunet = "
        "<case>.nii.gz (nnU-Net predictions, BraTS submissions)",
    )
    parser.add_argument(
        "--fused-dtype",
        choices=("float32", "uint8"),
        default="float32",
        help="fused volume data type: float32 (default) or uint8 with scl_slope 1/255 "
        "(4x smaller, readers see [0, 1] to within 1/510)",
    )
    parser.add_argument(
        "--no-fused-mask",
        action="store_true",
        help="keep the fused image outside the brain (default: 0 where every modality is 0)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _terminate(signum, frame):  # pragma: no cover - exercised in a subprocess test
    # Turn SIGTERM into an exception so atomic writes remove their temporary files.
    raise Terminated


def _print_dice(case_id: str, dice: dict[str, float]) -> None:
    parts = " ".join(f"{k} {v:.3f}" for k, v in dice.items())
    print(f"{case_id}: Dice {parts}", flush=True)


RECORD_NAME = "predict_args.json"


def _previous_outputs(out_dir: Path) -> dict[str, dict]:
    """``outputs`` of the folder's previous run record (empty when absent or unreadable)."""
    import json

    try:
        record = json.loads((out_dir / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    outputs = record.get("outputs") if isinstance(record, dict) else None
    return {k: v for k, v in (outputs or {}).items() if isinstance(v, dict)}


def _made_by(entry: dict | None) -> str:
    if not entry:
        return "no record of the model that made it"
    return f"made by {entry.get('model')} (sha256 {str(entry.get('model_sha256'))[:12]})"


def _check_provenance(
    cases: list, out_dir: Path, previous: dict[str, dict], sha256: str, output_paths
) -> None:
    """Refuse (without --overwrite) to add to outputs that another model made.

    A case whose outputs exist is skipped only when the record says this very model file
    (same sha256) finished it; outputs of another model, or without a record, would leave
    a folder that mixes models under one record.
    """
    foreign = []
    for case in cases:
        if not any(p.exists() for p in output_paths(case.case_id, out_dir).values()):
            continue
        entry = previous.get(case.case_id)
        if entry is None or entry.get("model_sha256") != sha256:
            foreign.append((case.case_id, entry))
    if foreign:
        case_id, entry = foreign[0]
        raise InputError(
            out_dir,
            f"holds outputs of another model for {len(foreign)} case(s) (e.g. {case_id}: "
            f"{_made_by(entry)}); use --overwrite to replace them, or another output folder",
        )


def run(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from fuse4seg.data import discover_cases
    from fuse4seg.device import resolve_device
    from fuse4seg.inference.batch import BatchReport
    from fuse4seg.inference.predictor import Predictor
    from fuse4seg.inference.writer import output_paths, write_prediction
    from fuse4seg.io.atomic import save_json_atomic
    from fuse4seg.io.output_policy import (
        check_not_an_input,
        check_output_location,
        file_sha256,
        open_item_folder,
    )
    from fuse4seg.log import show_progress
    from fuse4seg.models.model_file import load_model_file

    if args.batch_size < 1:
        raise InputError(None, f"--batch-size must be >= 1, got {args.batch_size}")
    check_output_location(args.output, [args.input, args.model])
    if args.output.exists() and not args.output.is_dir():
        raise InputError(args.output, "output exists and is not a folder")
    problems: list[tuple[str, str]] = []
    cases = discover_cases(args.input, problems=problems)
    # case folders may be symbolic links into the output folder
    check_output_location(args.output, [c.folder for c in cases])
    device = resolve_device(args.device)
    model = load_model_file(args.model, device)
    if getattr(model, "spatial_dims", 2) != 2 and not hasattr(model, "predict_volume"):
        raise InputError(args.model, "3D model without a volume-level predictor")
    predictor = Predictor(
        model,
        device=device,
        batch_size=args.batch_size,
        tta=args.tta,
        amp=not args.no_amp,
        keep_probabilities=args.save_probabilities,
        mask_fused=not args.no_fused_mask,
    )
    sha256 = file_sha256(args.model)
    previous = _previous_outputs(args.output)

    def paths_of(case_id: str, folder: Path) -> dict[str, Path]:
        return output_paths(case_id, folder, args.naming)

    if not args.overwrite:
        _check_provenance(cases, args.output, previous, sha256, paths_of)
    out_dir = open_item_folder(args.output)
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    record.update(
        device_used=str(device),
        method=getattr(model, "method", None),
        modalities=list(model.modalities),
        model_sha256=sha256,
        outputs=previous,  # case -> the model that made its files (kept for skipped cases)
    )

    def set_output(case_id: str, files: list[Path], status: str) -> None:
        record["outputs"][case_id] = {
            "files": [p.name for p in files],
            "model": str(args.model),
            "model_sha256": sha256,
            "method": record["method"],
            "status": status,  # "writing" until every file of the case is in place
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        save_json_atomic(record, out_dir / RECORD_NAME)

    save_json_atomic(record, out_dir / RECORD_NAME)

    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, _terminate)
    report = BatchReport()
    for name, message in problems:
        report.fail(name, message)
    # Outputs are written by one background thread (gzip compression releases the GIL) while
    # the next case is read and predicted; at most one case waits to be written.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fuse4seg-writer")
    pending: list[tuple[str, Future, Any]] = []
    stop: list[str] = []  # set when the disk is full: later cases would fail the same way

    def settle(keep: int) -> None:
        while len(pending) > keep:
            case_id, future, pred = pending.pop(0)
            try:
                written = future.result()
            except OutputError as exc:
                report.fail(case_id, str(exc))
                stop.append(str(exc))
                continue
            except Fuse4SegError as exc:
                report.fail(case_id, str(exc))
                continue
            set_output(case_id, written, "done")
            report.done.append(case_id)
            if pred.label_warning:
                print(f"warning: {case_id}: {pred.label_warning}", file=sys.stderr, flush=True)
            dice = pred.dice()
            if dice is not None:
                _print_dice(case_id, dice)
            elif pred.seg_problem:
                print(f"note: {case_id}: seg not scored ({pred.seg_problem})", flush=True)
            else:
                print(f"{case_id}: written ({', '.join(p.name for p in written)})", flush=True)

    not_run = 0
    try:
        bar = tqdm(
            cases, desc="predict", unit="case", disable=not show_progress(not args.no_progress)
        )
        for i, case in enumerate(bar):
            if stop:
                not_run = len(cases) - i
                break
            paths = paths_of(case.case_id, out_dir)
            entry = record["outputs"].get(case.case_id) or {}
            finished = paths["seg"].exists() and entry.get("status", "done") == "done"
            if finished and not args.overwrite:
                report.skip(case.case_id, f"{paths['seg']} exists (use --overwrite)")
                continue
            try:
                inputs = [*case.files.values(), case.seg]
                for path in paths.values():
                    check_not_an_input(path, inputs)
                pred = predictor.predict_case(case)
            except Fuse4SegError as exc:
                report.fail(case.case_id, str(exc))
                continue
            except MemoryError:
                report.fail(case.case_id, f"{case.folder}: out of memory (case not predicted)")
                continue
            except RuntimeError as exc:
                if type(exc).__name__ != "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
                    raise
                report.fail(case.case_id, f"{case.folder}: out of GPU memory (lower --batch-size)")
                continue
            planned = [paths["seg"]]
            planned += [paths["fused"]] if pred.fused is not None else []
            planned += [paths["prob"]] if pred.probabilities is not None else []
            set_output(case.case_id, planned, "writing")
            pending.append(
                (
                    case.case_id,
                    writer.submit(write_prediction, pred, out_dir, args.naming, args.fused_dtype),
                    pred,
                )
            )
            settle(keep=1)
        settle(keep=0)
    finally:
        writer.shutdown(wait=True)  # a write in flight completes (atomically) even on SIGTERM
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    if stop:
        print(f"stopped: {stop[0]}; {not_run} case(s) not run", file=sys.stderr)
    print(report.summary("cases"), file=sys.stderr if report.failed else sys.stdout)
    return report.exit_code
