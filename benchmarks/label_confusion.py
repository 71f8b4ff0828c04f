"""Where each tumour class's voxels go: label confusion of trained 2D models on held-out cases.

For every model (a ``model.pt`` of any 2D method) and the held-out cases of fold F of a
``fuse4seg prepare --folds K`` store: the share of each reference class (NCR, ED, ET) predicted
as background / NCR / ED / ET, and the background voxels predicted as each tumour class (3D,
the store's resolution, no TTA). Used in docs/benchmarks.md (issue 13, point 13).

Run:
  .venv/bin/python benchmarks/label_confusion.py store120 --fold 0 \\
      P1/runs/average/fold0/seed0/model.pt P1/runs/fuse4seg/fold0/seed0/model.pt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from fuse4seg.data import PreparedStore
from fuse4seg.data.volume_store import select_modalities
from fuse4seg.inference.predictor import Predictor
from fuse4seg.models.model_file import load_model_file

NAMES = ("background", "NCR", "ED", "ET")


def confusion(model_path: str, store: PreparedStore) -> np.ndarray:
    """(4, 4) voxel counts, rows: reference class, columns: predicted class."""
    model = load_model_file(model_path, "cpu")
    predictor = Predictor(model, device="cpu")
    predictor.scale = 1.0  # store slices are already at the training resolution
    channels = select_modalities(store.modalities, model.modalities, "store")
    counts = np.zeros((4, 4), np.int64)
    for cid in store.case_ids("val"):
        image = np.asarray(store.image(cid), np.float32)  # (D, M, H, W)
        x = torch.from_numpy(np.clip(image[:, channels], 0.0, 1.0))
        _, prob = predictor.predict_slices(x)
        pred = prob.argmax(1).numpy()
        ref = np.asarray(store.label(cid))
        counts += np.bincount(ref.ravel() * 4 + pred.ravel(), minlength=16).reshape(4, 4)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", help="prepared store with cross-validation folds")
    ap.add_argument("models", nargs="+", help="model.pt files")
    ap.add_argument("--fold", type=int, default=0, help="fold whose held-out cases are used")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    store = PreparedStore(args.store).fold(args.fold)
    for path in args.models:
        counts = confusion(path, store)
        print(path)
        for i in range(1, 4):
            row = counts[i] / max(counts[i].sum(), 1)
            shares = "  ".join(f"{n} {v:.3f}" for n, v in zip(NAMES, row, strict=True))
            print(f"  reference {NAMES[i]:3s} ({counts[i].sum()} voxels) -> {shares}")
        wrong = "  ".join(f"{n} {v}" for n, v in zip(NAMES[1:], counts[0, 1:], strict=True))
        print(f"  background voxels predicted as: {wrong}")


if __name__ == "__main__":
    main()
