"""``fuse4seg train --method rmr3d``: the method's registration, configuration and runner.

``rmr3d`` registers itself in the trainer's method registry (:mod:`fuse4seg.train.methods`)
when :mod:`fuse4seg.rmr` is imported (a plugin of :mod:`fuse4seg.plugins`). It has its own
configuration (:class:`~fuse4seg.rmr.train.RMRTrainConfig`, built by
:func:`configure_rmr` from the ``fuse4seg train`` options) and its own runner
(:func:`run_rmr_training`, the two-stage 3D training of :func:`~fuse4seg.rmr.train.train_rmr`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuse4seg.errors import ConfigError
from fuse4seg.train.methods import METHODS, MethodSpec, register_method
from fuse4seg.train.trainer import TrainResult

__all__ = ["RMR_METHOD", "RMRTrainResult", "configure_rmr", "run_rmr_training", "register_rmr"]

#: the ``--method`` name (and ``model.pt`` ``method``) of RMR-Fusion
RMR_METHOD = "rmr3d"

#: ``fuse4seg train`` ablation flags of the 2D methods, which rmr3d does not take
_ABLATION_OPTIONS = ("no_bilevel", "no_decomp", "no_grad", "no_ema")


@dataclass
class RMRTrainResult(TrainResult):
    """:class:`TrainResult` of an rmr3d run, plus the path of its ``model.pt``."""

    model_path: Path | None = None

    def summary_line(self, method: str, run_folder: str | Path) -> str:
        return f"{method} finished; model file {self.model_path}"


def configure_rmr(options: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The :class:`~fuse4seg.rmr.train.RMRTrainConfig` of ``fuse4seg train --method rmr3d``.

    Args:
        options: the ``fuse4seg train`` options: ``config`` (YAML of RMR keys or None),
            ``preset`` (overrides the YAML's ``preset`` unless left at its default ``base``
            while a YAML is given), ``max_steps`` (cap on the steps of *each* stage), ``fold``
            (cross-validation fold of the store: its training cases) and the ablation flags
            ``no_bilevel`` / ``no_decomp`` / ``no_grad`` / ``no_ema`` (rejected). ``seed``,
            ``workers`` and ``tensorboard`` are not used.

    Returns:
        ``(config, {"max_steps": ..., "fold": ...})``.

    Raises:
        ConfigError: an ablation flag, unknown or bad RMR keys;
        InputError: an unreadable YAML file.
    """
    from fuse4seg.rmr.train import load_train_config

    ablations = [name for name in _ABLATION_OPTIONS if options.get(name)]
    if ablations:
        flags = ", ".join("--" + name.replace("_", "-") for name in ablations)
        raise ConfigError(f"{flags} cannot be used with method {RMR_METHOD!r}")
    preset = options.get("preset")
    if preset == "base" and options.get("config"):
        preset = None  # the default --preset leaves the YAML's preset alone
    cfg = load_train_config(options.get("config"), preset=preset)
    return cfg, {"max_steps": options.get("max_steps"), "fold": options.get("fold")}


def run_rmr_training(
    cfg: Any,
    prep_dir: str | Path,
    run_dir: str | Path,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    fold: int | None = None,
) -> RMRTrainResult:
    """Registry runner of ``rmr3d``: :func:`~fuse4seg.rmr.train.train_rmr` (progress lines
    printed unless ``progress`` is False); returns an :class:`RMRTrainResult`."""
    import time

    from fuse4seg.rmr.train import train_rmr

    t0 = time.perf_counter()
    stage_steps = (cfg.stage1_steps, cfg.stage2_steps)
    if max_steps is not None:
        stage_steps = tuple(min(n, max_steps) for n in stage_steps)
    model_path = train_rmr(
        prep_dir,
        run_dir,
        cfg,
        device=device,
        resume=resume,
        max_steps=max_steps,
        log=print if progress else None,
        fold=fold,
    )
    return RMRTrainResult(
        run_dir=Path(run_dir),
        steps=sum(stage_steps),
        epochs_done=2,  # the two stages
        best_dice=None,
        stopped_early=stage_steps != (cfg.stage1_steps, cfg.stage2_steps),
        seconds=time.perf_counter() - t0,
        model_path=model_path,
    )


def register_rmr() -> None:
    """Register ``rmr3d`` in :data:`fuse4seg.train.methods.METHODS` (idempotent)."""
    if RMR_METHOD in METHODS:
        return
    register_method(
        MethodSpec(
            RMR_METHOD,
            "RMR-Fusion, 3D degradation-robust fusion + SwinUNETR (its own config: --config "
            "takes RMR keys, see docs/rmr.md)",
            has_leader=True,
            seg_input="fused",
            fusion_rule=None,
            warmup=None,
            rollout=None,
            steps_per_batch=None,
            runner="fuse4seg.rmr.runner:run_rmr_training",
            configure="fuse4seg.rmr.runner:configure_rmr",
        )
    )
