"""``fuse4seg export``: BraTS-Fuse PNG slices, or an nnU-Net v2 raw dataset.

Sub-commands::

    fuse4seg export brats-fuse -i BRATS_DIR|PREP_DIR -o OUT [-m MODEL] [--rule RULE ...]
    fuse4seg export nnunet -d BRATS_DIR|PREP_DIR -o nnUNet_raw/DatasetXXX_Name [-m MODEL|--rule R]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fuse4seg.errors import ConfigError

__all__ = ["HELP", "add_arguments", "run"]

HELP = "export BraTS-Fuse PNGs or an nnU-Net raw dataset"

_RULES = ("average", "max", "laplacian", "dwt", "pca")
_MODALITIES = ("t1", "t1ce", "t2", "flair")
_OVERWRITE_HELP = "write into a non-empty output folder, replacing files of the same name "
_OVERWRITE_HELP += "(default: refuse a non-empty folder)"


def _log(message: str) -> None:
    """Progress on stdout, ``FAILED`` lines on stderr (like every batch command)."""
    print(message, file=sys.stderr if message.startswith("FAILED") else sys.stdout, flush=True)


def _claim_output(args: argparse.Namespace, source: Path) -> None:
    """The output policy (:mod:`fuse4seg.io.output_policy`): never inside or holding an
    input, and a non-empty folder only with --overwrite."""
    from fuse4seg.io.output_policy import check_output_location, claim_output_folder

    check_output_location(args.output, [source, args.model], replaces_contents=True)
    claim_output_folder(args.output, args.overwrite, what="its files", create=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="export_command", metavar="WHAT", required=True)

    bf = sub.add_parser(
        "brats-fuse",
        help="per case: axial PNG slices of modalities, ground truth and fused combinations",
        description="Write the BraTS-Fuse benchmark set: per case, 8-bit PNG slices of each "
        "modality, the ground truth (colour map and label values) and fused images. A model "
        "fuses only its own modality combination; --rule fuses every 2-, 3- and 4-modality "
        "combination (the full BraTS-Fuse set).",
    )
    bf.add_argument(
        "-i",
        "--input",
        required=True,
        type=Path,
        help="BraTS case folder, folder of cases, or a `fuse4seg prepare` store",
    )
    bf.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    bf.add_argument("-m", "--model", type=Path, help="trained fuse4seg model.pt")
    bf.add_argument(
        "--rule",
        nargs="+",
        choices=_RULES,
        default=[],
        help="classical fusion rule(s), each applied to every combination",
    )
    bf.add_argument(
        "--modalities",
        nargs="+",
        choices=_MODALITIES,
        help="modalities to export (default: all four, or the store's)",
    )
    bf.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=[2, 3, 4],
        help="combination sizes for rules (default: 2 3 4)",
    )
    bf.add_argument(
        "--slices",
        choices=("all", "brain", "tumour"),
        default="brain",
        help="axial slices to write: all, brain (non-empty, default) or tumour",
    )
    bf.add_argument(
        "--step",
        type=int,
        default=1,
        help="keep every STEP-th selected slice (default 1: all of them)",
    )
    bf.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N] or mps")
    bf.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)

    nn = sub.add_parser(
        "nnunet",
        help="nnU-Net v2 raw dataset (stacked modalities, or the fused channel with -m/--rule)",
        description="Write an nnU-Net v2 raw dataset (imagesTr/labelsTr/imagesTs, "
        "dataset.json). Without -m/--rule the M modalities are stacked as channels; with "
        "them the single fused channel is written (fusion applied slice-wise).",
    )
    nn.add_argument(
        "-i",
        "--input",
        "-d",
        "--data",
        dest="data",
        required=True,
        type=Path,
        help="BraTS case folder, folder of cases, or a `fuse4seg prepare` store "
        "(-d/--data: older spelling)",
    )
    nn.add_argument(
        "-o", "--output", required=True, type=Path, help="nnUNet_raw/DatasetXXX_Name (3-digit id)"
    )
    how = nn.add_mutually_exclusive_group()
    how.add_argument("-m", "--model", type=Path, help="trained fuse4seg model.pt (fused channel)")
    how.add_argument("--rule", choices=_RULES, help="classical rule for the fused channel")
    nn.add_argument(
        "--modalities",
        nargs="+",
        choices=_MODALITIES,
        help="modalities (default: the model's, else all four / the store's)",
    )
    nn.add_argument(
        "--labels",
        choices=("regions", "labels"),
        default="regions",
        help="regions (default): nnU-Net's BraTS convention, ED=1 NCR=2 ET=3 with "
        "region training; labels: plain canonical labels NCR=1 ED=2 ET=3",
    )
    nn.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N] or mps")
    nn.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)


def _normaliser(model):
    from fuse4seg.benchmark.fusers import raw_normaliser

    return raw_normaliser(model)


def _model_fuser(path: Path, device: str, source: Path):
    from fuse4seg.benchmark.fusers import model_slice_fuser
    from fuse4seg.benchmark.volumes import is_prepared_store
    from fuse4seg.device import resolve_device

    # a prepared store's slices are already at the model's training resolution
    return model_slice_fuser(path, resolve_device(device), rescale=not is_prepared_store(source))


def _args_info(args: argparse.Namespace) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def _run_brats_fuse(args: argparse.Namespace) -> int:
    from fuse4seg.benchmark.export_brats_fuse import export_brats_fuse
    from fuse4seg.benchmark.fusers import rule_slice_fuser

    if args.model is None and not args.rule:
        raise ConfigError("give a model (-m MODEL) and/or classical rules (--rule ...)")
    _claim_output(args, args.input)
    fusers, model = [], None
    modalities = args.modalities
    if args.model is not None:
        fuser, model = _model_fuser(args.model, args.device, args.input)
        fusers.append(fuser)
        if modalities is None and not args.rule:
            modalities = list(fuser.modalities)
    fusers.extend(rule_slice_fuser(r) for r in dict.fromkeys(args.rule))
    result = export_brats_fuse(
        args.input,
        args.output,
        fusers,
        _normaliser(model),
        modalities=modalities,
        sizes=args.sizes,
        slices=args.slices,
        step=args.step,
        extra_info={"arguments": _args_info(args)},
        log=_log,
    )
    print(f"{len(result.cases)} cases written to {args.output}, {len(result.failed)} failed")
    if result.failed:
        print("failed: " + ", ".join(result.failed), file=sys.stderr)
        return 2
    return 0


def _run_nnunet(args: argparse.Namespace) -> int:
    from fuse4seg.benchmark.export_nnunet import export_nnunet
    from fuse4seg.benchmark.fusers import rule_slice_fuser, volume_fuser

    _claim_output(args, args.data)
    fuser = model = None
    modalities = args.modalities
    if args.model is not None:
        fuser, model = _model_fuser(args.model, args.device, args.data)
        if modalities is None:
            modalities = list(fuser.modalities)
    elif args.rule is not None:
        fuser = rule_slice_fuser(args.rule)
    vol_fuser = None if fuser is None else volume_fuser(fuser, _normaliser(model))
    result = export_nnunet(
        args.data,
        args.output,
        modalities=modalities,
        fuser=vol_fuser,
        fused_name="fused" if fuser is None else f"fused_{fuser.name}",
        label_mode=args.labels,
        extra_info={"arguments": _args_info(args)},
        log=_log,
    )
    print(
        f"{len(result.training)} training and {len(result.test)} test cases written to "
        f"{args.output}, {len(result.failed)} failed"
    )
    if result.failed:
        print("failed: " + ", ".join(result.failed), file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> int:
    if args.export_command == "brats-fuse":
        return _run_brats_fuse(args)
    return _run_nnunet(args)
