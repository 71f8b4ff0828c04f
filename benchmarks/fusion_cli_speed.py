"""Per-image time of ``fuse4seg evaluate-fusion`` against the reference evaluator.

Target (issues 16 and 19): the CLI's default metric set (EN, SD, SF, AG, MI, SCD, VIF, Qabf,
SSIM, PSNR, the compiled fast path) at least **50x faster per image** on CPU than the
reference evaluator's same ten metrics. The whole set (``--metrics all``, 38 metrics) is
timed as well (no target: the literature's metrics are tensor code).

The fused images are the max rule of the Harvard MRI-SPECT pairs (73, from ../shared/data),
written as PNG to a temporary folder outside the repository. The CLI runs in this process
(``fuse4seg.cli.main.main``; imports and the kernels' first compilation are done in a warm-up
run) and reads, pairs and scores every image and writes its CSV; time per image = wall time /
number of images.

Reference evaluator: pass ``--reference-evaluator PATH`` to the reference evaluator's
``Evaluator.py`` (the CDDFuse code: ``utils/Evaluator.py``; it needs OpenCV, scikit-learn and
scikit-image, e.g. installed into a separate folder given with ``--reference-pythonpath``).
It is loaded from that path at run time (its code is not part of fuse4seg) and timed per image
as its users run it: ``image_read_cv2(..., 'GRAY')`` for the three images, then its ten
metrics. Without it, the NumPy/SciPy re-implementation of the same formulas in
``benchmarks/metrics_speed.py`` is the baseline (stated in the output).

Run:
  .venv/bin/python benchmarks/fusion_cli_speed.py \\
      [--reference-evaluator /path/Evaluator.py --reference-pythonpath /path/site] \\
      [--images 73] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fuse4seg.cli.main import main as cli_main
from fuse4seg.metrics import read_gray_reference

HARVARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "harvard" / "MRI_SPECT"
TARGET = 50.0
_TEN = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIFF", "Qabf", "SSIM", "PSNR")


def make_folders(root: Path, n: int) -> int:
    """Copy n MRI-SPECT pairs (or phantoms) and write their max-rule fusions; returns n."""
    dirs = [root / k for k in ("a", "b", "f")]
    for d in dirs:
        d.mkdir()
    names = sorted(p.name for p in (HARVARD / "MRI").glob("*.png")) if HARVARD.is_dir() else []
    if names:
        names = names[:n]
        for name in names:
            a = read_gray_reference(HARVARD / "MRI" / name).astype(np.uint8)
            b = read_gray_reference(HARVARD / "SPECT" / name).astype(np.uint8)
            for d, img in zip(dirs, (a, b, np.maximum(a, b)), strict=True):
                Image.fromarray(img).save(d / name)
        return len(names)
    rng = np.random.default_rng(0)
    for i in range(n):
        a, b = (rng.integers(0, 256, (256, 256), dtype=np.uint8) for _ in range(2))
        for d, img in zip(dirs, (a, b, np.maximum(a, b)), strict=True):
            Image.fromarray(img).save(d / f"{i:03d}.png")
    return n


def time_cli(root: Path, metrics: str, workers: int, repeat: int) -> tuple[float, float]:
    """Best wall and best process CPU time (s) of one ``evaluate-fusion`` run."""
    args = ["evaluate-fusion", "-a", str(root / "a"), "-b", str(root / "b")]
    args += ["-f", str(root / "f"), "--metrics", metrics, "--workers", str(workers)]
    best = best_cpu = float("inf")
    for i in range(repeat + 1):  # the first run warms up (imports, kernel compilation)
        out = root / f"scores_{metrics}_{workers}_{i}.csv"
        with contextlib.redirect_stdout(io.StringIO()):
            t0, c0 = time.perf_counter(), time.process_time()
            rc = cli_main([*args, "-o", str(out)])
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if rc != 0:
            raise RuntimeError(f"evaluate-fusion failed with exit code {rc}")
        if i > 0:
            best, best_cpu = min(best, wall), min(best_cpu, cpu)
    return best, best_cpu


def time_reference(path: Path, pythonpath: str | None, root: Path, n: int) -> tuple[float, float]:
    """Wall and CPU seconds per image of the reference evaluator (3 reads, ten metrics)."""
    if pythonpath:
        sys.path.insert(0, pythonpath)
    spec = importlib.util.spec_from_file_location("reference_evaluator", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if hasattr(mod, "ssim"):
        # scikit-image >= 0.19 requires data_range for float images; the evaluator was written
        # for the older implicit float range (-1, 1), i.e. data_range 2 (same arithmetic)
        mod.ssim = functools.partial(mod.ssim, data_range=2.0)
    ev = mod.Evaluator
    names = sorted(p.name for p in (root / "f").glob("*.png"))[:n]
    t0, c0 = time.perf_counter(), time.process_time()
    for name in names:
        a, b, f = (mod.image_read_cv2(str(root / d / name), "GRAY") for d in ("a", "b", "f"))
        ev.EN(f), ev.SD(f), ev.SF(f), ev.AG(f)
        for m in ("MI", "SCD", "VIFF", "Qabf", "SSIM", "PSNR"):
            getattr(ev, m)(f, a, b)
    return (time.perf_counter() - t0) / len(names), (time.process_time() - c0) / len(names)


def time_numpy_baseline(root: Path, n: int) -> tuple[float, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from metrics_speed import numpy_reference

    names = sorted(p.name for p in (root / "f").glob("*.png"))[:n]
    t0, c0 = time.perf_counter(), time.process_time()
    for name in names:
        a, b, f = (read_gray_reference(root / d / name) for d in ("a", "b", "f"))
        numpy_reference(a, b, f)
    return (time.perf_counter() - t0) / len(names), (time.process_time() - c0) / len(names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=73, help="image pairs (default 73, all)")
    ap.add_argument("--repeat", type=int, default=3, help="timed CLI runs, best kept (3)")
    ap.add_argument("--reference-evaluator", type=Path, help="path of the evaluator's .py")
    ap.add_argument("--reference-pythonpath", help="folder with its dependencies")
    ap.add_argument("--reference-images", type=int, default=10, help="images it scores (10)")
    ap.add_argument("--skip-all", action="store_true", help="do not time --metrics all")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n = make_folders(root, args.images)
        what = "Harvard MRI-SPECT" if HARVARD.is_dir() else "random phantoms"
        cores = os.cpu_count() or 1
        print(f"data: {n} {what} pairs (256x256), fused = max rule, PNG; {cores} CPU cores")
        nr = min(args.reference_images, n)
        if args.reference_evaluator is not None:
            ref = time_reference(args.reference_evaluator, args.reference_pythonpath, root, nr)
            label = f"reference evaluator ({args.reference_evaluator.name}, 10 metrics + reads)"
        else:
            ref = time_numpy_baseline(root, nr)
            label = "NumPy/SciPy re-implementation of the reference formulas (no evaluator given)"
        ref_wall, ref_cpu = ref
        print(f"{label}: wall {ref_wall * 1e3:7.1f} ms, cpu {ref_cpu * 1e3:7.1f} ms per image")
        print("  (CPU time is the fairer figure on a shared machine; wall = CPU when idle)")
        rows = [("default", 1), ("default", cores)]
        if not args.skip_all:
            rows.append(("all", 1))
        for metrics, workers in rows:
            wall, cpu = (t / n for t in time_cli(root, metrics, workers, args.repeat))
            verdict = ""
            if metrics == "default" and workers == 1:
                ok = ref_cpu / cpu >= TARGET
                verdict = f"  target >= {TARGET:.0f}x (cpu): {'met' if ok else 'NOT met'}"
            print(
                f"evaluate-fusion --metrics {metrics:7s} --workers {workers}: wall "
                f"{wall * 1e3:7.2f} ms ({ref_wall / wall:5.1f}x), cpu {cpu * 1e3:7.2f} ms "
                f"({ref_cpu / cpu:5.1f}x) per image{verdict}"
            )


if __name__ == "__main__":
    main()
