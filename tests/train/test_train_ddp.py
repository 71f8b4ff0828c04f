"""DDP with 2 CPU processes (gloo) launched by torch.distributed.run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch


def test_ddp_two_cpu_processes(tiny_store, tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(
        "warmup_epochs: 1\nrollout_epochs: 1\nsteps_per_epoch: 1\nbatch_size: 4\n"
        "inner_steps: 2\nval_max_cases: 1\naugment: false\nleader_pretrain: false\n"
    )
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "fuse4seg", "train", "-d", str(tiny_store), "-o", str(run), "--preset", "tiny",
        "--config", str(cfg), "--device", "cpu", "--threads", "1", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2
    # only rank 0 writes: one validation line per epoch, one summary line on stdout
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["type"] == "val" for r in records) == 2
    assert proc.stdout.count("fuse4seg finished") == 1
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["step"] == 1 + 3  # per process: 1 warm-up batch, 1 rollout cycle (K=2 + 1)
    assert not [p for p in run.iterdir() if p.name.startswith(".tmp-")]
