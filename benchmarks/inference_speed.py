"""Inference speed: seconds per 240x240x155 BraTS volume (fuse + segment, I/O included).

For each preset, builds a Fuse4Seg model (FusionNet + SegNet, **random weights**: the cost
does not depend on the weights), writes it as ``model.pt``, then times the full per-case
path of ``fuse4seg predict``: load the NIfTI files (with checks), normalise, run the slices
with brain (batched), write ``<case>_seg.nii.gz`` and ``<case>_fused.nii.gz``. Reports
seconds per volume (wall), process CPU seconds (all threads; less sensitive to other load on
a shared machine), brain slices per second, and the ratio to the target (20 s per volume
on 2 CPU cores with ``base``; 0.5 s on a CUDA GPU with bf16).

The case is a real BraTS volume from ``../shared/data/brats`` when present (background
slices are skipped, as in ``predict``), else a 240x240x155 phantom.

Usage:
    .venv/bin/python benchmarks/inference_speed.py [--presets tiny base] [--threads 2]
        [--device cpu] [--batch-size 16] [--scale 1.0] [--repeats 1] [--tta]
        [--max-slices N]   # time only N brain slices and extrapolate (for ``paper`` on CPU)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fuse4seg.data import discover_cases, load_case
from fuse4seg.device import resolve_device
from fuse4seg.inference import Predictor, write_prediction
from fuse4seg.models import create_fusion_net, create_seg_net
from fuse4seg.models.model_file import FusionSegModel, load_model_file, save_model_file

REPO = Path(__file__).resolve().parents[1]
REAL_CASE = REPO.parent / "shared" / "data" / "brats" / "Brats18_2013_2_1"
TARGETS = {"cpu": 20.0, "cuda": 0.5}


def _case_folder(tmp: Path) -> Path:
    if REAL_CASE.is_dir():
        return REAL_CASE
    from fuse4seg.data.phantom import write_phantom_case

    return write_phantom_case(tmp, 0, shape=(240, 240, 155), seed=0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_preset(
    preset: str, case_folder: Path, tmp: Path, device: torch.device, args: argparse.Namespace
) -> dict:
    torch.manual_seed(0)
    model = FusionSegModel(
        "fuse4seg",
        ["t1ce", "flair"],
        create_seg_net(preset, 1),
        fusion_net=create_fusion_net(preset, 2),
        preprocessing={"scale": args.scale},
        fusion_preset=preset,
        seg_preset=preset,
    )
    path = tmp / f"{preset}.pt"
    save_model_file(model, path)
    model = load_model_file(path, device)
    predictor = Predictor(model, device=device, batch_size=args.batch_size, tta=args.tta)
    case = discover_cases(case_folder)[0]
    with torch.inference_mode():  # warm-up (allocator, kernels) outside the timing
        predictor.predict_slices(torch.rand(2, 2, 240, 240))
    _sync(device)
    n_brain = None
    times, cpu_times = [], []
    for _ in range(args.repeats):
        out = tmp / f"out-{preset}"
        c0 = time.process_time()
        t0 = time.perf_counter()
        loaded = load_case(case, predictor.modalities)
        brain = np.any(np.stack([loaded.images[m] != 0 for m in predictor.modalities]), axis=0)
        n_brain = int(brain.any(axis=(0, 1)).sum())
        if args.max_slices and args.max_slices < n_brain:
            # loading time + network time of max_slices extrapolated (no writing)
            t_load = time.perf_counter() - t0
            c_load = time.process_time() - c0
            zs = np.flatnonzero(brain.any(axis=(0, 1)))[: args.max_slices]
            stack = np.stack([loaded.images[m][:, :, zs] for m in predictor.modalities])
            stack = np.ascontiguousarray(stack.transpose(3, 0, 1, 2)) / max(1.0, stack.max())
            t_net = time.perf_counter()
            with torch.inference_mode():  # min-max scaled stand-in for the normalisation
                predictor.predict_slices(torch.from_numpy(stack.astype(np.float32)))
            _sync(device)
            net_s = (time.perf_counter() - t_net) * n_brain / len(zs)
            times.append(t_load + net_s)
            cpu_times.append(c_load + (time.process_time() - c0 - c_load) * n_brain / len(zs))
            continue
        pred = predictor.predict_loaded(loaded)
        write_prediction(pred, out)
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    sec = float(np.median(times))
    return {
        "preset": preset,
        "s_per_volume": sec,
        "brain_slices": n_brain,
        "slices_per_s": n_brain / sec,
        "cpu_s": float(np.median(cpu_times)),
        "extrapolated": bool(args.max_slices and args.max_slices < (n_brain or 0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--scale", type=float, default=1.0, help="model in-plane scale")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--max-slices", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        case_folder = _case_folder(tmp)
        print(
            f"case: {case_folder.name}, device {device}, {args.threads} threads, "
            f"batch {args.batch_size}, scale {args.scale}, tta {args.tta}, random weights"
        )
        target = TARGETS.get(device.type, TARGETS["cpu"])
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(
            "| preset | s / volume | CPU s (all threads) | brain slices | slices / s | target s "
            "| ratio to target |"
        )
        print("|---|---|---|---|---|---|---|")
        for preset in args.presets:
            r = time_preset(preset, case_folder, tmp, device, args)
            note = " (extrapolated)" if r["extrapolated"] else ""
            print(
                f"| {preset} | {r['s_per_volume']:.2f}{note} | {r['cpu_s']:.1f} | "
                f"{r['brain_slices']} | "
                f"{r['slices_per_s']:.2f} | {target:g} | {r['s_per_volume'] / target:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
