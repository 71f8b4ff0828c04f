"""Does the semantic gradient point the right way, and does it generalise?

For a trained Fuse4Seg run (``last.pt``), the follower is frozen and a fresh copy of the
leader takes ``--steps`` optimiser steps on ``L_seg`` alone (no L_decomp / L_grad / L_recon)
on one batch of patients (A). Reported: ``L_seg`` on batch A and on a batch of *other*
patients (B) before and after. A falls and B falls too: the leader learns something a
follower can use on new patients; A falls but B rises: the leader exploits the frozen
follower on the patients it sees (adversarial, not transferable).

    python benchmarks/leader_step_check.py RUN_DIR PREP_DIR --steps 10 --lr 1e-3 --trials 4
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import torch

from fuse4seg.data.datasets import SliceDataset
from fuse4seg.train.bilevel import frozen
from fuse4seg.train.trainer import collate_slices
from leader_gradients import load_run  # benchmarks/ (run as python benchmarks/...)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("prep_dir")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--trials", type=int, default=4, help="pairs of patient batches")
    parser.add_argument("--slices", type=int, default=8, help="slices per batch")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    _, store, leader0, follower, criterion = load_run(args.run_dir, args.prep_dir)
    data = SliceDataset(store, "train", augment=False)
    cases = np.asarray(data.case_ids_per_item)
    tumour = np.asarray(getattr(data, "is_tumour", np.ones(len(cases), bool)), bool)
    patients = sorted(set(cases.tolist()))

    def batch(pats):
        idx = np.flatnonzero(np.isin(cases, pats) & tumour)
        pick = rng.choice(idx, size=min(args.slices, len(idx)), replace=False)
        x, y, _ = collate_slices([data[int(i)] for i in pick])
        return x, y

    def seg(leader, x, y) -> float:
        with torch.no_grad(), frozen(leader), frozen(follower):
            return float(criterion(follower(leader(x).fused), y))

    rows = []
    for _ in range(args.trials):
        order = rng.permutation(len(patients))
        half = max(1, len(patients) // 2)
        a = [patients[i] for i in order[:half]]
        b = [patients[i] for i in order[half:]]
        xa, ya = batch(a)
        xb, yb = batch(b)
        leader = copy.deepcopy(leader0)
        opt = torch.optim.AdamW(leader.parameters(), lr=args.lr)
        before = (seg(leader, xa, ya), seg(leader, xb, yb))
        leader.train()
        for _ in range(args.steps):
            with frozen(follower):
                loss = criterion(follower(leader(xa).fused), ya)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        after = (seg(leader, xa, ya), seg(leader, xb, yb))
        rows.append({"A_before": before[0], "A_after": after[0],
                     "B_before": before[1], "B_after": after[1]})  # fmt: skip
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print(json.dumps({"steps": args.steps, "lr": args.lr, "mean": mean, "trials": rows}))


if __name__ == "__main__":
    main()
