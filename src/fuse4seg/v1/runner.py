"""Whole ``fuse4seg-v1`` training run: pre-training, then cooperative training, then
``model.pt`` in the common format.

:func:`run_v1_training` is the runner registered for ``--method fuse4seg-v1`` (called as
``runner(config, prep_dir, run_dir, device=..., resume=..., progress=...)`` by the trainer);
:func:`train_v1` is the plain Python API. ``run_dir`` has the layout of every method
(:class:`fuse4seg.train.run_folder.RunFolder`):

* ``config.yaml`` — the resolved :class:`~fuse4seg.v1.config.V1Config`;
* ``run_info.json`` — version, git hash, command, device, store and its manifest hash;
* ``metrics.jsonl`` — one line per ``log_every`` steps (stage, epoch, step, loss terms);
* ``last.pt`` — checkpoint at every epoch end and when ``max_steps`` stops the run
  (resume restarts the interrupted epoch, and the lines logged after the checkpoint go);
* ``model.pt`` — fusion network (``config["arch"] == "v1"``) + segmentation network.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from fuse4seg.device import resolve_device
from fuse4seg.errors import InputError
from fuse4seg.train.run_folder import RunFolder, manifest_sha256

from .config import V1_PRESETS, V1Config, make_v1_config, saved_v1_config
from .cooperative import (
    V1_METHOD_NAME,
    CooperativeState,
    cooperative_batch,
    make_seg_loss,
    make_seg_sgd,
)
from .discriminator import DiscriminatorPair
from .networks import FusionNetV1, FusionV1Config
from .pretrain import make_adam, pretrain_batch, pretrain_parameters, random_crop

__all__ = [
    "select_modalities",
    "build_v1_networks",
    "train_v1",
    "v1_config_from_train_config",
    "run_v1_training",
]


def select_modalities(available: list[str], wanted: tuple[str, ...] | None) -> list[str]:
    """The two fused modalities: ``wanted``, else T1ce + FLAIR if present, else the first two."""
    if wanted is not None:
        missing = [m for m in wanted if m not in available]
        if missing:
            raise InputError(None, f"modalities {missing} are not in the store ({available})")
        return list(wanted)
    if "t1ce" in available and "flair" in available:
        return ["t1ce", "flair"]
    if len(available) < 2:
        raise InputError(None, f"fuse4seg-v1 needs 2 modalities, the store has {available}")
    return list(available[:2])


def build_v1_networks(cfg: V1Config) -> tuple[FusionNetV1, DiscriminatorPair, torch.nn.Module]:
    """(fusion network, one discriminator per modality, segmentation network on F)."""
    from fuse4seg.models import create_seg_net

    fusion = FusionNetV1(
        FusionV1Config(
            dim=cfg.dim, heads=cfg.heads, shared_blocks=cfg.shared_blocks,
            low_blocks=cfg.low_blocks, high_blocks=cfg.high_blocks,
            decoder_blocks=cfg.decoder_blocks, downsample=cfg.downsample,
            attn_grid=cfg.attn_grid, cross_attention=cfg.cross_attention,
            recon_decoder=cfg.recon_decoder,
        )
    )  # fmt: skip
    discs = DiscriminatorPair(2, cfg.disc_width, cfg.disc_depth)
    seg = create_seg_net(cfg.seg_preset, fusion.seg_channels, num_classes=cfg.num_classes)
    return fusion, discs, seg


def _batches(loader, cap: int | None):
    for i, batch in enumerate(loader):
        if cap is not None and i >= cap:
            return
        yield batch


def train_v1(
    prep_dir: str | Path,
    run_dir: str | Path,
    config: V1Config,
    device: str = "auto",
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Pre-train, then cooperatively train, then write ``run_dir/model.pt``.

    Args:
        prep_dir: a prepared store (``fuse4seg prepare``).
        run_dir: output folder (must not hold a run unless ``resume``).
        config: the resolved :class:`V1Config`.
        device: ``auto``, ``cpu``, ``cuda``, ...
        resume: continue from ``run_dir/last.pt``.
        max_steps: stop after this many batches in total (both stages); the model file is
            still written.

    Returns:
        ``{"run_dir", "steps", "stage", "epoch", "stopped_early", "seconds", "last"}``.

    Raises:
        InputError: bad store / run folder; ConfigError: bad config.
    """
    from fuse4seg.data import PreparedStore, SliceDataset
    from fuse4seg.models.model_file import FusionSegModel, save_model_file
    from fuse4seg.train.trainer import collate_slices

    t0 = time.time()
    prep_dir, run_dir = Path(prep_dir), Path(run_dir)
    folder, ckpt = RunFolder(run_dir), None
    if resume:
        ckpt = folder.load_checkpoint()
        config = saved_v1_config(ckpt["v1_config"])
    else:
        folder.check_new()
    config.validate()
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    store = PreparedStore(prep_dir)
    modalities = select_modalities(list(store.modalities), config.modalities)
    channels = [list(store.modalities).index(m) for m in modalities]
    dataset = SliceDataset(store, "train", tumour_fraction=None, seed=config.seed)
    if len(dataset) == 0:
        raise InputError(prep_dir, "the training split has no slices")
    coop_set = SliceDataset(
        store, "train", augment=True, tumour_fraction=config.tumour_fraction, seed=config.seed
    )
    gen = torch.Generator().manual_seed(config.seed)

    def loader(ds):
        return torch.utils.data.DataLoader(
            ds, batch_size=config.batch_size, sampler=ds.sampler(generator=gen),
            collate_fn=collate_slices, drop_last=False,
        )  # fmt: skip

    fusion, discs, seg = build_v1_networks(config)
    fusion, discs, seg = fusion.to(dev), discs.to(dev), seg.to(dev)
    opt_g, sched_g = make_adam(pretrain_parameters(fusion), config, config.pretrain_lr)
    opt_dp, sched_dp = make_adam(list(discs.parameters()), config, config.pretrain_lr)
    opt_f, sched_f = make_adam(list(fusion.parameters()), config, config.fusion_lr)
    opt_dc, sched_dc = make_adam(list(discs.parameters()), config, config.fusion_lr)
    opt_s = make_seg_sgd(seg, config)
    stateful = {
        "fusion": fusion, "discriminators": discs, "segmentation": seg, "opt_g": opt_g,
        "sched_g": sched_g, "opt_dp": opt_dp, "sched_dp": sched_dp, "opt_f": opt_f,
        "sched_f": sched_f, "opt_dc": opt_dc, "sched_dc": sched_dc, "opt_s": opt_s,
    }  # fmt: skip
    stage, epoch, step = "pretrain", 0, 0
    if ckpt is not None:
        for key, obj in stateful.items():
            obj.load_state_dict(ckpt["state"][key])
        stage, epoch, step = ckpt["stage"], int(ckpt["epoch"]), int(ckpt["step"])
    folder.create().write_config(config.to_dict())
    info = {"prep_dir": str(prep_dir), "manifest_sha256": manifest_sha256(prep_dir)}
    folder.write_run_info(V1_METHOD_NAME, dev, resume, **info)
    if ckpt is not None:  # the resumed run logs the steps after the checkpoint again
        folder.truncate_metrics(lambda record: int(record.get("step", 0)) <= step)
    coop = CooperativeState(fusion, seg, discs, opt_f, opt_s, opt_dc, make_seg_loss(config))

    def checkpoint() -> None:
        folder.save_checkpoint(
            {
                "method": V1_METHOD_NAME, "v1_config": config.to_dict(), "stage": stage,
                "epoch": epoch, "step": step,
                "state": {k: v.state_dict() for k, v in stateful.items()},
            }
        )  # fmt: skip

    def log(record: dict[str, Any]) -> None:
        folder.log_metrics(record)
        if progress:
            print(
                " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in record.items()
                )
            )

    stopped, last = False, {}
    plan = [("pretrain", config.pretrain_epochs), ("cooperative", config.coop_epochs)]
    start_idx = 0 if stage == "pretrain" else 1
    for s_idx in range(start_idx, 2):
        stage, n_epochs = plan[s_idx]
        if s_idx != start_idx:
            epoch = 0
        while epoch < n_epochs and not stopped:
            ds = dataset if stage == "pretrain" else coop_set
            ds.set_epoch(epoch)
            for x, y, _ in _batches(loader(ds), config.steps_per_epoch):
                x = x[:, channels].to(dev)
                x, y = random_crop(x, config.crop_size, y.to(dev), generator=gen)
                if stage == "pretrain":
                    last = pretrain_batch(fusion, discs, opt_g, opt_dp, x, config)
                else:
                    last = cooperative_batch(coop, x, y, config)
                step += 1
                if step % config.log_every == 0:
                    log({"stage": stage, "epoch": epoch, "step": step, **last})
                if max_steps is not None and step >= max_steps:
                    stopped = True
                    break
            if stopped:
                break
            for sched in (sched_g, sched_dp) if stage == "pretrain" else (sched_f, sched_dc):
                sched.step()
            epoch += 1
            checkpoint()
        if stopped:
            break
    checkpoint()
    model = FusionSegModel(
        method=V1_METHOD_NAME,
        modalities=modalities,
        seg_net=seg,
        fusion_net=fusion,
        num_classes=config.num_classes,
        preprocessing=dict(store.manifest.get("normalisation", {})),
        input_size=int(store.size),
        fusion_preset=config.preset,
        seg_preset=config.seg_preset,
        train_config={"method": V1_METHOD_NAME, **config.to_dict()},
    )
    save_model_file(model, folder.model)
    return {
        "run_dir": run_dir, "steps": step, "stage": stage, "epoch": epoch,
        "stopped_early": stopped, "seconds": time.time() - t0, "last": last,
    }  # fmt: skip


