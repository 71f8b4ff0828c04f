"""Speed of the full fusion metric set (EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, PSNR).

Times ``fuse4seg.metrics.compute_fusion_metrics`` (reference convention) per 256x256 pair,
single image and batched, on CPU (and CUDA when present), against a straightforward
per-image NumPy/SciPy implementation of the reference evaluator's formulas written here (the
way that evaluator computes them: ``scipy.signal.convolve2d``, ``np.unique`` contingency
tables, ``uniform_filter``), and checks that both give the same values.

Two CPU backends are timed: the compiled kernels (Numba; the default where installed) and
the tensor code alone (``FUSE4SEG_METRICS_BACKEND=torch``, the code that also runs on GPUs),
each with 1 and 2 threads (batched calls score images concurrently on the worker threads).

Run:  .venv/bin/python benchmarks/metrics_speed.py [--batch 64] [--threads 1,2]
Uses the Harvard MRI-CT / MRI-PET pairs from ../shared/data when present, else phantoms.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import uniform_filter
from scipy.signal import convolve2d

from fuse4seg.metrics import FUSION_METRICS, _kernels, compute_fusion_metrics, read_gray_reference

HARVARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "harvard"


# ---------------------------------------------------------------- NumPy baseline
def _mi(x: np.ndarray, y: np.ndarray) -> float:
    _, xi = np.unique(x.ravel(), return_inverse=True)
    _, yi = np.unique(y.ravel(), return_inverse=True)
    nx, ny = xi.max() + 1, yi.max() + 1
    joint = np.bincount(xi * ny + yi, minlength=nx * ny).reshape(nx, ny) / x.size
    px, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (px @ py)[nz])).sum())


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    return float((xc * yc).sum() / np.sqrt((xc**2).sum() * (yc**2).sum()))


def _vifp(ref: np.ndarray, dist: np.ndarray) -> float:
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        r = (n - 1) / 2
        yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
        win = np.exp(-(xx * xx + yy * yy) / (2 * (n / 5) ** 2))
        win /= win.sum()
        if scale > 1:
            ref = convolve2d(ref, win, mode="valid")[::2, ::2]
            dist = convolve2d(dist, win, mode="valid")[::2, ::2]
        mu1, mu2 = convolve2d(ref, win, mode="valid"), convolve2d(dist, win, mode="valid")
        s1 = np.maximum(convolve2d(ref * ref, win, mode="valid") - mu1 * mu1, 0)
        s2 = np.maximum(convolve2d(dist * dist, win, mode="valid") - mu2 * mu2, 0)
        s12 = convolve2d(ref * dist, win, mode="valid") - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        m = s1 < 1e-10
        g[m], sv[m], s1[m] = 0, s2[m], 0
        m = s2 < 1e-10
        g[m], sv[m] = 0, 0
        m = g < 0
        sv[m], g[m] = s2[m], 0
        sv[sv <= 1e-10] = 1e-10
        num += np.sum(np.log10(1 + g * g * s1 / (sv + 2)))
        den += np.sum(np.log10(1 + s1 / 2))
    v = num / den
    return 1.0 if np.isnan(v) else float(v)


def _qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    sx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    sy = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32)

    def ga(x):
        gx, gy = convolve2d(x, sx, mode="same"), convolve2d(x, sy, mode="same")
        ang = np.full_like(x, math.pi / 2)
        nz = gx != 0
        ang[nz] = np.arctan(gy[nz] / gx[nz])
        return np.sqrt(gx * gx + gy * gy), ang

    def q(gs, as_, gf, af):
        big = np.where(
            gs > gf,
            gf / np.where(gs > 0, gs, 1),
            np.where(gs < gf, gs / np.where(gf > 0, gf, 1), gf),
        )
        aa = 1 - np.abs(as_ - af) / (math.pi / 2)
        return 0.9994 / (1 + np.exp(-15 * (big - 0.5))) * 0.9879 / (1 + np.exp(-22 * (aa - 0.8)))

    (g_a, a_a), (g_b, a_b), (g_f, a_f) = ga(a), ga(b), ga(f)
    nume = np.sum(q(g_a, a_a, g_f, a_f) * g_a + q(g_b, a_b, g_f, a_f) * g_b)
    return float(nume / np.sum(g_a + g_b))


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    ux, uy = uniform_filter(x, 7), uniform_filter(y, 7)
    uxx, uyy, uxy = uniform_filter(x * x, 7), uniform_filter(y * y, 7), uniform_filter(x * y, 7)
    c = 49 / 48
    vx, vy, vxy = c * (uxx - ux * ux), c * (uyy - uy * uy), c * (uxy - ux * uy)
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(s[3:-3, 3:-3].mean(dtype=np.float64))


def numpy_reference(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> dict[str, float]:
    """The ten reference metrics of one pair with plain NumPy/SciPy (float32 inputs)."""
    lv = np.uint8(np.round(f)).ravel()
    h = np.bincount(lv, minlength=256) / lv.size
    gx, gy = np.gradient(f, axis=1), np.gradient(f, axis=0)
    mse = (np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2
    return {
        "EN": float(-np.sum(h * np.log2(h + (h == 0)))),
        "SD": float(np.std(f)),
        "SF": float(np.sqrt(np.mean(np.diff(f, axis=1) ** 2) + np.mean(np.diff(f, axis=0) ** 2))),
        "AG": float(np.mean(np.sqrt((gx**2 + gy**2) / 2))),
        "MI": _mi(f, a) + _mi(f, b),
        "SCD": _corr(a, f - b) + _corr(b, f - a),
        "VIF": _vifp(a, f) + _vifp(b, f),
        "Qabf": _qabf(a, b, f),
        "SSIM": _ssim(f, a) + _ssim(f, b),
        "PSNR": float(10 * np.log10(np.max(f) ** 2 / mse)),
    }


# ------------------------------------------------------------------------ data
def load_pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    a_list, b_list = [], []
    for sub, other in (("MRI_CT", "CT"), ("MRI_PET", "PET")):
        folder = HARVARD / sub / "MRI"
        for p in sorted(folder.glob("*.png")) if folder.is_dir() else []:
            a_list.append(read_gray_reference(p))
            b_list.append(read_gray_reference(HARVARD / sub / other / p.name))
    if a_list:
        src = "Harvard MRI-CT/MRI-PET"
    else:  # smooth random phantoms
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:256, :256] / 255.0
        for i in range(8):
            a_list.append(
                np.round(127 + 120 * np.sin(6 * xx + i) * np.cos(5 * yy)).astype(np.float32)
            )
            b_list.append(np.round(rng.uniform(0, 255, (256, 256))).astype(np.float32))
        src = "synthetic phantoms"
    reps = -(-n // len(a_list))
    a = np.stack((a_list * reps)[:n])
    b = np.stack((b_list * reps)[:n])
    f = np.floor((a + b) / 2 + 0.5).astype(np.float32)
    return a, b, f, src


def _time(fn, repeat: int) -> tuple[float, float]:
    """Best wall-clock and best process CPU time of ``repeat`` calls (after a warm-up).

    CPU time is the fairer figure on a shared machine; with one thread it equals wall time
    on an idle one.
    """
    fn()  # warm-up
    wall = cpu = math.inf
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64, help="images per batched call (default 64)")
    ap.add_argument("--baseline-images", type=int, default=8, help="images for the NumPy timing")
    ap.add_argument(
        "--threads", default="1,2", help="comma-separated CPU thread counts (default 1,2)"
    )
    ap.add_argument("--repeat", type=int, default=5, help="timed repeats (the best is kept)")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    a, b, f, what = load_pairs(args.batch)
    print(f"data: {what}, {args.batch} pairs of {f.shape[1]}x{f.shape[2]}")

    torch.set_num_threads(1)
    nb = min(args.baseline_images, args.batch)
    w_np, c_np = _time(lambda: [numpy_reference(a[i], b[i], f[i]) for i in range(nb)], 1)
    w_np, c_np = w_np / nb, c_np / nb
    base = [numpy_reference(a[i], b[i], f[i]) for i in range(nb)]
    print(
        f"NumPy/SciPy per-image baseline (1 thread): wall {w_np * 1e3:8.2f} ms  "
        f"cpu {c_np * 1e3:8.2f} ms"
    )

    src_t = torch.from_numpy(np.stack([a, b], 1))
    f_t = torch.from_numpy(f)
    backends = (["kernels"] if _kernels.available() else []) + ["torch"]
    runs = [("cpu", be, th) for be in backends for th in threads]
    if torch.cuda.is_available():
        runs.append(("cuda", "torch", 0))
    for dev_name, backend, n_threads in runs:
        os.environ["FUSE4SEG_METRICS_BACKEND"] = "numba" if backend == "kernels" else "torch"
        dev = torch.device(dev_name)
        if dev.type == "cpu":
            torch.set_num_threads(n_threads)
        s_d, f_d = src_t.to(dev), f_t.to(dev)
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

        n_single = min(16, args.batch)

        def single(s_d=s_d, f_d=f_d, sync=sync, n_single=n_single):
            for i in range(n_single):  # one call per image, as a per-file evaluator does
                compute_fusion_metrics(s_d[i : i + 1], f_d[i : i + 1])
            sync()

        def batched(s_d=s_d, f_d=f_d, sync=sync):
            compute_fusion_metrics(s_d, f_d)
            sync()

        label = f"{dev.type} {backend}" + (f", {n_threads} thr" if dev.type == "cpu" else "")
        for mode, fn, n in (
            ("single", single, n_single),
            (f"batch {args.batch}", batched, args.batch),
        ):
            wall, cpu = _time(fn, args.repeat)
            wall, cpu = wall / n, cpu / n
            print(
                f"fuse4seg {label:>22s} {mode:>9s}: wall {wall * 1e3:7.2f} ms  cpu "
                f"{cpu * 1e3:7.2f} ms  -> {w_np / wall:6.1f}x baseline, {0.39 / wall:6.1f}x 0.39 s"
            )
        vals = compute_fusion_metrics(s_d[:nb], f_d[:nb])
        worst = max(
            abs(float(vals[m][i]) - base[i][m]) / max(abs(base[i][m]), 1e-12)
            for m in FUSION_METRICS
            for i in range(nb)
        )
        print(f"  max relative difference to the baseline over {nb} images: {worst:.2e}")
    os.environ.pop("FUSE4SEG_METRICS_BACKEND", None)


if __name__ == "__main__":
    main()
