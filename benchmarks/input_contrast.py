"""How far apart the tumour classes lie in the follower's input image, per held-out case.

For each trained model (``model.pt``, or a run folder holding one) and each held-out case of its
fold, the model's fused image (for ``average``: the modality mean x_avg) is compared with x_avg
of the same case. Per class (NCR, ED, ET) two numbers, both on the brain's voxels:

* ``contrast``: class mean minus healthy-brain mean, in sd of the brain's intensities
  (``fuse4seg.train.leader_view.class_contrast``);
* ``d``: Fisher separation from healthy brain, ``(mu_c - mu_0)^2 / (var_c + var_0)`` (the
  quantity the ``sep`` anchor's loss ``1 / (1 + d)`` is made of).

    python benchmarks/input_contrast.py store120 --fold 0 runs/fuse4seg/fold0/seed0 ...

Prints one table row per model: the mean over cases for the model's image and for x_avg.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fuse4seg.data.store import PreparedStore
from fuse4seg.models.model_file import load_model_file
from fuse4seg.train.evaluate import predict_volume
from fuse4seg.train.leader_view import CLASS_NAMES, class_contrast

CLASSES = ("NCR", "ED", "ET")


def separation(image: np.ndarray, labels: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """Fisher separation of each tumour class from healthy brain; NaN for an absent class."""
    healthy = image[brain & (labels == 0)].astype(np.float64)
    out = {}
    for lab, name in CLASS_NAMES.items():
        if lab == 0:
            continue
        vals = image[labels == lab].astype(np.float64)
        if vals.size < 2 or healthy.size < 2:
            out[name] = float("nan")
            continue
        out[name] = float((vals.mean() - healthy.mean()) ** 2 / (vals.var() + healthy.var()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="prepared store with splits_final.json")
    parser.add_argument("models", nargs="+", help="model.pt files or run folders")
    parser.add_argument("--fold", type=int, required=True, help="fold whose held-out cases")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = PreparedStore(args.store)
    splits = json.loads((Path(args.store) / "splits_final.json").read_text())
    cases = splits[args.fold]["val"]
    print("| model | image | contrast NCR / ED / ET (sd) | d NCR / ED / ET |")
    print("|---|---|---|---|")
    for path in map(Path, args.models):
        model = load_model_file(path / "model.pt" if path.is_dir() else path)
        rows: dict[str, list[dict[str, float]]] = {"model": [], "x_avg": []}
        for cid in cases:
            image = np.asarray(store.image(cid), dtype=np.float32)  # (D, M, H, W)
            labels = np.asarray(store.label(cid))  # (D, H, W)
            brain = image.max(axis=1) > 0
            _, fused = predict_volume(model, image, "cpu", 32, return_fused=True)
            x_avg = image.mean(axis=1)
            for key, img in (("model", fused), ("x_avg", x_avg)):
                if img is None:
                    continue
                c = class_contrast(img, labels, brain)
                d = separation(img, labels, brain)
                rows[key].append(
                    {
                        **{f"c_{k}": c[f"{k}_vs_healthy"] for k in CLASSES},
                        **{f"d_{k}": d[k] for k in CLASSES},
                    }
                )
        for key, vals in rows.items():
            if not vals:
                continue
            mean = {k: float(np.nanmean([v[k] for v in vals])) for k in vals[0]}
            cs = " / ".join(f"{mean[f'c_{k}']:.2f}" for k in CLASSES)
            ds = " / ".join(f"{mean[f'd_{k}']:.2f}" for k in CLASSES)
            print(f"| {path} | {key} | {cs} | {ds} |")


if __name__ == "__main__":
    main()
