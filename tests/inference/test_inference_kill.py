"""A ``predict`` run killed midway leaves only complete outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fuse4seg.data.phantom import write_phantom_case


def _start(model: Path, cases: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "fuse4seg",
        "predict",
        "-m",
        str(model),
        "-i",
        str(cases),
        "-o",
        str(out),
        "--device",
        "cpu",
        "--tta",
        "--save-probabilities",
        "--no-progress",
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_first_case(proc: subprocess.Popen, out: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"predict ended before it could be killed: {proc.stderr.read().decode()}")
        if list(out.glob("*_seg.nii.gz")):
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no case finished in time")


def _check_outputs(out: Path, n_cases: int) -> int:
    finals = sorted(p for p in out.iterdir() if not p.name.startswith("."))
    for p in finals:
        if p.name.endswith(".nii.gz"):
            data = nib.load(p).get_fdata()  # raises on a truncated file
            assert np.isfinite(data).all()
    done = len(list(out.glob("*_seg.nii.gz")))
    assert 1 <= done < n_cases, "the run must be interrupted midway"
    # a seg is written last: every finished case has all its outputs
    for seg in out.glob("*_seg.nii.gz"):
        case = seg.name[: -len("_seg.nii.gz")]
        assert (out / f"{case}_fused.nii.gz").is_file() and (out / f"{case}_prob.nii.gz").is_file()
    return done


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_predict_leaves_complete_outputs(tmp_path, trained_model_file, sig):
    n_cases = 8
    cases = tmp_path / "cases"
    for i in range(n_cases):
        write_phantom_case(cases, i, shape=(64, 64, 32), seed=1)
    out = tmp_path / "out"
    proc = _start(trained_model_file, cases, out)
    _wait_for_first_case(proc, out)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    proc.stdout.close()
    proc.stderr.close()
    _check_outputs(out, n_cases)
    temporaries = [p.name for p in out.iterdir() if p.name.startswith(".")]
    if sig == signal.SIGTERM:
        assert proc.returncode == 143  # 128 + SIGTERM, temporary file removed
        assert temporaries == []
    else:  # SIGKILL cannot be caught: a leftover can only be a hidden .tmp-* file
        assert all(name.startswith(".tmp-") for name in temporaries)
