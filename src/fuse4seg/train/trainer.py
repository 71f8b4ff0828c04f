"""The training loop around Algorithm 1: data, networks, optimisers, schedule, checkpoints.

``run_training(cfg, prep_dir, run_dir)`` is the default runner of every 2D method
(:mod:`fuse4seg.train.methods`); :class:`Trainer` does the work and can be built directly
from any slice dataset and store (tests, benchmarks).

Run folder (:class:`~fuse4seg.train.run_folder.RunFolder`, the layout of every method)::

    config.yaml     resolved TrainConfig
    run_info.json   manifest hash, fuse4seg version, git hash, command, device, world size
    metrics.jsonl   one JSON object per log line (train losses, validation Dice)
    curves.png      training curves (losses, validation Dice)
    last.pt         checkpoint after the last completed epoch / at --max-steps
    best.pt         checkpoint with the best validation mean Dice
    model.pt        final EMA leader + follower (weights_only-loadable, see model_file.py)
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fuse4seg.device import autocast_dtype, resolve_device
from fuse4seg.errors import ConfigError, Fuse4SegError, InputError, InputWarning
from fuse4seg.log import get_logger, show_progress
from fuse4seg.models.model_file import FusionSegModel, save_model_file
from fuse4seg.train import distributed as ddp
from fuse4seg.train.bilevel import LossWeights, NonFiniteLossError, TrainState, cosine_factor
from fuse4seg.train.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from fuse4seg.train.config import TrainConfig
from fuse4seg.train.ema import EMA
from fuse4seg.train.evaluate import quick_dice
from fuse4seg.train.methods import MethodSpec, check_method_options
from fuse4seg.train.run_folder import RunFolder, manifest_sha256
from fuse4seg.train.sampler import PatientBatchSampler

_LOG = get_logger(__name__)

__all__ = ["TrainingStopped", "TrainResult", "Trainer", "run_training", "collate_slices"]


class TrainingStopped(Fuse4SegError):
    """Training stopped on a NaN/Inf loss; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """Summary of a finished (or ``--max-steps``-stopped) run."""

    run_dir: Path
    steps: int
    epochs_done: int
    best_dice: float | None
    last_val: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    seconds: float = 0.0

    def summary_line(self, method: str, run_folder: str | Path) -> str:
        """The line ``fuse4seg train`` prints at the end of the run."""
        state = "stopped at --max-steps" if self.stopped_early else "finished"
        best = "n/a" if self.best_dice is None else f"{self.best_dice:.3f}"
        return (
            f"{method} {state}: {self.steps} optimiser steps, {self.epochs_done} epochs, "
            f"{self.seconds:.1f} s, best validation mean Dice {best}; run folder {run_folder}"
        )


