"""Cost of one bi-level cycle (K follower steps + 1 leader step) vs K + 1 plain follower steps.

Both run on the same batch ``(B, M, S, S)`` with the same follower; the bi-level cycle also
splits the batch by patient (D_tr / D_val, half each), runs the frozen leader once on D_tr
and makes a leader step (leader + frozen follower forward/backward) on D_val.

    python benchmarks/bilevel_cost.py --preset tiny --size 64 --batch 8 -k 3 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from fuse4seg.losses import DiceCELoss
from fuse4seg.models import create_fusion_net, create_seg_net
from fuse4seg.train import bilevel
from fuse4seg.train.bilevel import LossWeights, TrainState
from fuse4seg.train.ema import EMA


def make_state(preset: str, k: int, modalities: int) -> TrainState:
    torch.manual_seed(0)
    leader = create_fusion_net(preset, modalities)
    follower = create_seg_net(preset, 1)
    return TrainState(
        follower=follower,
        opt_follower=torch.optim.AdamW(follower.parameters(), lr=1e-4),
        seg_criterion=DiceCELoss(4),
        leader=leader,
        opt_leader=torch.optim.AdamW(leader.parameters(), lr=1e-4),
        ema=EMA(leader, 0.99),
        weights=LossWeights(1.0, 5.0, 0.05),
        inner_steps=k,
    )


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, oneDNN kernels)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "base", "paper"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("-k", "--inner-steps", type=int, default=3)
    parser.add_argument("--modalities", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    b, m, s = args.batch, args.modalities, args.size
    x = torch.rand(b, m, s, s, generator=g)
    y = torch.randint(0, 4, (b, s, s), generator=g)
    ids = [f"p{i * 2 // b}" for i in range(b)]  # two patients, half the batch each
    state = make_state(args.preset, args.inner_steps, m)

    cycle = timed(lambda: bilevel.bilevel_cycle(state, x, y, ids), args.repeats)
    x_avg = bilevel.modality_mean(x)

    def plain() -> None:
        for _ in range(args.inner_steps + 1):
            bilevel.follower_step(state, x_avg, y)

    plain_t = timed(plain, args.repeats)
    print(
        f"preset {args.preset}, batch {b} x {m} x {s} x {s}, K = {args.inner_steps}, "
        f"{args.threads} thread(s), torch {torch.__version__}"
    )
    print(f"bi-level cycle (K follower steps on D_tr + 1 leader step on D_val): {cycle:.3f} s")
    print(
        f"K + 1 = {args.inner_steps + 1} plain follower steps on the whole batch:   {plain_t:.3f} s"
    )
    print(f"ratio bi-level / plain: {cycle / plain_t:.2f}")


if __name__ == "__main__":
    main()
