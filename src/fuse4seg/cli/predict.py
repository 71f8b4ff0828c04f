"""``fuse4seg predict``: segment and fuse BraTS volumes into NIfTI files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def run(args: argparse.Namespace) -> int:
    from fuse4seg.inference.predict_folder import FolderOptions, predict_folder

    options = FolderOptions(
        device=args.device,
        batch_size=args.batch_size,
        tta=args.tta,
        amp=not args.no_amp,
        save_probabilities=args.save_probabilities,
        overwrite=args.overwrite,
        naming=args.naming,
        fused_dtype=args.fused_dtype,
        fused_mask=not args.no_fused_mask,
        progress=not args.no_progress,
    )
    report = predict_folder(args.model, args.input, args.output, options, record=vars(args))
    print(report.summary("cases"), file=sys.stderr if report.failed else sys.stdout)
    return report.exit_code
