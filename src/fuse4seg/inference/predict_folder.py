"""Predict a folder of BraTS cases into NIfTI files: the case loop of ``fuse4seg predict``.

:func:`predict_folder` discovers the cases, loads the model file, predicts every case with
:class:`~fuse4seg.inference.predictor.Predictor` and writes ``<case>_seg.nii.gz`` (or
``<case>.nii.gz``), ``<case>_fused.nii.gz`` and optionally ``<case>_prob.nii.gz`` with
:func:`~fuse4seg.inference.writer.write_prediction`, one case written in a background thread
while the next is predicted. ``predict_args.json`` records the run and, per case, the model
(path and SHA-256) that made its files: a case this model already finished is skipped, a
folder holding another model's outputs is refused unless ``overwrite``. A case that fails is
reported and the others go on; a full disk stops the run. SIGTERM (main thread) ends the run
after the write in flight, whose atomic write leaves no partial file.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fuse4seg.errors import Fuse4SegError, InputError, OutputError, Terminated
from fuse4seg.inference.batch import BatchReport

__all__ = ["RECORD_NAME", "FolderOptions", "predict_folder"]


@dataclass
class FolderOptions:
    """Options of :func:`predict_folder` (the ``fuse4seg predict`` flags of the same names)."""

    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps
    batch_size: int = 16  # slices per forward pass
    tta: bool = False  # average softmax over 4 flips
    amp: bool = True  # mixed precision on CUDA
    save_probabilities: bool = False  # also write <case>_prob.nii.gz
    overwrite: bool = False  # replace existing outputs
    naming: str = "fuse4seg"  # fuse4seg: <case>_seg.nii.gz; nnunet: <case>.nii.gz
    fused_dtype: str = "float32"  # or uint8 (scl_slope 1/255)
    fused_mask: bool = True  # fused volume 0 where every modality is 0
    progress: bool = True  # a progress bar on a terminal


def _say(line: str) -> None:
    print(line, flush=True)


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _terminate(signum, frame):  # pragma: no cover - exercised in a subprocess test
    # Turn SIGTERM into an exception so atomic writes remove their temporary files.
    raise Terminated


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


def predict_folder(
    model_path: str | Path,
    input_path: str | Path,
    output: str | Path,
    options: FolderOptions | None = None,
    record: Mapping[str, Any] | None = None,
    say: Callable[[str], None] = _say,
    warn: Callable[[str], None] = _warn,
) -> BatchReport:
    """Predict every case under ``input_path`` with the model file ``model_path``.

    Args:
        model_path: ``model.pt`` of any method (2D or 3D).
        input_path: one case folder or a folder of case folders (BraTS 2018-2021 or 2023
            naming; seg optional: when present the case's Dice is printed).
        output: output folder (created; never an input or inside one).
        options: :class:`FolderOptions` (default: all defaults).
        record: entries for ``predict_args.json`` (``fuse4seg predict`` passes its arguments;
            default: the paths and ``options``).
        say, warn: line printers for progress lines and warnings (stdout / stderr).

    Returns:
        The :class:`BatchReport` (done / skipped / failed cases; ``exit_code``).

    Raises:
        InputError: a bad batch size, an output location that is (or lies in) an input, an
            output folder of another model (without ``overwrite``), no cases;
        ModelFileError: an unreadable or incompatible model file.
    """
    from tqdm import tqdm

    from fuse4seg.data import discover_cases
    from fuse4seg.device import resolve_device
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

    opts = options or FolderOptions()
    model_path, input_path, output = Path(model_path), Path(input_path), Path(output)
    if opts.batch_size < 1:
        raise InputError(None, f"--batch-size must be >= 1, got {opts.batch_size}")
    check_output_location(output, [input_path, model_path])
    if output.exists() and not output.is_dir():
        raise InputError(output, "output exists and is not a folder")
    problems: list[tuple[str, str]] = []
    cases = discover_cases(input_path, problems=problems)
    # case folders may be symbolic links into the output folder
    check_output_location(output, [c.folder for c in cases])
    device = resolve_device(opts.device)
    model = load_model_file(model_path, device)
    if getattr(model, "spatial_dims", 2) != 2 and not hasattr(model, "predict_volume"):
        raise InputError(model_path, "3D model without a volume-level predictor")
    predictor = Predictor(
        model,
        device=device,
        batch_size=opts.batch_size,
        tta=opts.tta,
        amp=opts.amp,
        keep_probabilities=opts.save_probabilities,
        mask_fused=opts.fused_mask,
    )
    sha256 = file_sha256(model_path)
    previous = _previous_outputs(output)

    def paths_of(case_id: str, folder: Path) -> dict[str, Path]:
        return output_paths(case_id, folder, opts.naming)

    if not opts.overwrite:
        _check_provenance(cases, output, previous, sha256, paths_of)
    out_dir = open_item_folder(output)
    if record is None:
        record = {"model": model_path, "input": input_path, "output": output, **asdict(opts)}
    rec: dict[str, Any] = {k: (str(v) if isinstance(v, Path) else v) for k, v in record.items()}
    rec.update(
        device_used=str(device),
        method=getattr(model, "method", None),
        modalities=list(model.modalities),
        model_sha256=sha256,
        outputs=previous,  # case -> the model that made its files (kept for skipped cases)
    )

    def set_output(case_id: str, files: list[Path], status: str) -> None:
        rec["outputs"][case_id] = {
            "files": [p.name for p in files],
            "model": str(model_path),
            "model_sha256": sha256,
            "method": rec["method"],
            "status": status,  # "writing" until every file of the case is in place
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        save_json_atomic(rec, out_dir / RECORD_NAME)

    save_json_atomic(rec, out_dir / RECORD_NAME)

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
                warn(f"warning: {case_id}: {pred.label_warning}")
            dice = pred.dice()
            if dice is not None:
                say(f"{case_id}: Dice " + " ".join(f"{k} {v:.3f}" for k, v in dice.items()))
            elif pred.seg_problem:
                say(f"note: {case_id}: seg not scored ({pred.seg_problem})")
            else:
                say(f"{case_id}: written ({', '.join(p.name for p in written)})")

    not_run = 0
    try:
        bar = tqdm(cases, desc="predict", unit="case", disable=not show_progress(opts.progress))
        for i, case in enumerate(bar):
            if stop:
                not_run = len(cases) - i
                break
            paths = paths_of(case.case_id, out_dir)
            entry = rec["outputs"].get(case.case_id) or {}
            finished = paths["seg"].exists() and entry.get("status", "done") == "done"
            if finished and not opts.overwrite:
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
            job = writer.submit(write_prediction, pred, out_dir, opts.naming, opts.fused_dtype)
            pending.append((case.case_id, job, pred))
            settle(keep=1)
        settle(keep=0)
    finally:
        writer.shutdown(wait=True)  # a write in flight completes (atomically) even on SIGTERM
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    if stop:
        warn(f"stopped: {stop[0]}; {not_run} case(s) not run")
    return report
