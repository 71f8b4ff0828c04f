"""Throughput of ``fuse4seg predict`` over a folder of cases: seconds per 240x240x155 volume.

``fuse4seg predict`` writes each case's NIfTI files (gzip) on a background thread while the
next case is read and predicted. This script times the CLI on N copies of one case (a real
BraTS case from ``../shared/data/brats`` when present, else a phantom) against the same
work done one step after the other in the same run (read, predict, write, next case), with
a random-weight Fuse4Seg model of the chosen preset.

    .venv/bin/python benchmarks/predict_throughput.py --cases 4 --preset tiny --device cpu
    python benchmarks/predict_throughput.py --cases 8 --preset base --device cuda --batch-size 32
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from fuse4seg.cli.main import main as cli
from fuse4seg.data import discover_cases
from fuse4seg.device import resolve_device
from fuse4seg.inference import Predictor, write_prediction
from fuse4seg.models import create_fusion_net, create_seg_net
from fuse4seg.models.model_file import FusionSegModel, load_model_file, save_model_file

REPO = Path(__file__).resolve().parents[1]
REAL_CASE = REPO.parent / "shared" / "data" / "brats" / "Brats18_2013_2_1"


def _copies(tmp: Path, n: int) -> Path:
    """A folder with ``n`` copies of one case, named Case_000... (BraTS 2018 file naming)."""
    if REAL_CASE.is_dir():
        source, case_id = REAL_CASE, REAL_CASE.name
    else:
        from fuse4seg.data.phantom import write_phantom_case

        source = write_phantom_case(tmp / "source", 0, shape=(240, 240, 155), seed=0)
        case_id = source.name
    root = tmp / "cases"
    for i in range(n):
        new_id = f"Case_{i:03d}"
        folder = root / new_id
        folder.mkdir(parents=True)
        for f in source.iterdir():
            if f.name.startswith(case_id):
                shutil.copy(f, folder / f.name.replace(case_id, new_id, 1))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "base", "paper"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = _copies(tmp, args.cases)
        torch.manual_seed(0)
        model = FusionSegModel(
            "fuse4seg",
            ["t1ce", "flair"],
            create_seg_net(args.preset, 1),
            fusion_net=create_fusion_net(args.preset, 2),
            fusion_preset=args.preset,
            seg_preset=args.preset,
        )
        model_path = tmp / "model.pt"
        save_model_file(model, model_path)

        # baseline: one step after the other, as predict did before the background writer
        predictor = Predictor(
            load_model_file(model_path, device), device=device, batch_size=args.batch_size
        )
        cases = discover_cases(root)
        predictor.predict_case(cases[0])  # warm-up (kernels, allocator)
        t0 = time.perf_counter()
        for case in cases:
            write_prediction(predictor.predict_case(case), tmp / "sequential")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        sequential = (time.perf_counter() - t0) / len(cases)

        t0 = time.perf_counter()
        rc = cli(
            ["predict", "-m", str(model_path), "-i", str(root), "-o", str(tmp / "cli")]
            + ["--device", str(device), "--batch-size", str(args.batch_size), "--no-progress"]
        )
        pipelined = (time.perf_counter() - t0) / len(cases)
        if rc != 0:
            raise SystemExit(f"fuse4seg predict failed with exit code {rc}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} thr"
    print(
        f"{args.cases} cases of {'Brats18_2013_2_1' if REAL_CASE.is_dir() else 'a phantom'}, "
        f"preset {args.preset}, {device.type} ({name}), batch {args.batch_size}"
    )
    print(f"sequential read -> predict -> write: {sequential:.2f} s per case")
    print(
        f"fuse4seg predict (background writer, model loading included): {pipelined:.2f} s per case"
    )
    print(f"ratio: {pipelined / sequential:.2f}")


if __name__ == "__main__":
    main()