def collate_slices(batch: Sequence[tuple]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``[(images (M, H, W), label (H, W), case_id), ...]`` -> ``(x (B, M, H, W), y (B, H, W),
    case_ids)``."""
    xs = torch.stack([torch.as_tensor(b[0], dtype=torch.float32) for b in batch])
    ys = torch.stack([torch.as_tensor(b[1]).long() for b in batch])
    return xs, ys, [str(b[2]) for b in batch]


def build_networks(
    spec: MethodSpec, cfg: TrainConfig, num_modalities: int
) -> tuple[nn.Module | None, nn.Module]:
    """(leader or None, follower) for ``spec`` with the config's presets."""
    from fuse4seg.models import create_fusion_net, create_seg_net

    leader = None
    if spec.has_leader:
        fusion = dict(cfg.fusion_overrides or {})
        leader = create_fusion_net(cfg.fusion_preset, num_modalities, **fusion)
    in_ch = num_modalities if spec.seg_input == "channels" else 1
    follower = create_seg_net(cfg.seg_preset, in_ch, num_classes=cfg.num_classes)
    return leader, follower


class Trainer:
    """Runs one 2D method (warm-up epochs, then rollout epochs) with checkpoints.

    Args:
        cfg: validated :class:`TrainConfig`.
        train_data: dataset of ``(images (M, H, W), label (H, W), case_id)`` items with
            ``.case_ids_per_item``.
        run_dir: output folder.
        store: volume source for validation (``case_ids``, ``image``, ``label``) or None.
        val_case_ids: validation cases (None = ``store.case_ids("val")``).
        modalities: input modality names (for ``model.pt``).
        normalisation: prepare manifest normalisation (for ``model.pt``).
        input_size: in-plane size (for ``model.pt``).
        device: ``auto`` / ``cpu`` / ``cuda`` ... or a ``torch.device``.
        networks: optional ``(leader, follower)`` to use instead of building from presets.
        progress: show a tqdm bar (rank 0).
        run_info: extra entries for ``run_info.json``.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        train_data: Any,
        run_dir: str | Path,
        store: Any = None,
        val_case_ids: Sequence[str] | None = None,
        modalities: Sequence[str] = ("t1ce", "flair"),
        normalisation: dict | None = None,
        input_size: int | None = None,
        device: str | torch.device = "auto",
        networks: tuple[nn.Module | None, nn.Module] | None = None,
        progress: bool = True,
        run_info: dict | None = None,
    ) -> None:
        self.cfg = cfg.validate()
        self.spec = check_method_options(cfg)
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dist = ddp.init_distributed(self.device)
        if self.device.type == "cuda" and self.dist.world_size > 1:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.run_dir = Path(run_dir)
        self.folder = RunFolder(self.run_dir)
        self.train_data = train_data
        self.store = store
        if val_case_ids is None and store is not None:
            val_case_ids = list(store.case_ids("val"))
        val_case_ids = list(val_case_ids or [])
        if cfg.val_max_cases is not None:
            val_case_ids = val_case_ids[: cfg.val_max_cases]
        self.val_case_ids = val_case_ids
        self.modalities = list(modalities)
        self.normalisation = dict(normalisation or {})
        self.input_size = input_size
        self.progress = progress and self.dist.is_main
        self.run_info = dict(run_info or {})
        self.amp_dtype = autocast_dtype(self.device, cfg.amp)

        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        if networks is None:
            leader, follower = build_networks(self.spec, cfg, len(self.modalities))
        else:
            leader, follower = networks
        if self.spec.has_leader and leader is None:
            raise ValueError(f"method {cfg.method!r} needs a leader network")
        leader = leader.to(self.device) if (self.spec.has_leader and leader is not None) else None
        follower = follower.to(self.device)
        for net in (leader, follower):
            if net is not None:
                ddp.broadcast_module(net)

        self.sampler = PatientBatchSampler(
            train_data.case_ids_per_item,
            cfg.batch_size,
            cfg.patients_per_batch,
            seed=cfg.seed,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            max_batches=cfg.steps_per_epoch,
            is_tumour=getattr(train_data, "is_tumour", None),
            tumour_fraction=cfg.tumour_fraction,
        )
        self.batches_per_epoch = len(self.sampler.epoch_batches(0))
        if self.batches_per_epoch < 1:
            raise ConfigError(
                f"the training split gives no complete batch of {cfg.batch_size} slices from "
                f"{cfg.patients_per_batch} patients per process; lower batch_size"
            )
        self.state = self._make_state(leader, follower)
        self.epoch = 0  # next epoch to run
        self.batch_in_epoch = 0  # batches of `epoch` already done
        self.best_dice: float | None = None
        self.history_val: dict[str, float] = {}
        self._tb = None

    # --- setup ------------------------------------------------------------------------

    def _total_steps(self) -> tuple[int, int]:
        """Scheduler lengths (leader, follower) in optimiser steps, from epochs x batches."""
        cfg, n = self.cfg, self.batches_per_epoch
        lw, fw = self.spec.steps_per_batch(cfg, "warmup")
        lr_, fr = self.spec.steps_per_batch(cfg, "rollout")
        leader = n * (cfg.warmup_epochs * lw + cfg.rollout_epochs * lr_)
        follower = n * (cfg.warmup_epochs * fw + cfg.rollout_epochs * fr)
        return leader, follower

    def _scheduler(self, opt: torch.optim.Optimizer, total: int) -> Any:
        cfg = self.cfg
        if cfg.schedule == "constant":
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: cosine_factor(s, total, cfg.min_lr_ratio)
        )

    def _make_state(self, leader: nn.Module | None, follower: nn.Module) -> TrainState:
        from fuse4seg.losses import DiceCELoss

        cfg = self.cfg
        total_leader, total_follower = self._total_steps()
        opt_f = torch.optim.AdamW(
            follower.parameters(), lr=cfg.lr_follower, weight_decay=cfg.weight_decay
        )
        opt_l = sched_l = scaler_l = ema = None
        scaler_enabled = self.amp_dtype == torch.float16
        if leader is not None:
            opt_l = torch.optim.AdamW(
                leader.parameters(), lr=cfg.lr_leader, weight_decay=cfg.weight_decay
            )
            sched_l = self._scheduler(opt_l, total_leader)
            scaler_l = torch.amp.GradScaler(self.device.type, enabled=scaler_enabled)
            ema = EMA(leader, cfg.ema_momentum, cfg.ema_warmup)
        criterion = DiceCELoss(
            num_classes=cfg.num_classes,
            class_weights=cfg.class_weights,
            dice_weight=cfg.dice_weight,
            ce_weight=cfg.ce_weight,
            dice_over=cfg.dice_over,
        ).to(self.device)
        leader_criterion = None
        if cfg.leader_class_weights is not None or cfg.leader_dice_over is not None:
            leader_criterion = DiceCELoss(
                num_classes=cfg.num_classes,
                class_weights=(
                    cfg.class_weights
                    if cfg.leader_class_weights is None
                    else cfg.leader_class_weights
                ),
                dice_weight=cfg.dice_weight,
                ce_weight=cfg.ce_weight,
                dice_over=cfg.leader_dice_over or cfg.dice_over,
            ).to(self.device)
        return TrainState(
            follower=follower,
            opt_follower=opt_f,
            seg_criterion=criterion,
            leader_seg_criterion=leader_criterion,
            leader=leader,
            opt_leader=opt_l,
            ema=ema,
            sched_follower=self._scheduler(opt_f, total_follower),
            sched_leader=sched_l,
            scaler_follower=torch.amp.GradScaler(self.device.type, enabled=scaler_enabled),
            scaler_leader=scaler_l,
            weights=LossWeights(
                alpha=cfg.alpha if cfg.use_decomp else 0.0,
                beta=cfg.beta if cfg.use_grad else 0.0,
                grad_convention=cfg.grad_convention,
                gamma=cfg.gamma,
                info=cfg.info,
                info_weighting=cfg.info_weighting,
                sep=cfg.sep,
                contrast_floor=cfg.contrast_floor,
                contrast_spread=cfg.contrast_spread,
            ),
            val_fraction=cfg.val_patient_fraction,
            inner_steps=cfg.inner_steps,
            leader_total_steps=total_leader,
            grad_clip=cfg.grad_clip,
            amp_dtype=self.amp_dtype,
        )

    # --- checkpoints ------------------------------------------------------------------

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to resume exactly (plain, weights_only-safe)."""
        s = self.state

        def sd(obj: Any) -> Any:
            return None if obj is None else obj.state_dict()

        return {
            "config": self.cfg.to_dict(),
            "method": self.cfg.method,
            "follower": s.follower.state_dict(),
            "leader": sd(s.leader),
            "ema": sd(s.ema),
            "opt_follower": sd(s.opt_follower),
            "opt_leader": sd(s.opt_leader),
            "sched_follower": sd(s.sched_follower),
            "sched_leader": sd(s.sched_leader),
            "scaler_follower": sd(s.scaler_follower),
            "scaler_leader": sd(s.scaler_leader),
            "rng": capture_rng_state(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": s.step,
            "follower_steps": s.follower_steps,
            "leader_steps": s.leader_steps,
            "best_dice": self.best_dice,
        }

    def load_state(self, ckpt: dict[str, Any], path: Path) -> None:
        """Restore a checkpoint made by :meth:`checkpoint_state`."""
        s = self.state
        if ckpt.get("method") != self.cfg.method:
            raise ConfigError(
                f"{path}: checkpoint is for method {ckpt.get('method')!r}, not {self.cfg.method!r}"
            )
        try:
            s.follower.load_state_dict(ckpt["follower"])
            s.opt_follower.load_state_dict(ckpt["opt_follower"])
            s.sched_follower.load_state_dict(ckpt["sched_follower"])
            if s.scaler_follower is not None and ckpt.get("scaler_follower"):
                s.scaler_follower.load_state_dict(ckpt["scaler_follower"])
            if s.leader is not None:
                s.leader.load_state_dict(ckpt["leader"])
                s.opt_leader.load_state_dict(ckpt["opt_leader"])
                s.sched_leader.load_state_dict(ckpt["sched_leader"])
                if ckpt.get("scaler_leader"):
                    s.scaler_leader.load_state_dict(ckpt["scaler_leader"])
                s.ema.load_state_dict(ckpt["ema"])
        except (KeyError, RuntimeError, ValueError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(path, f"checkpoint does not match this run ({msg[:160]})") from exc
        restore_rng_state(ckpt["rng"])
        self.epoch = int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt["batch_in_epoch"])
        s.step = int(ckpt["step"])
        s.follower_steps = int(ckpt["follower_steps"])
        s.leader_steps = int(ckpt["leader_steps"])
        self.best_dice = ckpt.get("best_dice")

    def _save(self, name: str) -> None:
        if self.dist.is_main:
            self.folder.save_checkpoint(self.checkpoint_state(), name)

    # --- models -----------------------------------------------------------------------

    def export_model(self) -> FusionSegModel:
        """The inference model: EMA leader (or raw with ``--no-ema``) + follower."""
        s = self.state
        leader = None
        if s.leader is not None:
            leader = s.ema.module if (self.cfg.use_ema and s.ema is not None) else s.leader
        return FusionSegModel(
            method=self.cfg.method,
            modalities=self.modalities,
            seg_net=s.follower,
            fusion_net=leader,
            fusion_rule=self.spec.fusion_rule,
            num_classes=self.cfg.num_classes,
            preprocessing=self.normalisation,
            input_size=self.input_size,
            fusion_preset=self.cfg.fusion_preset if leader is not None else None,
            seg_preset=self.cfg.seg_preset,
            train_config=self.cfg.to_dict(),
        )

    def validate(self) -> dict[str, float]:
        """Per-case 3D Dice (NCR, ED, ET, mean) on the validation cases (rank 0)."""
        if not self.val_case_ids or self.store is None:
            return {}
        # predict_volume switches the networks to eval mode and restores their mode
        return quick_dice(
            self.export_model(), self.store, self.val_case_ids, self.device, batch_size=16
        )

    # --- logging ----------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        self.folder.log_metrics(record)
        if self._tb is not None:
            prefix = record.get("type", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{prefix}/{k}", v, record.get("step", 0))

    def _truncate_metrics(self, step: int) -> None:
        """Drop ``metrics.jsonl`` lines after ``step`` (the checkpoint resumed from): the
        resumed run logs those steps again. A torn last line (killed mid-write) goes too."""
        if self.dist.is_main:
            self.folder.truncate_metrics(lambda record: int(record.get("step", 0)) <= step)

    def _write_run_files(self, resumed: bool) -> None:
        if not self.dist.is_main:
            return
        self.folder.create().write_config(self.cfg.to_dict())
        self.folder.write_run_info(
            self.cfg.method,
            self.device,
            resumed,
            world_size=self.dist.world_size,
            **self.run_info,
        )
        if self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print(
                    "warning: tensorboard is not installed; --tensorboard ignored", file=sys.stderr
                )
            else:
                self._tb = SummaryWriter(str(self.folder / RunFolder.TENSORBOARD))

    # --- the loop ---------------------------------------------------------------------

    def resume(self, path: str | Path | None = None) -> None:
        """Load ``last.pt`` (or ``path``) to continue where the run stopped."""
        path = Path(path) if path is not None else self.folder.last
        self.load_state(load_checkpoint(path, map_location=self.device), path)

    def fit(self, resumed: bool = False) -> TrainResult:
        """Run the remaining epochs; returns a :class:`TrainResult`."""
        from tqdm import tqdm

        cfg, s = self.cfg, self.state
        t0 = time.perf_counter()
        self._write_run_files(resumed)
        if resumed:
            self._truncate_metrics(s.step)
        total_epochs = cfg.warmup_epochs + cfg.rollout_epochs
        stopped = False
        last_logged = s.step
        for epoch in range(self.epoch, total_epochs):
            stage = "warmup" if epoch < cfg.warmup_epochs else "rollout"
            batch_fn = self.spec.warmup if stage == "warmup" else self.spec.rollout
            self.sampler.set_epoch(epoch)
            if hasattr(self.train_data, "set_epoch"):
                self.train_data.set_epoch(epoch)  # augmentation draw of this epoch
            self.sampler.set_start(self.batch_in_epoch if epoch == self.epoch else 0)
            start = self.sampler.start
            loader = torch.utils.data.DataLoader(
                self.train_data,
                batch_sampler=self.sampler,
                num_workers=cfg.num_workers,
                collate_fn=collate_slices,
                generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch),
            )
            bar = tqdm(
                loader,
                total=len(self.sampler),
                desc=f"{cfg.method} {stage} {epoch + 1}/{total_epochs}",
                disable=not show_progress(self.progress),  # bars on a terminal only
                leave=False,
                dynamic_ncols=True,
            )
            self.epoch = epoch
            epoch_t0, sums, batches = time.perf_counter(), {}, 0
            for i, (x, y, case_ids) in enumerate(bar, start=start):
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                try:
                    terms = batch_fn(s, x, y, case_ids, cfg)
                except NonFiniteLossError as exc:
                    self._log({"type": "error", "epoch": epoch, "step": s.step, "error": str(exc)})
                    self._finish_curves()
                    last = self.folder.last
                    keep = f"; last good checkpoint: {last}" if last.exists() else ""
                    raise TrainingStopped(
                        f"training stopped at step {s.step} (epoch {epoch + 1}, {stage}): "
                        f"{exc}{keep}"
                    ) from exc
                self.batch_in_epoch = i + 1
                batches += 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                bar.set_postfix(
                    {k: f"{v:.3f}" for k, v in terms.items() if "upper" in k or k.endswith("seg")}
                )
                if s.step - last_logged >= cfg.log_every:
                    last_logged = s.step
                    self._log(
                        {
                            "type": "train",
                            "epoch": epoch,
                            "step": s.step,
                            "stage": stage,
                            "lr_follower": s.opt_follower.param_groups[0]["lr"],
                            **(
                                {"lr_leader": s.opt_leader.param_groups[0]["lr"]}
                                if s.opt_leader is not None
                                else {}
                            ),
                            **terms,
                        }
                    )
                if cfg.max_steps is not None and s.step >= cfg.max_steps:
                    stopped = True
                    break
            bar.close()
            if stopped:  # resumes at (epoch, batch_in_epoch), end-of-epoch work included
                self._save(RunFolder.LAST)
                break
            self.epoch, self.batch_in_epoch = epoch + 1, 0
            val = None
            if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == total_epochs:
                val = self._end_of_epoch_validation(epoch, stage)
            if self.dist.is_main:
                means = {k: v / max(batches, 1) for k, v in sums.items()}
                _LOG.info(_epoch_line(epoch, total_epochs, stage, means, val, s, epoch_t0))
            self._save(RunFolder.LAST)
            ddp.barrier()
        if self.dist.is_main:  # also at --max-steps, so smoke runs give a usable model
            save_model_file(self.export_model(), self.folder.model)
            if self.spec.has_leader and s.leader_steps == 0:
                warnings.warn(
                    f"{self.folder.model}: the fusion leader made no optimiser step "
                    "(the run ended inside the warm-up); its fused image is the untrained "
                    "leader's, not a trained fusion",
                    InputWarning,
                    stacklevel=2,
                )
        self._finish_curves()
        if self._tb is not None:
            self._tb.close()
        return TrainResult(
            run_dir=self.run_dir,
            steps=s.step,
            epochs_done=self.epoch,
            best_dice=self.best_dice,
            last_val=self.history_val,
            stopped_early=stopped,
            seconds=time.perf_counter() - t0,
        )

    def _end_of_epoch_validation(self, epoch: int, stage: str) -> dict | None:
        if not self.dist.is_main:
            return None
        val = self.validate()
        if not val:
            return None
        self.history_val = val
        self._log({"type": "val", "epoch": epoch, "step": self.state.step, "stage": stage, **val})
        score = val["mean"]
        if self.best_dice is None or score > self.best_dice:
            self.best_dice = score
            self._save(RunFolder.BEST)
        return val

    def _finish_curves(self) -> None:
        if not self.dist.is_main:
            return
        metrics = self.folder.metrics
        if metrics.exists():
            from fuse4seg.train.report import plot_training_curves

            plot_training_curves(metrics, self.folder / RunFolder.CURVES, title=self.cfg.method)


def _epoch_line(
    epoch: int,
    total: int,
    stage: str,
    means: dict[str, float],
    val: dict | None,
    state: TrainState,
    t0: float,
) -> str:
    """``epoch 3/40 rollout | inner_seg 0.412 leader_upper 0.873 | val mean Dice 0.512 |
    lr 2.1e-03 / 7.4e-04 | 12.3 s``: the epoch's mean loss terms, validation, learning rates
    (follower / leader) and wall time."""
    terms = " ".join(f"{k} {v:.4f}" for k, v in means.items())
    parts = [f"epoch {epoch + 1}/{total} {stage}", terms or "no batches"]
    if val:
        parts.append(f"val mean Dice {val['mean']:.4f}")
    lrs = [state.opt_follower.param_groups[0]["lr"]]
    if state.opt_leader is not None:
        lrs.append(state.opt_leader.param_groups[0]["lr"])
    parts.append("lr " + " / ".join(f"{lr:.1e}" for lr in lrs))
    parts.append(f"{time.perf_counter() - t0:.1f} s")
    return " | ".join(parts)


def _run_fold(run_dir: Path, fold: int | None) -> int | None:
    """The fold of a run being resumed: its ``run_info.json`` fold; ``fold`` must agree."""
    info = RunFolder(run_dir).read_run_info()
    if info is None:
        return fold  # no readable run info: trust the command line
    saved = info.get("fold")
    if fold is not None and saved != fold:
        was = "no fold" if saved is None else f"fold {saved}"
        raise InputError(run_dir, f"the run was trained on {was}, not fold {fold}")
    return saved


def run_training(
    cfg: TrainConfig,
    prep_dir: str | Path,
    run_dir: str | Path,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    fold: int | None = None,
) -> TrainResult:
    """Train ``cfg.method`` on the prepared store ``prep_dir`` into ``run_dir``.

    Checks the patient-level split of the store before training. With ``resume`` the run
    continues from ``run_dir/last.pt`` using the checkpoint's config (``max_steps`` from
    ``cfg``). With ``fold`` it trains on cross-validation fold ``fold`` of the store's
    ``splits_final.json`` and validates on that fold's held-out cases; ``run_info.json``
    records the fold and its cases, and a resumed run keeps its fold.

    Raises:
        InputError: bad store or run folder; ConfigError: bad options;
        TrainingStopped: NaN/Inf loss.
    """
    from fuse4seg.data.datasets import SliceDataset
    from fuse4seg.data.splits import assert_patient_level_split
    from fuse4seg.data.store import PreparedStore

    prep_dir, run_dir = Path(prep_dir), Path(run_dir)
    folder, ckpt = RunFolder(run_dir), None
    if resume:
        ckpt = folder.load_checkpoint()
        saved = TrainConfig(**{**ckpt["config"], "max_steps": cfg.max_steps})
        cfg = dataclasses.replace(saved).validate()
    else:
        folder.check_new()
    fold = _run_fold(run_dir, fold) if resume else fold
    store = PreparedStore(prep_dir)
    fold_info: dict[str, Any] = {}
    if fold is not None:
        store = store.fold(fold)
        fold_info = {
            "fold": fold,
            "num_folds": len(store.folds or []),
            "fold_train_cases": store.case_ids("train"),
            "fold_val_cases": store.case_ids("val"),
            "splits_sha256": hashlib.sha256(store.folds_path.read_bytes()).hexdigest(),
        }
    assert_patient_level_split(store.manifest)
    train_cases = list(store.case_ids("train"))
    if len(train_cases) < cfg.patients_per_batch:
        where = "training split" if fold is None else f"fold {fold}'s training cases"
        raise InputError(
            prep_dir,
            f"{where}: {len(train_cases)} case(s); patients_per_batch needs >= "
            f"{cfg.patients_per_batch}",
        )
    dataset = SliceDataset(
        store, "train", augment=cfg.augment, tumour_fraction=cfg.tumour_fraction, seed=cfg.seed
    )
    manifest = store.manifest
    normalisation = {
        "scale": manifest.get("scale"),
        "size": manifest.get("size"),
        **dict(manifest.get("normalisation", {})),
    }
    input_size = manifest.get("size")
    trainer = Trainer(
        cfg,
        dataset,
        run_dir,
        store=store,
        modalities=list(store.modalities),
        normalisation=normalisation,
        input_size=int(input_size) if isinstance(input_size, (int, float)) else None,
        device=device,
        progress=progress,
        run_info={
            "prep_dir": str(prep_dir),
            "manifest_sha256": manifest_sha256(prep_dir),
            **fold_info,
        },
    )
    if ckpt is not None:
        trainer.load_state(ckpt, folder.last)
    return trainer.fit(resumed=resume)
