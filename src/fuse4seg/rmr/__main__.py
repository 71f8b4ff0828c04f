"""``python -m fuse4seg.rmr train ...`` -- RMR-Fusion on a store or on phantoms.

A thin argparse layer over :mod:`fuse4seg.rmr`; user errors print ``error: ...`` and exit 2.
``--phantom N`` replaces the prepared store by ``N`` in-memory phantom cases (quick demos).
Prediction on NIfTI volumes is ``fuse4seg predict -m RUN_DIR/model.pt`` and the robustness
benchmark ``fuse4seg benchmark robustness -m RUN_DIR/model.pt`` (every method).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fuse4seg.errors import Fuse4SegError, InputError

__all__ = ["main", "build_parser"]


def _store(args: argparse.Namespace):
    if args.phantom:
        from fuse4seg.data.phantom import phantom_case_id
        from fuse4seg.data.volume_store import phantom_store

        n = int(args.phantom)
        if n < 1:
            raise InputError(None, f"--phantom needs at least 1 case, got {n}")
        ids = [phantom_case_id(i) for i in range(n)]
        # the last quarter (at least one case) is the test split; all cases train (demo only)
        splits = {"train": ids, "val": [], "test": ids[-max(1, n // 4) :]}
        return phantom_store(n, tuple(args.phantom_shape), seed=args.seed, splits=splits)
    if args.prep_dir is None:
        raise InputError(None, "give --prep-dir (a `fuse4seg prepare` folder) or --phantom N")
    from fuse4seg.data import PreparedStore

    return PreparedStore(args.prep_dir)


def _cmd_train(args: argparse.Namespace) -> int:
    from fuse4seg.rmr.train import load_train_config, train_rmr_on_store

    overrides = {}
    keys = ("preset", "seg_head", "stage1_steps", "stage2_steps", "batch_size", "seed", "lr")
    for key in keys:
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    if args.modalities:
        overrides["modalities"] = tuple(args.modalities)
        overrides.setdefault("visual_target", args.modalities[-1])
    cfg = load_train_config(args.config, **overrides)
    t0 = time.perf_counter()
    out = train_rmr_on_store(
        _store(args),
        args.run_dir,
        cfg,
        device=args.device,
        resume=args.resume,
        max_steps=args.max_steps,
        where=str(args.prep_dir or "phantom"),
    )
    print(f"model: {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prep-dir", type=Path, help="folder written by `fuse4seg prepare`")
    p.add_argument("--phantom", type=int, metavar="N", help="use N in-memory phantom cases")
    p.add_argument(
        "--phantom-shape", type=int, nargs=3, default=(48, 48, 32), metavar=("X", "Y", "Z")
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fuse4seg.rmr", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train stage 1 (robust AE) and stage 2 (fusion + seg)")
    _data_args(t)
    t.add_argument("--run-dir", type=Path, required=True, help="output folder")
    t.add_argument("--config", type=Path, help="YAML with RMRTrainConfig keys")
    t.add_argument("--preset", choices=("tiny", "base", "paper"), help="network size")
    t.add_argument("--seg-head", choices=("swinunetr", "unet", "segresnet", "unetr", "dynunet"))
    t.add_argument("--modalities", nargs="+", help="input modalities (default t1 flair)")
    t.add_argument("--stage1-steps", type=int)
    t.add_argument("--stage2-steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="Adam learning rate (default 1e-4, the paper's)")
    t.add_argument("--max-steps", type=int, help="cap on the steps of each stage")
    t.add_argument("--resume", action="store_true", help="continue from run-dir/last.pt")
    t.set_defaults(func=_cmd_train)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Fuse4SegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
