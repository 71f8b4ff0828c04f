"""Data-layer speed: prepare seconds per real BraTS case and SliceDataset slices/s.

Targets (issue 2): <= 3 s per 240x240x155 case per core (single process) and >= 2000 slices/s
from the store. Skips with a message when ../shared/data/brats is absent.

    .venv/bin/python benchmarks/data_speed.py [--cases 3] [--brats DIR] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fuse4seg.data import PreparedStore, PrepareOptions, SliceDataset, prepare_dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BRATS = Path(os.environ.get("FUSE4SEG_SHARED", REPO.parent / "shared")) / "data" / "brats"
TARGET_PREPARE_S = 3.0
TARGET_SLICES_PER_S = 2000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brats", type=Path, default=DEFAULT_BRATS, help="BraTS folder")
    parser.add_argument("--cases", type=int, default=3, help="real cases to prepare (default 3)")
    parser.add_argument("--scale", type=float, default=1.0, help="prepare --scale (default 1)")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the slices (default 2)")
    args = parser.parse_args(argv)
    if not args.brats.is_dir():
        print(f"SKIP: real data not available ({args.brats} is absent)")
        return 0
    import torch

    torch.set_num_threads(1)
    names = sorted(p.name for p in args.brats.iterdir() if p.is_dir())[: args.cases]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for name in names:  # symlinks: a subset without copying the data
            (src / name).symlink_to(args.brats / name, target_is_directory=True)
        out = Path(tmp) / "prep"
        start, cpu0 = time.perf_counter(), time.process_time()
        res = prepare_dataset(src, out, PrepareOptions(scale=args.scale), workers=1, log=print)
        n_ok = max(1, len(res.prepared))
        prep_s = (time.perf_counter() - start) / n_ok
        prep_cpu = (time.process_time() - cpu0) / n_ok
        store = PreparedStore(out)
        results = {}
        for augment in (False, True):
            ds = SliceDataset(store, None, augment=augment)
            order = np.random.default_rng(0).permutation(len(ds))
            for i in order[:50]:  # warm the page cache and memory maps
                ds[int(i)]
            start, cpu0 = time.perf_counter(), time.process_time()
            for _ in range(args.epochs):
                for i in order:
                    ds[int(i)]
            n = args.epochs * len(ds)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
            results[augment] = (n / wall, n / max(cpu, 1e-9))
        size = store.size
    print(f"cases prepared        : {len(res.prepared)} ({', '.join(res.prepared)})")
    print(f"load average (1 min)  : {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"prepare s/case (1 proc, t1ce+flair, scale {args.scale}): wall {prep_s:.2f} s, "
        f"cpu {prep_cpu:.2f} s  target <= {TARGET_PREPARE_S} s per core  "
        f"ratio (cpu) {prep_cpu / TARGET_PREPARE_S:.2f} of budget"
    )
    for augment, (rate, cpu_rate) in results.items():
        label = "with augmentation" if augment else "plain"
        print(
            f"SliceDataset {size}x{size} {label:17s}: wall {rate:7.0f} slices/s, cpu "
            f"{cpu_rate:7.0f} slices/s  target >= {TARGET_SLICES_PER_S:.0f}  "
            f"ratio (wall) {rate / TARGET_SLICES_PER_S:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
