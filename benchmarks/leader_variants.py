"""One row of the leader diagnosis: train a method / leader variant on a prepared store and
score it on the store's test split.

Prints (and appends to ``--results``) one JSON line: per-class 3D Dice (NCR, ED, ET, mean) on
the test cases, the training time, and the class contrast of the follower's input image
(``fuse4seg.train.leader_view.class_contrast``: class mean minus healthy-brain mean, in sd of
the brain's intensities; for ``average`` the modality mean). Any ``TrainConfig`` key can be set
with ``--set key=value`` (YAML values), e.g. the fast protocol of docs/benchmarks.md:

    fuse4seg prepare -i ../shared/data/brats -o store60 --scale 0.25 --split 0.7 0 0.3
    python benchmarks/leader_variants.py store60 runs/e1 --set warmup_epochs=10 \
        rollout_epochs=30 steps_per_epoch=25 val_max_cases=0 \
        "fusion_overrides={transfer_hidden: 16, output_norm: clamp}"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from fuse4seg.data.store import PreparedStore
from fuse4seg.models.model_file import load_model_file
from fuse4seg.train.config import make_config
from fuse4seg.train.evaluate import LABEL_REGIONS, dice_per_label, predict_volume
from fuse4seg.train.leader_view import class_contrast
from fuse4seg.train.trainer import run_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="prepared store (its test split is scored)")
    parser.add_argument("run_dir", help="new run folder")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--method", default="fuse4seg")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=None, help="JSON-lines file to append the row to")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    cfg = make_config(args.preset, method=args.method, **overrides)

    t0 = time.perf_counter()
    result = run_training(cfg, args.store, args.run_dir, device="cpu", progress=False)
    seconds = time.perf_counter() - t0
    model = load_model_file(Path(args.run_dir) / "model.pt")
    store = PreparedStore(args.store)
    dice_rows, contrast_rows = [], []
    for cid in store.case_ids("test"):
        image = np.asarray(store.image(cid), dtype=np.float32)  # (D, M, H, W)
        labels = np.asarray(store.label(cid))
        pred, fused = predict_volume(model, image, "cpu", 32, return_fused=True)
        dice_rows.append(dice_per_label(pred, labels))
        if fused is not None:  # x_f, or x_avg for `average` (the model's rule)
            contrast_rows.append(class_contrast(fused, labels, image.max(axis=1) > 0))
    dice = {k: float(np.mean([r[k] for r in dice_rows])) for k in LABEL_REGIONS}
    dice["mean"] = float(np.mean(list(dice.values())))
    row = {
        "run": str(args.run_dir),
        "method": args.method,
        "set": args.set,
        "seconds": round(seconds),
        "steps": result.steps,
        "dice": {k: round(v, 4) for k, v in dice.items()},
    }
    if contrast_rows:
        row["contrast_vs_healthy_sd"] = {
            k: round(float(np.nanmean([r[f"{k}_vs_healthy"] for r in contrast_rows])), 2)
            for k in LABEL_REGIONS
        }
    line = json.dumps(row)
    print(line)
    if args.results:
        with open(args.results, "a") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
