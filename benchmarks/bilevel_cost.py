"""Cost of one bi-level cycle (K follower steps + 1 leader step) vs K + 1 plain follower steps.

Both run on the same batch ``(B, M, S, S)`` with the same follower; the bi-level cycle also
splits the batch by patient (D_tr / D_val, half each), runs the frozen leader once on D_tr
and makes a leader step (leader + frozen follower forward/backward) on D_val.

    python benchmarks/bilevel_cost.py --preset tiny --size 64 --batch 8 -k 3 --threads 2
    python benchmarks/bilevel_cost.py --preset paper --size 240 --batch 8 --device cuda --amp bf16
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from fuse4seg.device import resolve_device
from fuse4seg.losses import DiceCELoss
from fuse4seg.models import create_fusion_net, create_seg_net
from fuse4seg.train import bilevel
from fuse4seg.train.bilevel import LossWeights, TrainState
from fuse4seg.train.ema import EMA


def make_state(
    preset: str, k: int, modalities: int, device: torch.device, amp: torch.dtype | None
) -> TrainState:
    torch.manual_seed(0)
    leader = create_fusion_net(preset, modalities).to(device)
    follower = create_seg_net(preset, 1).to(device)
    return TrainState(
        follower=follower,
        opt_follower=torch.optim.AdamW(follower.parameters(), lr=1e-4),
        seg_criterion=DiceCELoss(4),
        leader=leader,
        opt_leader=torch.optim.AdamW(leader.parameters(), lr=1e-4),
        ema=EMA(leader, 0.99),
        weights=LossWeights(1.0, 5.0, 0.05),
        inner_steps=k,
        amp_dtype=amp,
    )


def timed(fn, repeats: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()  # warm-up (allocator, oneDNN / cuDNN kernels)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
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
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]

    g = torch.Generator().manual_seed(0)
    b, m, s = args.batch, args.modalities, args.size
    x = torch.rand(b, m, s, s, generator=g).to(device)
    y = torch.randint(0, 4, (b, s, s), generator=g).to(device)
    ids = [f"p{i * 2 // b}" for i in range(b)]  # two patients, half the batch each
    state = make_state(args.preset, args.inner_steps, m, device, amp)

    cycle = timed(lambda: bilevel.bilevel_cycle(state, x, y, ids), args.repeats, device)
    x_avg = bilevel.modality_mean(x)

    def plain() -> None:
        for _ in range(args.inner_steps + 1):
            bilevel.follower_step(state, x_avg, y)

    plain_t = timed(plain, args.repeats, device)
    where = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} thread(s)"
    )
    print(
        f"preset {args.preset}, batch {b} x {m} x {s} x {s}, K = {args.inner_steps}, "
        f"{where}, amp {args.amp}, torch {torch.__version__}"
    )
    print(f"bi-level cycle (K follower steps on D_tr + 1 leader step on D_val): {cycle:.3f} s")
    print(
        f"K + 1 = {args.inner_steps + 1} plain follower steps on the whole batch:   {plain_t:.3f} s"
    )
    print(f"ratio bi-level / plain: {cycle / plain_t:.2f}")


if __name__ == "__main__":
    main()
