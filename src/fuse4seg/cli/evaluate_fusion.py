"""``fuse4seg evaluate-fusion``: score fused images against their two sources.

Each fused image is paired by name (stem) with the source images of the same stem; every file
is read as the reference evaluator does (8-bit, colour -> luminance, rounded). A fused image
without both sources, or with a size mismatch, fails (named); the rest are scored and the
exit code is 2. Source images without a fused image are noted and ignored.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fuse4seg.errors import ConfigError, Fuse4SegError, InputError

__all__ = ["HELP", "add_arguments", "run", "pair_files", "parse_metrics", "CSV_COLUMNS"]

HELP = "score fused images (EN, SD, ..., PSNR; --metrics all: 38 metrics)"
#: CSV columns of the default set: the reference evaluator's ten metrics (the fast path).
CSV_COLUMNS = ("image", "EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "PSNR")
#: Columns left empty (NaN) where an image is too small for them (MS-SSIM: 176 px,
#: MEF-SSIM: 44 px).
_OPTIONAL = ("MS-SSIM", "MEF-SSIM")


def parse_metrics(spec: str) -> list[str]:
    """Metric names from ``--metrics``: a comma-separated list of names (any case) and the
    groups ``default`` (the reference evaluator's ten), ``extra`` (FMI, MS-SSIM),
    ``literature`` (the 26 further metrics) and ``all``; duplicates are dropped."""
    from fuse4seg.metrics import (
        ALL_FUSION_METRICS,
        EXTRA_FUSION_METRICS,
        FUSION_METRICS,
        LITERATURE_FUSION_METRICS,
    )

    groups = {
        "default": FUSION_METRICS,
        "extra": EXTRA_FUSION_METRICS,
        "literature": LITERATURE_FUSION_METRICS,
        "all": ALL_FUSION_METRICS,
    }
    by_lower = {m.lower(): m for m in ALL_FUSION_METRICS}
    out: list[str] = []
    for item in (t.strip() for t in spec.split(",")):
        if not item:
            continue
        if item.lower() in groups:
            names = groups[item.lower()]
        elif item.lower() in by_lower:
            names = (by_lower[item.lower()],)
        else:
            raise ConfigError(
                f"--metrics: unknown metric {item!r}; choose from default, extra, literature, "
                f"all or {', '.join(ALL_FUSION_METRICS)}"
            )
        out.extend(n for n in names if n not in out)
    if not out:
        raise ConfigError(f"--metrics: no metric given in {spec!r}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--source-a", required=True, type=Path, help="folder of source A")
    parser.add_argument("-b", "--source-b", required=True, type=Path, help="folder of source B")
    parser.add_argument("-f", "--fused", required=True, type=Path, help="folder of fused images")
    parser.add_argument(
        "--convention",
        choices=("reference", "standard"),
        default="reference",
        help="reference: reproduce the MIF literature's Python evaluator (MI in nats, SSIM "
        "data range 2, ...); standard: textbook definitions. Default reference.",
    )
    parser.add_argument(
        "--metrics",
        default="default",
        help="comma-separated metric names or groups: default (EN, SD, SF, AG, MI, SCD, VIF, "
        "Qabf, SSIM, PSNR: the reference evaluator's ten, compiled fast path, about 10 ms "
        "CPU per 256x256 image with reading), extra (FMI, MS-SSIM), literature (CE, EI, RMSE, "
        "MSE, CC, NMI, TE, Qncie, Qsf, Qs, Qw, Qe, Qc, Qy, Qcv, Qcb, Nabf, Labf, Qp, Qm, "
        "MEF-SSIM, FMI_w, FMI_dct, FMI_pixel, FMI_g, FMI_edge), all (the 38). "
        "Lower is better for CE, RMSE, MSE, Qcv, Nabf, Labf; Qsf is best at 0. See "
        "docs/metrics.md. Default: default.",
    )
    parser.add_argument(
        "--over-sources",
        choices=("default", "sum", "mean"),
        default="default",
        help="per-source metrics summed or averaged over the two sources: default = as each "
        "metric's defining code (MI, VIF, SSIM, FMI, MS-SSIM, NMI, TE summed as in the "
        "reference evaluator and MEFB; CE, RMSE, MSE, CC averaged as in VIFB, the windowed "
        "FMI_w, FMI_dct, FMI_pixel, FMI_g, FMI_edge as in fmi.m); mean gives "
        "e.g. TDFusion's SSIM and VIF. Default: default.",
    )
    parser.add_argument("-o", "--output", type=Path, help="write per-image values to this CSV")
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda[:N] or mps (default auto)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="images scored at once on CPU (threads; default: the number of CPU cores)",
    )


def _images(folder: Path) -> dict[str, Path]:
    from fuse4seg.metrics import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise InputError(folder, "folder does not exist" if not folder.exists() else "not a folder")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in out:
                raise InputError(p, f"two images with the stem {p.stem!r} ({out[p.stem].name})")
            out[p.stem] = p
    return out


def pair_files(
    dir_a: Path, dir_b: Path, dir_f: Path
) -> tuple[list[tuple[str, Path, Path, Path]], list[str], list[Path]]:
    """Pair images by stem.

    Returns ``(pairs (stem, a, b, f), problems, unused)``: a fused image without both
    sources is a problem (named); source images without a fused image are only ``unused``.
    """
    a, b, f = _images(dir_a), _images(dir_b), _images(dir_f)
    if not f:
        raise InputError(dir_f, "no images (.png, .jpg, .bmp, .tif) found")
    pairs, problems = [], []
    for stem in sorted(f):
        missing = [str(d) for d, m in ((dir_a, a), (dir_b, b)) if stem not in m]
        if missing:
            problems.append(f"{f[stem]}: no matching file in {' and '.join(missing)}")
        else:
            pairs.append((stem, a[stem], b[stem], f[stem]))
    unused = [m[stem] for m in (a, b) for stem in sorted(m) if stem not in f]
    return pairs, problems, unused


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.4f}"


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from fuse4seg.device import resolve_device
    from fuse4seg.io.atomic import atomic_path
    from fuse4seg.metrics import compute_fusion_metrics, read_gray_reference

    metrics = parse_metrics(args.metrics)
    if args.output is not None and args.output.suffix.lower() != ".csv":
        raise ConfigError(f"--output must be a .csv file, got {args.output}")
    if args.output is not None:
        from fuse4seg.io.output_policy import check_output_location

        check_output_location(args.output, [args.source_a, args.source_b, args.fused])
    device = resolve_device(args.device)
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if device.type == "cpu":
        # one image per thread: the metric kernels run without the GIL, while intra-op threads
        # on one small image only add overhead (see benchmarks/metrics_speed.py)
        torch.set_num_threads(1)
    else:
        workers = 1
    pairs, failures, unused = pair_files(args.source_a, args.source_b, args.fused)
    for msg in failures:
        print(f"FAILED {msg}", file=sys.stderr)
    if unused:
        names = ", ".join(p.name for p in unused[:5]) + (", ..." if len(unused) > 5 else "")
        print(f"note: {len(unused)} source image(s) without a fused image ignored ({names})")
    required = [m for m in metrics if m not in _OPTIONAL]
    optional = [m for m in metrics if m in _OPTIONAL]

    def score(pair: tuple[str, Path, Path, Path]) -> dict[str, float]:
        _, pa, pb, pf = pair
        imgs = [read_gray_reference(p) for p in (pa, pb, pf)]
        if not imgs[0].shape == imgs[1].shape == imgs[2].shape:
            sizes = ", ".join(f"{p} {i.shape}" for p, i in zip((pa, pb, pf), imgs, strict=True))
            raise InputError(pf, f"image sizes differ: {sizes}")
        t = torch.from_numpy(np.stack(imgs)).to(device)  # (3, H, W)
        over = args.over_sources
        vals = compute_fusion_metrics(
            t[None, :2], t[None, 2], args.convention, required, over_sources=over
        )
        for name in optional:
            try:
                vals.update(
                    compute_fusion_metrics(
                        t[None, :2], t[None, 2], args.convention, [name], over_sources=over
                    )
                )
            except ValueError:  # image too small for this metric
                vals[name] = torch.full((1,), math.nan, dtype=torch.float64)
        return {k: float(vals[k][0]) for k in metrics}

    def attempt(pair: tuple[str, Path, Path, Path]) -> dict[str, float] | Exception:
        try:
            return score(pair)
        except (Fuse4SegError, ValueError) as exc:
            return exc

    if workers > 1 and len(pairs) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(pairs))) as pool:
            results = list(pool.map(attempt, pairs))
    else:
        results = [attempt(pair) for pair in pairs]
    rows: list[tuple[str, dict[str, float]]] = []
    for (stem, _, _, pf), result in zip(pairs, results, strict=True):
        if isinstance(result, Exception):
            failures.append(str(result))
            print(f"FAILED {stem}: {result}", file=sys.stderr)
        else:
            rows.append((pf.name, result))

    def column_mean(m: str) -> float:
        col = np.array([r[m] for _, r in rows], dtype=np.float64)
        ok = col[~np.isnan(col)]
        return float(ok.mean()) if ok.size else math.nan  # all NaN (too small): NaN

    means = {m: column_mean(m) for m in metrics}
    width = max([len("image")] + [len(n) for n, _ in rows]) + 2
    print("image".ljust(width) + "".join(m.rjust(10) for m in metrics))
    for name, r in [*rows, ("mean", means)]:
        print(name.ljust(width) + "".join(_fmt(r[m]).rjust(10) for m in metrics))
    if args.output is not None and rows:
        with atomic_path(args.output) as tmp, tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", *metrics])
            for name, r in [*rows, ("mean", means)]:
                w.writerow([name] + [repr(r[m]) for m in metrics])
        print(f"wrote {args.output}")
    print(f"{len(rows)} image(s) scored ({args.convention} convention), {len(failures)} failed")
    if not rows:
        raise InputError(args.fused, "no image could be scored")
    return 2 if failures else 0