def v1_config_from_train_config(cfg: Any, v1_overrides: dict[str, Any] | None = None) -> V1Config:
    """The :class:`V1Config` of a ``fuse4seg train --method fuse4seg-v1`` run.

    Taken from ``cfg`` (a :class:`~fuse4seg.train.config.TrainConfig`): ``preset`` (``tiny`` /
    ``base`` / ``paper``, else ``base``), ``seg_preset``, ``seed``, ``num_classes``,
    ``dice_weight``, ``ce_weight``, ``tumour_fraction``, ``steps_per_epoch``,
    ``grad_convention``. Every other v1 setting keeps the preset value unless given in
    ``cfg.v1_overrides`` (the YAML key, e.g. ``{gan_loss: log, cross_attention: false}``) or
    in ``v1_overrides`` (which wins).
    """
    preset = cfg.preset if cfg.preset in V1_PRESETS else "base"
    preset_conv = V1_PRESETS[preset].get("grad_convention", "unit")
    mapped = {
        "seg_preset": cfg.seg_preset, "seed": cfg.seed, "num_classes": cfg.num_classes,
        "dice_weight": cfg.dice_weight, "ce_weight": cfg.ce_weight,
        "tumour_fraction": cfg.tumour_fraction, "steps_per_epoch": cfg.steps_per_epoch,
        "grad_convention": getattr(cfg, "grad_convention", preset_conv),
    }  # fmt: skip
    from_cfg = getattr(cfg, "v1_overrides", None) or {}
    return make_v1_config(preset, {**mapped, **from_cfg, **(v1_overrides or {})})


def run_v1_training(
    cfg: Any,
    prep_dir: str | Path,
    run_dir: str | Path,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    v1_overrides: dict[str, Any] | None = None,
):
    """Trainer-registry runner: maps a :class:`~fuse4seg.train.config.TrainConfig` onto a
    :class:`V1Config` (:func:`v1_config_from_train_config`; ``max_steps`` also comes from
    ``cfg``) and returns a :class:`~fuse4seg.train.trainer.TrainResult`.
    """
    from fuse4seg.train.trainer import TrainResult

    if isinstance(cfg, V1Config):
        v1, max_steps = cfg, None
    else:
        v1, max_steps = v1_config_from_train_config(cfg, v1_overrides), cfg.max_steps
    out = train_v1(prep_dir, run_dir, v1, device, resume, max_steps, progress)
    return TrainResult(
        run_dir=Path(run_dir),
        steps=out["steps"],
        epochs_done=out["epoch"],
        best_dice=None,
        last_val={},
        stopped_early=out["stopped_early"],
        seconds=out["seconds"],
    )
