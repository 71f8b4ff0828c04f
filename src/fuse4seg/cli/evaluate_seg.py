"""``fuse4seg evaluate-seg``: Dice, IoU and HD95 of NIfTI segmentations against BraTS.

The reference folder is a BraTS case folder or a folder of them (either edition's naming);
predictions are ``<case>_seg.nii.gz`` or ``<case>.nii.gz`` (``.nii`` too) in ``--pred``.
Labels of both are converted to canonical 0-3 with the reference case's edition (ET = 4 or
3); ``--pred-labels canonical`` reads predictions that already use ET = 3. Columns are
``<metric>_<class>`` (``Dice_WT``); ``--dice-level slice`` reports 2D slice Dice instead of
3D case Dice (:mod:`fuse4seg.metrics.segmentation`). ``--lesion-wise`` adds the BraTS 2023
lesion-wise Dice and HD95, lesion counts and NSD of WT, TC and ET
(:mod:`fuse4seg.metrics.lesionwise`); ``--bootstrap N`` puts percentile 95 % CIs of every
column's mean in the summary JSON and the printout.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from fuse4seg.errors import ConfigError, Fuse4SegError, InputError

__all__ = ["HELP", "add_arguments", "run", "find_prediction", "score_case"]

HELP = "score NIfTI segmentations (Dice, IoU, HD95; --lesion-wise: BraTS 2023, NSD)"
_SHORT = ("Dice", "IoU", "HD95")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i", "--pred", required=True, type=Path, help="folder of predicted masks (the input)"
    )
    parser.add_argument("--ref", required=True, type=Path, help="BraTS folder (ground truth)")
    parser.add_argument("-o", "--output", type=Path, help="write per-case values to this CSV")
    parser.add_argument(
        "--pred-labels",
        choices=("edition", "canonical"),
        default="edition",
        help="label convention of the predictions: the reference case's edition (ET = 4 "
        "for 2018-2022, 3 for 2023; default) or canonical (ET = 3)",
    )
    parser.add_argument(
        "--dice-level",
        choices=("case", "slice"),
        default="case",
        help="case (default): one 3D Dice per case and class, as the BraTS challenge; slice: "
        "2D slice Dice, as 2D BraTS papers report it: the Dice of each class on every axial "
        "slice, averaged over the slices where the reference or the prediction has any tumour "
        "label (a class absent from both on such a slice scores 1). IoU and HD95 stay 3D",
    )
    parser.add_argument(
        "--all-metrics",
        action="store_true",
        help="also write sensitivity, specificity and volumes (ml) per class",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="write an nnU-Net-style summary JSON (per-case metrics, mean, sd, failures) to "
        "this file (default: beside --output as <name>.summary.json; none without --output)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="cases scored in parallel processes (default 1; HD95 dominates the time)",
    )
    lw = parser.add_argument_group("lesion-wise scores (BraTS 2023; see docs/metrics.md)")
    lw.add_argument(
        "--lesion-wise",
        action="store_true",
        help="add LesionDice, LesionHD95, NSD and the lesion counts LesionTP/FP/FN of WT, TC "
        "and ET (BraTS 2023 rules: GT components merged by dilation, each matched with the "
        "predicted components near it; a missed or a false lesion scores Dice 0 and the HD95 "
        "penalty)",
    )
    lw.add_argument(
        "--min-lesion-voxels",
        type=int,
        default=50,
        help="GT lesions of at most this many voxels are ignored (default 50, as BraTS 2023 "
        "glioma; a prediction on them is not a false positive either)",
    )
    lw.add_argument(
        "--dilation",
        type=int,
        default=3,
        help="dilation iterations (18-neighbourhood) that merge nearby GT components and "
        "define the matching zone around each GT lesion (default 3, as BraTS 2023 glioma; 1 "
        "for meningioma and metastases; 0 = no dilation)",
    )
    lw.add_argument(
        "--hd95-penalty",
        type=float,
        default=374.0,
        help="HD95 in mm of a missed or a false lesion (default 374, BraTS 2023's value, just "
        "above the 373 mm diagonal of a 240 x 240 x 155 volume)",
    )
    lw.add_argument(
        "--nsd-tolerance",
        type=float,
        default=1.0,
        help="normalised surface Dice tolerance in mm (default 1.0; BraTS also reports 0.5): "
        "the share of both boundaries within this distance of the other, on each 3D region",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="resamples of the cases for the percentile 95 %% CI of each column's mean, in the "
        "summary JSON and printed (default 1000; 0 = off)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed of the bootstrap (default 0)"
    )


def find_prediction(pred_dir: Path, case_id: str) -> Path | None:
    """The prediction file of ``case_id`` in ``pred_dir`` (None when absent)."""
    for name in (f"{case_id}_seg", f"{case_id}-seg", case_id):
        for ext in (".nii.gz", ".nii"):
            p = pred_dir / f"{name}{ext}"
            if p.is_file():
                return p
    return None


def score_case(
    case,
    pred_path: Path,
    pred_labels: str = "edition",
    dice_level: str = "case",
    lesion_wise: dict | None = None,
) -> dict[str, dict]:
    """Metrics of one case: ``{class: {metric: value}}`` (``Dice`` at ``dice_level``: 3D per
    case, or 2D slice Dice over the axial slices, the NIfTI's last axis).

    ``lesion_wise``: keyword arguments of
    :func:`fuse4seg.metrics.lesionwise.compute_lesionwise_metrics` (``min_lesion_voxels``,
    ``dilation``, ``hd95_penalty``, ``nsd_tolerance``); when given, the WT, TC and ET entries
    also hold :data:`~fuse4seg.metrics.lesionwise.LESIONWISE_METRICS`.

    Raises:
        InputError: unreadable files, a prediction whose shape or affine (tolerance
            :data:`fuse4seg.data.loading.AFFINE_TOLERANCE`) differs from the reference, or
            labels outside the convention.
    """
    import numpy as np

    from fuse4seg.data import read_nifti, to_canonical_labels
    from fuse4seg.data.loading import AFFINE_TOLERANCE
    from fuse4seg.metrics.segmentation import column, compute_segmentation_metrics, dice_scores

    ref_arr, ref_img = read_nifti(case.seg, as_float=False)
    pred_arr, pred_img = read_nifti(pred_path, as_float=False)
    if pred_arr.shape != ref_arr.shape:
        raise InputError(
            pred_path, f"shape {pred_arr.shape} differs from {case.seg} {ref_arr.shape}"
        )
    # the same geometry check as loading a case: voxels must map to the same places
    diff = float(np.max(np.abs(np.asarray(pred_img.affine) - np.asarray(ref_img.affine))))
    if not diff <= AFFINE_TOLERANCE:
        raise InputError(
            pred_path,
            f"affine differs from {case.seg} by up to {diff:.4g} (tolerance "
            f"{AFFINE_TOLERANCE:g}); not scored",
        )
    try:
        ref = to_canonical_labels(ref_arr, case.et_label)
    except ValueError as exc:
        raise InputError(case.seg, str(exc)) from None
    try:
        pred = to_canonical_labels(pred_arr, 3 if pred_labels == "canonical" else case.et_label)
    except ValueError as exc:
        raise InputError(pred_path, f"{exc} (see --pred-labels)") from None
    spacing = tuple(float(z) for z in ref_img.header.get_zooms()[:3])
    scores = compute_segmentation_metrics(pred, ref, spacing)
    if dice_level != "case":
        level_dice = dice_scores(pred, ref, level=dice_level, axis=-1)  # axial = Z
        for cls, values in scores.items():
            values["Dice"] = level_dice[column("Dice", cls)]
    if lesion_wise is not None:
        from fuse4seg.metrics.lesionwise import compute_lesionwise_metrics

        for cls, values in compute_lesionwise_metrics(pred, ref, spacing, **lesion_wise).items():
            scores[cls].update(values)
    return scores


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from fuse4seg.data import discover_cases
    from fuse4seg.io.atomic import atomic_path, save_json_atomic
    from fuse4seg.io.output_policy import check_output_location
    from fuse4seg.metrics.lesionwise import LESION_REGIONS, LESIONWISE_METRICS
    from fuse4seg.metrics.segmentation import BRATS_CLASSES, SEG_METRICS, column

    if args.output is not None and args.output.suffix.lower() != ".csv":
        raise ConfigError(f"--output must be a .csv file, got {args.output}")
    if args.output is not None:
        check_output_location(args.output, [args.pred, args.ref])
    if not args.pred.is_dir():
        raise InputError(
            args.pred, "folder does not exist" if not args.pred.exists() else "not a folder"
        )
    problems: list[tuple[str, str]] = []
    cases = [c for c in discover_cases(args.ref, problems=problems) if c.seg is not None]
    if not cases:
        raise InputError(args.ref, "no case with a segmentation file found")
    metrics = SEG_METRICS if args.all_metrics else _SHORT
    pairs = [(m, c) for c in BRATS_CLASSES for m in metrics]
    lesion_wise = _lesion_wise_options(args)
    if lesion_wise is not None:
        pairs += [(m, c) for c in LESION_REGIONS for m in LESIONWISE_METRICS]
    columns = [column(m, c) for m, c in pairs]
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0 resamples (0 = off), got {args.bootstrap}")
    rows: list[tuple[str, dict[str, float]]] = []
    failures: list[str] = []
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    summary_path = args.summary
    if summary_path is None and args.output is not None:
        summary_path = args.output.with_name(args.output.stem + ".summary.json")
    if summary_path is not None:
        if summary_path.suffix.lower() != ".json":
            raise ConfigError(f"--summary must be a .json file, got {summary_path}")
        check_output_location(summary_path, [args.pred, args.ref])

    def fail(name: str, message: str) -> None:  # printed once, as it happens
        failures.append(f"{name}: {message}")
        print(f"FAILED {name}: {message}", file=sys.stderr)

    for name, message in problems:
        fail(name, message)
    jobs = []
    for case in cases:
        pred_path = find_prediction(args.pred, case.case_id)
        if pred_path is None:
            fail(
                case.case_id,
                f"{args.pred}: no prediction {case.case_id}_seg.nii.gz or {case.case_id}.nii.gz",
            )
        else:
            jobs.append((case, pred_path))
    scored = _score_all(jobs, args.pred_labels, args.dice_level, args.workers, lesion_wise)
    for case, outcome in scored:
        if isinstance(outcome, str):
            fail(case.case_id, outcome)
            continue
        rows.append((case.case_id, {column(m, c): outcome[c][m] for m, c in pairs}))
    if not rows:
        raise InputError(args.pred, "no case could be scored")
    mean = {k: float(np.nanmean([r[k] for _, r in rows])) for k in columns}
    std = {k: float(np.nanstd([r[k] for _, r in rows])) for k in columns}
    width = max(len("case"), *(len(n) for n, _ in rows)) + 2
    if args.dice_level == "slice":
        print("Dice: 2D slice Dice (mean over the axial slices with tumour in ref or pred)")
    for cls in BRATS_CLASSES:
        print(
            f"{cls:>4s}: "
            + "  ".join(
                f"{m} {mean[column(m, cls)]:.4f} +- {std[column(m, cls)]:.4f}" for m in _SHORT
            )
        )
    if lesion_wise is not None:
        print(
            f"lesion-wise (BraTS 2023; min lesion {lesion_wise['min_lesion_voxels']} voxels, "
            f"dilation {lesion_wise['dilation']}, HD95 penalty {lesion_wise['hd95_penalty']:g} "
            f"mm, NSD at {lesion_wise['nsd_tolerance']:g} mm):"
        )
        for cls in LESION_REGIONS:
            counts = "  ".join(
                f"{m[6:]} {int(sum(r[column(m, cls)] for _, r in rows))}"
                for m in ("LesionTP", "LesionFP", "LesionFN")
            )
            print(
                f"{cls:>4s}: "
                + "  ".join(
                    f"{m} {mean[column(m, cls)]:.4f} +- {std[column(m, cls)]:.4f}"
                    for m in ("LesionDice", "LesionHD95", "NSD")
                )
                + f"  (lesions: {counts})"
            )
    ci = None
    if args.bootstrap > 0:
        from fuse4seg.metrics.lesionwise import bootstrap_mean_ci

        low, high = bootstrap_mean_ci(
            np.array([[r[k] for k in columns] for _, r in rows]), args.bootstrap, args.seed
        )
        ci = {k: (float(lo), float(hi)) for k, lo, hi in zip(columns, low, high, strict=True)}
        shown = [k for k in columns if not k.startswith(("LesionTP", "LesionFP", "LesionFN"))]
        print(
            f"95% CI of the mean (percentile bootstrap, {args.bootstrap} resamples, seed "
            f"{args.seed}, {len(rows)} case(s)):"
        )
        for cls in BRATS_CLASSES:
            items = [k for k in shown if k.endswith(f"_{cls}")]
            if items:
                print(
                    f"{cls:>4s}: "
                    + "  ".join(
                        f"{k[: -len(cls) - 1]} [{ci[k][0]:.4f}, {ci[k][1]:.4f}]" for k in items
                    )
                )
    print("case".ljust(width) + "".join(column("Dice", c).rjust(10) for c in BRATS_CLASSES))
    for name, r in rows:
        print(
            name.ljust(width)
            + "".join(f"{r[column('Dice', c)]:.4f}".rjust(10) for c in BRATS_CLASSES)
        )
    if args.output is not None:
        with atomic_path(args.output) as tmp, tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["case", *columns])
            for name, r in [*rows, ("mean", mean)]:
                w.writerow([name] + ["nan" if math.isnan(r[k]) else repr(r[k]) for k in columns])
        print(f"wrote {args.output}")
    if summary_path is not None:
        summary = _summary(rows, columns, mean, std, failures, args)
        if ci is not None:
            summary["ci95"] = {k: [_clean(lo), _clean(hi)] for k, (lo, hi) in ci.items()}
        if lesion_wise is not None:
            summary["settings"]["lesion_wise"] = {
                **lesion_wise,
                "rules": "BraTS 2023 (rachitsaluja/BraTS-2023-Metrics); see docs/metrics.md",
            }
        summary["settings"]["bootstrap"] = {
            "resamples": args.bootstrap,
            "seed": args.seed,
            "level": 0.95,
            "method": "percentile CI of the mean over cases",
        }
        save_json_atomic(summary, summary_path)
        print(f"wrote {summary_path}")
    print(f"{len(rows)} case(s) scored, {len(failures)} failed")
    return 2 if failures else 0


def _lesion_wise_options(args: argparse.Namespace) -> dict | None:
    """The lesion-wise keyword arguments of ``score_case`` (None without ``--lesion-wise``).

    Raises:
        ConfigError: a negative size, dilation or penalty, a tolerance <= 0.
    """
    if not args.lesion_wise:
        return None
    if args.min_lesion_voxels < 0:
        raise ConfigError(f"--min-lesion-voxels must be >= 0, got {args.min_lesion_voxels}")
    if args.dilation < 0:
        raise ConfigError(f"--dilation must be >= 0 iterations, got {args.dilation}")
    if not args.hd95_penalty >= 0:
        raise ConfigError(f"--hd95-penalty must be >= 0 mm, got {args.hd95_penalty}")
    if not args.nsd_tolerance > 0:
        raise ConfigError(f"--nsd-tolerance must be > 0 mm, got {args.nsd_tolerance}")
    return {
        "min_lesion_voxels": args.min_lesion_voxels,
        "dilation": args.dilation,
        "hd95_penalty": args.hd95_penalty,
        "nsd_tolerance": args.nsd_tolerance,
    }


def _clean(v: float) -> float | None:
    return None if math.isnan(v) else v


def _score_one(job: tuple) -> dict | str:
    """``score_case`` for a worker: the scores, or the one-line error as a string."""
    case, pred_path, pred_labels, dice_level, lesion_wise = job
    try:
        return score_case(case, pred_path, pred_labels, dice_level, lesion_wise)
    except Fuse4SegError as exc:
        return str(exc)


def _score_all(
    jobs: list, pred_labels: str, dice_level: str, workers: int, lesion_wise: dict | None = None
):
    """``(case, scores | error message)`` in the order of ``jobs``; ``workers`` processes."""
    args = [(case, path, pred_labels, dice_level, lesion_wise) for case, path in jobs]
    if workers == 1 or len(args) < 2:
        yield from ((a[0], _score_one(a)) for a in args)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(workers, len(args))) as pool:
        yield from zip((a[0] for a in args), pool.map(_score_one, args), strict=True)


def _summary(rows, columns, mean, std, failures, args) -> dict:
    """nnU-Net-style summary: per case, mean and sd of every column, failures, settings."""

    def clean(v: float) -> float | None:
        return None if math.isnan(v) else v

    return {
        "metric_per_case": [
            {"case": name, "metrics": {k: clean(r[k]) for k in columns}} for name, r in rows
        ],
        "mean": {k: clean(mean[k]) for k in columns},
        "std": {k: clean(std[k]) for k in columns},
        "cases_scored": len(rows),
        "failures": failures,
        "settings": {
            "pred": str(args.pred),
            "ref": str(args.ref),
            "pred_labels": args.pred_labels,
            "dice_level": args.dice_level,
            "hd95_when_one_mask_empty": "volume diagonal (mm); 0 when both are empty",
        },
    }
