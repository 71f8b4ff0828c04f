"""Atomic writes and device selection."""

from __future__ import annotations

import json

import pytest
import torch

from fuse4seg.device import autocast_dtype, resolve_device
from fuse4seg.errors import ConfigError, InputError
from fuse4seg.io.atomic import TMP_PREFIX, atomic_path, save_json_atomic, save_torch_atomic


def test_atomic_path_renames_on_success_and_keeps_nii_gz_suffix(tmp_path):
    target = tmp_path / "sub" / "case_seg.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.name.startswith(TMP_PREFIX)
        assert tmp.name.endswith(".nii.gz")
        assert not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in target.parent.iterdir()] == ["case_seg.nii.gz"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_json_and_torch_round_trip(tmp_path):
    save_json_atomic({"a": 1, "b": [1, 2]}, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1, "b": [1, 2]}
    save_torch_atomic({"w": torch.arange(3)}, tmp_path / "x.pt")
    loaded = torch.load(tmp_path / "x.pt", weights_only=True)
    assert torch.equal(loaded["w"], torch.arange(3))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu-ish")


def test_autocast_dtype_is_none_on_cpu():
    assert autocast_dtype(torch.device("cpu"), True) is None
    assert autocast_dtype(torch.device("cpu"), False) is None


def test_input_error_message_names_the_file():
    err = InputError("/data/x_t1.nii.gz", "is 4D, expected a 3D volume")
    assert str(err) == "/data/x_t1.nii.gz: is 4D, expected a 3D volume"
    assert isinstance(err, ValueError)
