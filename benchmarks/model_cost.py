"""Cost of the Fuse4Seg networks: parameters, MFLOPs and forward+backward time.

For every preset of FusionNet (M modalities -> 1 image) and SegNet (1 input channel, 4
classes) prints the parameter count, forward MFLOPs per 240x240 slice (FlopCounterMode,
1 MAC = 2 FLOPs), and the forward (inference) and forward+backward wall time per slice on
CPU (and CUDA when available), then the ratio fusion cost / segmentation cost. Also times
the CPU-demo case: tiny preset, forward+backward on a (8, M, 96, 96) batch. "fwd CPU-s ms"
is the process CPU time (all threads) of the CPU forward pass, less sensitive to other load.

Usage:
    .venv/bin/python benchmarks/model_cost.py [--presets tiny base paper] [--modalities 2]
        [--size 240] [--batch 1] [--repeats 3] [--paper-repeats 1] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fuse4seg.models import (
    FusionNet,
    count_flops,
    count_parameters,
    create_fusion_net,
    create_seg_net,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(
    net: torch.nn.Module, shape: tuple[int, ...], repeats: int, device: torch.device
) -> float:
    """Median seconds of one forward+backward pass (after one warm-up pass)."""
    net = net.to(device).train()
    x = torch.rand(shape, device=device)
    times = []
    for i in range(repeats + 1):
        net.zero_grad(set_to_none=True)
        _sync(device)
        start = time.perf_counter()
        out = net(x)
        y = out.fused if isinstance(net, FusionNet) else out
        y.float().mean().backward()
        _sync(device)
        if i > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_forward(
    net: torch.nn.Module, shape: tuple[int, ...], repeats: int, device: torch.device
) -> tuple[float, float]:
    """Median (wall, process CPU) seconds of one inference forward pass (eval, no_grad;
    after one warm-up). CPU time (all threads) is less sensitive to other load."""
    net = net.to(device).eval()
    x = torch.rand(shape, device=device)
    times, cpu = [], []
    with torch.no_grad():
        for i in range(repeats + 1):
            _sync(device)
            start, c0 = time.perf_counter(), time.process_time()
            net(x)
            _sync(device)
            if i > 0:
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base", "paper"])
    parser.add_argument("--modalities", type=int, default=2, help="fusion inputs M (default 2)")
    parser.add_argument("--size", type=int, default=240, help="slice side (default 240)")
    parser.add_argument("--batch", type=int, default=1, help="slices per timed pass (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (default 3)")
    parser.add_argument("--paper-repeats", type=int, default=1, help="for 'paper' (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    m, s, b = args.modalities, args.size, args.batch
    print(
        f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, M = {m}, "
        f"slice {s}x{s}, batch {b}; FLOPs: forward, 1 MAC = 2 FLOPs"
    )
    header = f"{'net':<10}{'preset':<8}{'params':>12}{'MFLOPs/slice':>14}{'fwd CPU-s ms':>14}"
    header += "".join(f"{d.type + ' fwd ms':>12}{d.type + ' fwd+bwd ms':>16}" for d in devices)
    print(header)
    rows: dict[tuple[str, str], tuple[float, list[float]]] = {}
    for preset in args.presets:
        repeats = args.paper_repeats if preset == "paper" else args.repeats
        torch.manual_seed(0)
        nets = {
            "fusion": (create_fusion_net(preset, m), (b, m, s, s)),
            "seg": (create_seg_net(preset, in_channels=1), (b, 1, s, s)),
        }
        for name, (net, shape) in nets.items():
            mflops = count_flops(net, (1,) + shape[1:]) / 1e6
            fwd_cpu = [time_forward(net, shape, repeats, d) for d in devices]
            fwd = [wall * 1000 / b for wall, _ in fwd_cpu]
            cpu_ms = fwd_cpu[0][1] * 1000 / b  # process CPU time of the CPU forward pass
            ms = [time_fwd_bwd(net, shape, repeats, d) * 1000 / b for d in devices]
            rows[(name, preset)] = (mflops, ms)
            line = f"{name:<10}{preset:<8}{count_parameters(net):>12,}{mflops:>14,.1f}"
            line += f"{cpu_ms:>14,.1f}"
            line += "".join(f"{f:>12,.1f}{t:>16,.1f}" for f, t in zip(fwd, ms, strict=True))
            print(line, flush=True)
    print("ratio fusion / segmentation cost (time: forward+backward):")
    for preset in args.presets:
        (ff, fms), (sf, sms) = rows[("fusion", preset)], rows[("seg", preset)]
        times = ", ".join(
            f"{d.type} time {a / c:.2f}" for d, a, c in zip(devices, fms, sms, strict=True)
        )
        print(f"  {preset:<6} FLOPs {ff / sf:.2f}, {times}")
    if "tiny" in args.presets:
        torch.manual_seed(0)
        fusion, seg = create_fusion_net("tiny", m), create_seg_net("tiny", in_channels=1)
        for d in devices:
            tf = time_fwd_bwd(fusion, (8, m, 96, 96), args.repeats, d) * 1000
            ts = time_fwd_bwd(seg, (8, 1, 96, 96), args.repeats, d) * 1000
            print(
                f"tiny fwd+bwd on (8, {m}, 96, 96), {d.type}: fusion {tf:.1f} ms, "
                f"segmentation (8, 1, 96, 96) {ts:.1f} ms"
            )


if __name__ == "__main__":
    main()
