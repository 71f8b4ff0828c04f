"""``fuse4seg fuse``: fuse co-registered image pairs (grey or pseudo-colour PET/SPECT)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from fuse4seg.errors import Fuse4SegError, InputError, InputWarning, OutputError

__all__ = ["HELP", "add_arguments", "run"]

HELP = "fuse image pairs (PNG/TIFF/NIfTI; colour PET/SPECT)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fuse4seg.fusion_rules import FUSION_RULES

    parser.add_argument(
        "-a",
        "--source-a",
        "--dir-a",
        dest="dir_a",
        required=True,
        type=Path,
        help="folder of first sources (e.g. MRI); model modality 0",
    )
    parser.add_argument(
        "-b",
        "--source-b",
        "--dir-b",
        dest="dir_b",
        required=True,
        type=Path,
        help="folder of second sources (e.g. PET/SPECT/CT); paired with -a by "
        "file name without suffix; model modality 1",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        help="output folder; writes <name>.png per pair and fuse_args.json",
    )
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "-m",
        "--model",
        type=Path,
        help="trained fuse4seg model.pt with a fused image and 2 modalities",
    )
    how.add_argument(
        "--rule", choices=sorted(FUSION_RULES), help="classical fusion rule instead of a model"
    )
    parser.add_argument(
        "--colour",
        choices=("preserve-chroma", "clip"),
        default="preserve-chroma",
        help="colour sources: keep the source's Cb/Cr exactly by limiting Y "
        "(default) or clip R,G,B like OpenCV/CDDFuse",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default), cpu, cuda, cuda:N or mps; only used with -m",
    )
    parser.add_argument(
        "--save-attention",
        action="store_true",
        help="with a fuse4seg-v1 model: also write its cross-attention maps next to each "
        "fused image (<name>_attention_head<k>.png, _attention_mean.png, _attention_overlay.png)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (default: skip them)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _AttentionWriter:
    """Saves a v1 model's attention maps next to the pair's output (``target`` set per pair)."""

    def __init__(self) -> None:
        self.target: Path | None = None

    def __call__(self, attention, grid, fused) -> None:
        if self.target is None:  # the model check before the first pair
            return
        from fuse4seg.v1.attention_maps import save_attention_maps

        size = tuple(fused.shape[-2:])
        save_attention_maps(attention[:1], grid, self.target, size, fused[0, 0])


def _build_fuser(args: argparse.Namespace, attention: _AttentionWriter | None):
    from fuse4seg.errors import ConfigError
    from fuse4seg.inference.pair_fusion import model_fuser, rule_fuser

    if args.rule is not None:
        if attention is not None:
            raise ConfigError("--save-attention needs -m MODEL (a fuse4seg-v1 model), not --rule")
        return rule_fuser(args.rule)
    from fuse4seg.device import resolve_device
    from fuse4seg.models.model_file import load_model_file

    device = resolve_device(args.device)
    model = load_model_file(args.model, device)
    fuser = model_fuser(model, device, model_path=args.model, attention_sink=attention)
    mri = {"t1", "t1ce", "t2", "flair"}
    modalities = [str(m) for m in getattr(model, "modalities", ())]
    if modalities and set(modalities) <= mri:
        warnings.warn(
            f"{args.model}: a model trained on BraTS MRI sequences ({', '.join(modalities)}) "
            "fuses these pairs outside its training domain (MRI-PET/SPECT/CT pairs: train on "
            "such pairs, e.g. `fuse4seg benchmark fusion`, or use --rule)",
            InputWarning,
            stacklevel=2,
        )
    return fuser


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fuse4seg.inference.batch import BatchReport
    from fuse4seg.inference.pair_fusion import fuse_pair_files, pair_files
    from fuse4seg.io.atomic import save_json_atomic
    from fuse4seg.io.output_policy import check_output_location, open_item_folder

    check_output_location(args.output, [args.dir_a, args.dir_b, args.model])
    if args.output.exists() and not args.output.is_dir():
        raise InputError(args.output, "output exists and is not a folder")
    listing = pair_files(args.dir_a, args.dir_b)
    if not listing.pairs:
        raise InputError(args.dir_a, f"no file name in common with {args.dir_b}")
    attention = _AttentionWriter() if args.save_attention else None
    fuser = _build_fuser(args, attention)
    out_dir = open_item_folder(args.output)
    save_json_atomic(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        out_dir / "fuse_args.json",
    )
    report = BatchReport()
    for stem, message in listing.problems:
        report.fail(stem, message)
    bar = tqdm(listing.pairs, desc="fuse", unit="pair", disable=args.no_progress or None)
    for i, (stem, path_a, path_b) in enumerate(bar):
        out = out_dir / f"{stem}.png"
        if out.exists() and not args.overwrite:
            report.skip(stem, f"{out} exists (use --overwrite)")
            continue
        if attention is not None:
            attention.target = out
        try:
            fuse_pair_files(path_a, path_b, out, fuser, gamut=args.colour)
        except OutputError as exc:  # disk full / not writable: later pairs would fail too
            report.fail(stem, str(exc))
            print(f"stopped: {exc}; {len(listing.pairs) - i - 1} pair(s) not run", file=sys.stderr)
            break
        except Fuse4SegError as exc:
            report.fail(stem, str(exc))
            continue
        except MemoryError:
            report.fail(stem, f"{path_a}: out of memory (pair not fused)")
            continue
        report.done.append(stem)
    print(report.summary("pairs"), file=sys.stderr if report.failed else sys.stdout)
    return report.exit_code
