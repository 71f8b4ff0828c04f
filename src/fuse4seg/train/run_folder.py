"""The run folder (RUN_DIR) of ``fuse4seg train``: one layout and one set of writers for every
method (the 2D trainer, ``fuse4seg-v1``, ``rmr3d``).

Layout::

    config.yaml     the resolved configuration of the method (TrainConfig, V1Config, RMR...)
    run_info.json   fuse4seg version, git hash, command, method, device, world size, torch
                    version, resumed, start time, plus the runner's entries (prep_dir,
                    manifest hash, fold, ...)
    metrics.jsonl   one JSON object per log line (loss terms, validation scores)
    last.pt         checkpoint to resume from (``torch.load(weights_only=True)``)
    best.pt         checkpoint of the best validation score (2D trainer)
    model.pt        the trained model (docs/architecture.md, ``models.model_file``)
    curves.png      training curves (2D trainer)
    tensorboard/    TensorBoard logs (``--tensorboard``)

A method may add files of its own (``rmr3d``: ``stage1.pt``, the trained autoencoder); they
are listed in :data:`RUN_FILES`, which is what ``--overwrite`` removes. Every file is
written atomically (:mod:`fuse4seg.io.atomic`) except ``metrics.jsonl``, which is appended
to line by line and cut back to the checkpoint's step on resume (:meth:`RunFolder.
truncate_metrics`; a torn last line goes too).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from fuse4seg.errors import InputError
from fuse4seg.io.atomic import atomic_path, save_json_atomic
from fuse4seg.train.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["RunFolder", "RUN_FILES", "git_hash", "manifest_sha256"]

#: every file a run writes into RUN_DIR (``--overwrite`` removes only these)
RUN_FILES: tuple[str, ...] = (
    "config.yaml",
    "run_info.json",
    "metrics.jsonl",
    "curves.png",
    "last.pt",
    "best.pt",
    "model.pt",
    "tensorboard",
    "stage1.pt",  # rmr3d: the trained autoencoder of stage 1
)


def git_hash() -> str | None:
    """The commit of the fuse4seg checkout this code runs from (None outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def manifest_sha256(prep_dir: str | Path) -> str | None:
    """SHA-256 of a prepared store's ``manifest.json`` (None without one), for run_info."""
    manifest = Path(prep_dir) / "manifest.json"
    if not manifest.is_file():
        return None
    return hashlib.sha256(manifest.read_bytes()).hexdigest()


class RunFolder:
    """The files of one training run in ``path`` (see the module docstring).

    Args:
        path: the run folder (created by :meth:`create`).
    """

    CONFIG = "config.yaml"
    RUN_INFO = "run_info.json"
    METRICS = "metrics.jsonl"
    CURVES = "curves.png"
    LAST = "last.pt"
    BEST = "best.pt"
    MODEL = "model.pt"
    TENSORBOARD = "tensorboard"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def run_info(self) -> Path:
        return self.path / self.RUN_INFO

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def last(self) -> Path:
        return self.path / self.LAST

    @property
    def best(self) -> Path:
        return self.path / self.BEST

    @property
    def model(self) -> Path:
        return self.path / self.MODEL

    def create(self) -> RunFolder:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def check_new(self) -> None:
        """InputError if the folder already holds a run (a ``last.pt``)."""
        if self.last.exists():
            raise InputError(
                self.path, "already holds a run (last.pt); use --resume or a new folder"
            )

    # --- config and run info ------------------------------------------------------------

    def write_config(self, config: Mapping[str, Any]) -> None:
        """``config.yaml``: the resolved configuration as a plain dict (keys in order)."""
        import yaml

        with atomic_path(self.config) as tmp:
            tmp.write_text(yaml.safe_dump(_plain(dict(config)), sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        import yaml

        return yaml.safe_load(self.config.read_text()) or {}

    def write_run_info(
        self, method: str, device: str | torch.device, resumed: bool, **extra: Any
    ) -> dict[str, Any]:
        """``run_info.json``: what made the run (the common entries plus ``extra``)."""
        from fuse4seg import __version__

        info = {
            "fuse4seg_version": __version__,
            "git_hash": git_hash(),
            "command": " ".join(sys.argv),
            "method": method,
            "device": str(device),
            "world_size": 1,
            "torch_version": torch.__version__,
            "resumed": resumed,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **extra,
        }
        save_json_atomic(info, self.run_info)
        return info

    def read_run_info(self) -> dict[str, Any] | None:
        """The saved ``run_info.json`` (None when absent or unreadable)."""
        try:
            info = json.loads(self.run_info.read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    # --- metrics ----------------------------------------------------------------------

    def log_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl``."""
        with open(self.metrics, "a") as fh:
            fh.write(json.dumps(dict(record)) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (a torn line is skipped)."""
        if not self.metrics.is_file():
            return []
        records = []
        for line in self.metrics.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def truncate_metrics(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Keep only the records ``keep`` accepts (those up to the checkpoint resumed from:
        the resumed run logs the later steps again); a torn last line goes too."""
        if not self.metrics.is_file():
            return
        kept = [json.dumps(r) for r in self.read_metrics() if keep(r)]
        with atomic_path(self.metrics) as tmp:
            tmp.write_text("".join(f"{line}\n" for line in kept))

    # --- checkpoints ------------------------------------------------------------------

    def save_checkpoint(self, state: dict[str, Any], name: str = LAST) -> Path:
        """Write a checkpoint (``last.pt`` by default) atomically; returns its path."""
        path = self.path / name
        save_checkpoint(state, path)
        return path

    def load_checkpoint(
        self, name: str = LAST, map_location: str | torch.device = "cpu"
    ) -> dict[str, Any]:
        """Read a checkpoint with ``torch.load(weights_only=True)`` (ModelFileError if it is
        missing, unreadable or not a fuse4seg checkpoint)."""
        return load_checkpoint(self.path / name, map_location=map_location)


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists (YAML's safe dumper writes no tuples)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
