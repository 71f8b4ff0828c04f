"""Size of each term of L_upper on the leader: gradient norms of L_seg, alpha L_decomp,
beta L_grad, gamma L_recon (and info L_info) with respect to the fusion network's parameters.

Reads a Fuse4Seg run folder (``last.pt``: leader, follower and config) and its prepared store,
draws ``--batches`` training batches of the run's size (patient-level D_tr/D_val split as in
Algorithm 1) and reports, per term, the mean over batches of ``||grad_theta_f term||_2``
(weighted, as it enters the leader step) and its ratio to the L_seg gradient:

    python benchmarks/leader_gradients.py RUN_DIR PREP_DIR --batches 8
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from fuse4seg.data.datasets import SliceDataset
from fuse4seg.data.store import PreparedStore
from fuse4seg.losses import (
    DiceCELoss,
    decomposition_loss,
    gradient_loss,
    information_loss,
    reconstruction_loss,
)
from fuse4seg.train.bilevel import frozen
from fuse4seg.train.checkpoint import load_checkpoint
from fuse4seg.train.config import TrainConfig
from fuse4seg.train.methods import get_method
from fuse4seg.train.sampler import PatientBatchSampler, split_by_patient
from fuse4seg.train.trainer import build_networks, collate_slices


def grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def load_run(run_dir: str, prep_dir: str, checkpoint: str = "last.pt"):
    """``(config, store, leader, follower, criterion)`` of a Fuse4Seg run's checkpoint."""
    ckpt = load_checkpoint(f"{run_dir}/{checkpoint}")
    cfg = TrainConfig(**ckpt["config"])
    store = PreparedStore(prep_dir)
    leader, follower = build_networks(get_method(cfg.method), cfg, len(store.modalities))
    leader.load_state_dict(ckpt["leader"])
    follower.load_state_dict(ckpt["follower"])
    criterion = DiceCELoss(cfg.num_classes, class_weights=cfg.class_weights)
    return cfg, store, leader, follower, criterion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("prep_dir")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--checkpoint", default="last.pt")
    args = parser.parse_args()
    torch.manual_seed(0)

    cfg, store, leader, follower, criterion = load_run(args.run_dir, args.prep_dir, args.checkpoint)
    data = SliceDataset(store, "train", augment=False, tumour_fraction=cfg.tumour_fraction)
    sampler = PatientBatchSampler(
        data.case_ids_per_item, cfg.batch_size, cfg.patients_per_batch, seed=1,
        is_tumour=getattr(data, "is_tumour", None), tumour_fraction=cfg.tumour_fraction,
    )  # fmt: skip
    params = [p for p in leader.parameters() if p.requires_grad]
    weights = {"decomp": cfg.alpha, "grad": cfg.beta, "recon": cfg.gamma}
    if getattr(leader, "source_decoder", None) is not None:
        weights["info"] = cfg.info
    norms: dict[str, list[float]] = {k: [] for k in ("seg", *weights)}
    leader.train()
    for batch in sampler.epoch_batches(0)[: args.batches]:
        x, y, case_ids = collate_slices([data[i] for i in batch])
        _, val_idx = split_by_patient(list(case_ids), cfg.val_patient_fraction)
        x, y = x[val_idx], y[val_idx]
        with frozen(follower):
            out = leader(x)
            terms = {
                "seg": criterion(follower(out.fused), y),
                "decomp": weights["decomp"] * decomposition_loss(out.low, out.high),
                "grad": weights["grad"] * gradient_loss(out.fused, x),
                "recon": weights["recon"] * reconstruction_loss(out.fused, x),
            }
            if "info" in weights:
                decoded = leader.decode_sources(out.fused)
                terms["info"] = weights["info"] * information_loss(decoded, x)
            for name, term in terms.items():
                norms[name].append(grad_norm(term, params))
    seg = float(np.mean(norms["seg"]))
    report = {
        name: {"grad_norm": float(np.mean(v)), "ratio_to_seg": float(np.mean(v)) / seg}
        for name, v in norms.items()
    }
    report["weights"] = weights
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
