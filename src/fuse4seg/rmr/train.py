"""RMR-Fusion training: stage 1 (degradation-robust AE) then stage 2 (mutual-reinforcing fusion).

Stage 1 (encoders + shared decoder), for each modality ``X`` and a degraded copy ``X^D``::

    L_IR = Q_img(DE(EN(X)), X) + Q_img(DE(EN(X^D)), X)
    L_FR = Q_feat(EN(X^D), EN(X))
    L_TR = L_IR + alpha * L_FR

with ``Q_img(a, b) = 40 MSE(a, b) + 20 TV(a - b) + (1 - SSIM3D(a, b))`` and
``Q_feat(a, b) = 40 MSE(a, b) + 20 TV(a - b)`` (weights of the reference code; TV of the
residual), averaged over modalities. ``tv_convention`` picks the TV: ``"squared"`` (mean
squared neighbour difference per axis, the reference code's) or ``"abs"`` (mean absolute
difference).

Stage 2 (encoders and decoder frozen; fusion module + semantic head trained)::

    F = DE(FN(EN_1(X_1), ..., EN_M(X_M)))        S = softmax(head(FN(...)))
    L_VF = ||F - Y||_1 + delta * || |Sobel3D F| - max_m |Sobel3D X_m| ||_1
    L_MF = L_VF + eta * L_LS                    (L_LS = soft Dice over all classes, eq. 8)

``Y`` is the ``visual_target`` modality (FLAIR by default, as in the reference code).
``grad_convention`` picks the Sobel magnitude: ``"cddfuse"`` (the reference code's raw 3D
kernels, ``|g_d| + |g_h| + |g_w|``, zero padding: 32 a on a ramp of slope a) or ``"unit"``
(kernels / 32, L2 magnitude: a). The ``paper`` preset uses the reference code's conventions,
``tiny`` / ``base`` the ``unit`` / ``abs`` ones (fuse4seg.losses.gradients).
``use_vf = False`` is the paper's "w/o L_VF" ablation (Table 5): stage 2 on ``eta L_LS`` only.
Adam, lr 1e-4, random patches from the prepare store. The run folder has the layout of every
method (:class:`fuse4seg.train.run_folder.RunFolder`: ``config.yaml``, ``run_info.json``,
``metrics.jsonl``, ``last.pt``, ``model.pt``) plus ``stage1.pt`` (the trained autoencoder).
The checkpoint ``last.pt`` is saved atomically and loads with ``torch.load(weights_only=True)``;
resume continues at the saved stage and step with the same random stream (patch and
degradation randomness are seeded by ``(seed, stage, step)``). The result is ``model.pt``
(docs/architecture.md, method ``"rmr3d"``, ``spatial_dims`` 3), loadable with
:func:`fuse4seg.rmr.load_rmr_model`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fuse4seg import __version__
from fuse4seg.data.volume_store import NORMALISATION, PatchSampler, VolumeStore
from fuse4seg.degradations import PRESETS, Degradation
from fuse4seg.device import resolve_device
from fuse4seg.errors import ConfigError, InputError
from fuse4seg.io.atomic import load_tagged_torch, save_torch_atomic
from fuse4seg.losses import gradient_magnitude, soft_dice_loss, ssim, total_variation
from fuse4seg.losses.gradients import GRAD_CONVENTIONS, TV_CONVENTIONS
from fuse4seg.rmr.networks import RMR_PRESETS, RMRNet, config_dict, create_rmr_net
from fuse4seg.train.run_folder import RunFolder, manifest_sha256

__all__ = [
    "RMRTrainConfig",
    "load_train_config",
    "stage1_loss",
    "stage2_loss",
    "train_rmr",
    "train_rmr_on_store",
    "build_model_dict",
    "CHECKPOINT_NAME",
    "STAGE1_NAME",
    "MODEL_NAME",
]

CHECKPOINT_NAME = RunFolder.LAST
STAGE1_NAME = "stage1.pt"
#: format tag of stage1.pt
STAGE1_FORMAT = "rmr3d-stage1"
MODEL_NAME = RunFolder.MODEL
#: checkpoint of the run folders written before the common layout (not resumable)
LEGACY_CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class RMRTrainConfig:
    """Training options of RMR-Fusion (YAML keys have the same names)."""

    #: network size preset: tiny (CPU tests), base, paper
    preset: str = "base"
    #: input modalities in channel order (the paper pairs T1 and FLAIR)
    modalities: tuple[str, ...] = ("t1", "flair")
    #: modality Y of the visual fusion loss ||F - Y||_1
    visual_target: str = "flair"
    #: semantic head: swinunetr, unet, segresnet, unetr, dynunet
    seg_head: str = "swinunetr"
    #: training patch (d, h, w); None = the preset's (paper: 32x128x128)
    patch_size: tuple[int, int, int] | None = None
    #: patches per step (the paper uses 2)
    batch_size: int = 2
    #: optimisation steps of stage 1 (autoencoder) and stage 2 (fusion + semantic head)
    stage1_steps: int = 2000
    stage2_steps: int = 2000
    #: Adam learning rate of both stages
    lr: float = 1e-4
    #: weight of the feature-level refinement loss L_FR
    alpha: float = 1.0
    #: weight of the gradient term of L_VF
    delta: float = 0.08
    #: weight of the segmentation loss L_LS in L_MF
    eta: float = 0.1
    #: Sobel magnitude of L_VF: cddfuse (reference code: raw kernels, sum of |g_k|, 32a on a
    #: ramp of slope a) or unit (normalised, L2: a); None = cddfuse for the paper preset,
    #: unit for tiny / base
    grad_convention: str | None = None
    #: TV of Q_img / Q_feat: squared (reference code) or abs; None = squared for the paper
    #: preset, abs for tiny / base
    tv_convention: str | None = None
    #: False = the paper's "w/o L_VF" ablation: stage 2 trained on eta L_LS only
    use_vf: bool = True
    #: Q_img / Q_feat weights (reference code: 40 MSE + 20 TV (+ 1 SSIM))
    mse_weight: float = 40.0
    tv_weight: float = 20.0
    ssim_weight: float = 1.0
    #: degradation preset for the stage-1 degraded copies (fuse4seg.degradations.PRESETS)
    degradation: str = "train"
    #: fraction of patches centred on a tumour voxel
    tumour_fraction: float = 0.5
    #: training split of the store
    split: str = "train"
    seed: int = 0
    #: ``stage1.pt`` of an earlier run with the same encoders and decoder: stage 1 is skipped
    #: and stage 2 starts from that autoencoder (e.g. a new fusion module or head on it)
    stage1_from: str | None = None
    #: log a line every N steps; save a checkpoint every N steps (and at each stage end)
    log_every: int = 10
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        if self.patch_size is not None:
            self.patch_size = tuple(int(p) for p in self.patch_size)
            if len(self.patch_size) != 3 or min(self.patch_size) < 2:
                raise ConfigError(f"patch_size needs 3 sides >= 2, got {self.patch_size}")
        if self.preset not in RMR_PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose from {sorted(RMR_PRESETS)}")
        if self.visual_target not in self.modalities:
            raise ConfigError(
                f"visual_target {self.visual_target!r} is not one of modalities {self.modalities}"
            )
        if self.degradation not in PRESETS:
            raise ConfigError(
                f"unknown degradation preset {self.degradation!r}; choose from {sorted(PRESETS)}"
            )
        for name in ("batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.stage1_steps < 0 or self.stage2_steps < 0 or self.lr <= 0:
            raise ConfigError("stage steps must be >= 0 and lr > 0")
        paper = self.preset == "paper"
        if self.grad_convention is None:
            self.grad_convention = "cddfuse" if paper else "unit"
        if self.tv_convention is None:
            self.tv_convention = "squared" if paper else "abs"
        if self.grad_convention not in GRAD_CONVENTIONS:
            raise ConfigError(
                f"grad_convention must be one of {list(GRAD_CONVENTIONS)}, "
                f"got {self.grad_convention!r}"
            )
        if self.tv_convention not in TV_CONVENTIONS:
            raise ConfigError(
                f"tv_convention must be one of {list(TV_CONVENTIONS)}, got {self.tv_convention!r}"
            )
        if not isinstance(self.use_vf, bool):
            raise ConfigError(f"use_vf must be true or false, got {self.use_vf!r}")

    @property
    def resolved_patch_size(self) -> tuple[int, int, int]:
        return self.patch_size or tuple(RMR_PRESETS[self.preset]["patch_size"])

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def load_train_config(
    config: RMRTrainConfig | dict[str, Any] | str | Path | None = None, **overrides: Any
) -> RMRTrainConfig:
    """Build a config from a dataclass, a dict or a YAML file, plus keyword overrides.

    Unknown keys raise :class:`ConfigError` naming them.
    """
    if isinstance(config, RMRTrainConfig):
        values = asdict(config)
    elif isinstance(config, dict):
        values = dict(config)
    elif config is None:
        values = {}
    else:
        import yaml

        path = Path(config)
        if not path.is_file():
            raise InputError(path, "config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(path, f"invalid YAML ({str(exc).splitlines()[0]})") from exc
        if not isinstance(loaded, dict):
            raise InputError(path, "expected a mapping of option: value")
        values = loaded
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(RMRTrainConfig)}
    bad = sorted(set(values) - names)
    if bad:
        raise ConfigError(f"unknown RMR training option(s) {bad}; valid: {sorted(names)}")
    try:
        return RMRTrainConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"bad RMR training option: {exc}") from exc


#: conventions of runs saved before they were named (checkpoints without the keys)
LEGACY_CONVENTIONS = {"grad_convention": "unit", "tv_convention": "abs"}


def _q_img(a: torch.Tensor, b: torch.Tensor, cfg: RMRTrainConfig) -> torch.Tensor:
    tv = total_variation(a - b, cfg.tv_convention)
    loss = cfg.mse_weight * F.mse_loss(a, b) + cfg.tv_weight * tv
    if cfg.ssim_weight:
        loss = loss + cfg.ssim_weight * (1.0 - ssim(a, b, data_range=1.0))
    return loss


def _q_feat(a: torch.Tensor, b: torch.Tensor, cfg: RMRTrainConfig) -> torch.Tensor:
    tv = total_variation(a - b, cfg.tv_convention)
    return cfg.mse_weight * F.mse_loss(a, b) + cfg.tv_weight * tv


def stage1_loss(
    net: RMRNet, clean: torch.Tensor, degraded: torch.Tensor, cfg: RMRTrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Two-level refinement loss ``L_TR = L_IR + alpha L_FR``.

    Args:
        clean, degraded: ``(B, M, D, H, W)`` in [0, 1].

    Returns:
        ``(loss, {"L_IR": ..., "L_FR": ...})``.
    """
    feats, feats_d = net.encode(clean), net.encode(degraded)  # M x (B, F, D, H, W)
    m = len(feats)
    l_ir = clean.new_zeros(())
    l_fr = clean.new_zeros(())
    for i in range(m):
        target = clean[:, i : i + 1]  # (B, 1, D, H, W)
        rec = net.decoder(torch.cat([feats[i], feats_d[i]], dim=0))  # (2B, 1, D, H, W)
        rec_clean, rec_deg = rec.chunk(2, dim=0)
        l_ir = l_ir + _q_img(rec_clean, target, cfg) + _q_img(rec_deg, target, cfg)
        l_fr = l_fr + _q_feat(feats_d[i], feats[i], cfg)
    l_ir, l_fr = l_ir / m, l_fr / m
    loss = l_ir + cfg.alpha * l_fr
    return loss, {"L_IR": float(l_ir.detach()), "L_FR": float(l_fr.detach())}


def stage2_loss(
    net: RMRNet, images: torch.Tensor, labels: torch.Tensor, target_index: int, cfg: RMRTrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mutual-reinforcing loss ``L_MF = L_VF + eta L_LS`` (encoders run without gradients);
    ``eta L_LS`` alone with ``cfg.use_vf = False`` (the decoder is then not run).

    Args:
        images: ``(B, M, D, H, W)`` in [0, 1]; labels ``(B, D, H, W)`` int64.
        target_index: channel of ``Y`` in ``||F - Y||_1``.

    Returns:
        ``(loss, {"L_VF": ..., "L_LS": ...})`` (no ``L_VF`` entry without it).
    """
    with torch.no_grad():
        feats = net.encode(images)
    fused_feats = net.fusion(feats)  # (B, F, D, H, W)
    fused = net.decoder(fused_feats) if cfg.use_vf else None  # (B, 1, D, H, W)
    logits = net.seg_head(fused_feats)  # (B, K, D, H, W)
    l_ls = soft_dice_loss(torch.softmax(logits, dim=1), labels, include_background=True)
    if fused is None:
        return cfg.eta * l_ls, {"L_LS": float(l_ls.detach())}
    y = images[:, target_index : target_index + 1]
    conv = cfg.grad_convention
    grad_src = gradient_magnitude(images, conv).amax(dim=1, keepdim=True)  # (B, 1, D, H, W)
    l_grad = F.l1_loss(gradient_magnitude(fused, conv), grad_src)
    l_vf = F.l1_loss(fused, y) + cfg.delta * l_grad
    loss = l_vf + cfg.eta * l_ls
    return loss, {"L_VF": float(l_vf.detach()), "L_LS": float(l_ls.detach())}


def build_model_dict(
    net: RMRNet, cfg: RMRTrainConfig, normalisation: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``model.pt`` dict of docs/architecture.md for an RMR network (method ``rmr3d``).

    ``fusion`` holds the encoders, decoder and fusion module (state-dict keys prefixed as in
    :class:`RMRNet`), ``segmentation`` the semantic head; ``fusion.config`` rebuilds the net.
    """
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    seg_state = {k: v for k, v in state.items() if k.startswith("seg_head.")}
    fusion_state = {k: v for k, v in state.items() if not k.startswith("seg_head.")}
    netcfg = config_dict(net)
    return {
        "format": "fuse4seg-model",
        "format_version": 1,
        "method": "rmr3d",
        "spatial_dims": 3,
        "modalities": list(cfg.modalities),
        "num_classes": net.config.num_classes,
        "input_size": int(net.config.patch_size[-1]),
        "patch_size": list(net.config.patch_size),
        "fusion": {"preset": cfg.preset, "config": netcfg, "state_dict": fusion_state},
        "fusion_rule": None,
        "segmentation": {
            "preset": cfg.preset,
            "in_channels": net.config.feature_channels,
            "config": {"name": net.config.seg_head, **netcfg},
            "state_dict": seg_state,
        },
        "normalisation": dict(normalisation or NORMALISATION),
        "train_config": cfg.to_dict(),
        "fuse4seg_version": __version__,
    }


def _stage_modules_params(net: RMRNet, stage: int) -> list[torch.nn.Parameter]:
    mods = net.stage1_modules() if stage == 1 else net.stage2_modules()
    return [p for mod in mods for p in mod.parameters()]


def _make_optimizer(net: RMRNet, stage: int, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(_stage_modules_params(net, stage), lr=lr)


def train_rmr_on_store(
    store: VolumeStore,
    run_dir: str | Path,
    config: RMRTrainConfig | dict[str, Any] | str | Path | None = None,
    device: str | torch.device = "auto",
    resume: bool = False,
    max_steps: int | None = None,
    log: Callable[[str], None] | None = print,
    where: str = "store",
    run_info: dict[str, Any] | None = None,
) -> Path:
    """Train RMR-Fusion on any :class:`VolumeStore`; returns the path of ``model.pt``.

    Args:
        store: data store (``PreparedStore`` or :class:`InMemoryVolumeStore`).
        run_dir: output folder, the common layout (:class:`~fuse4seg.train.run_folder.
            RunFolder`: ``config.yaml``, ``run_info.json``, ``metrics.jsonl``, ``last.pt``,
            ``model.pt``) plus ``stage1.pt`` (trained encoders and decoder).
        config: :class:`RMRTrainConfig`, dict or YAML path.
        device: ``auto``, ``cpu``, ``cuda``...
        resume: continue from ``run_dir/last.pt`` (error if absent).
        max_steps: cap on the steps of *each* stage (smoke runs).
        log: line printer (None = silent).
        where: name used in error messages for the store.
        run_info: extra entries for ``run_info.json``.

    Raises:
        InputError: a run folder that already holds a run (without ``resume``), no checkpoint
            to resume from, or a run folder of the older rmr3d layout (``checkpoint.pt``);
        ConfigError: bad options, or a resume with another network or convention.
    """
    cfg = load_train_config(config)
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    if not resume:
        folder.check_new()
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    say = log or (lambda _msg: None)
    steps = {1: cfg.stage1_steps, 2: cfg.stage2_steps}
    if max_steps is not None:
        steps = {k: min(v, int(max_steps)) for k, v in steps.items()}

    patch = cfg.resolved_patch_size
    sampler = PatchSampler(store, cfg.modalities, patch, cfg.split, cfg.tumour_fraction, where)
    target_index = list(cfg.modalities).index(cfg.visual_target)
    degrade = Degradation.preset(cfg.degradation)

    torch.manual_seed(cfg.seed)
    net = create_rmr_net(
        cfg.preset, len(cfg.modalities), seg_head=cfg.seg_head, patch_size=patch
    ).to(dev)
    stage, step = 1, 0
    ckpt_path = folder.last
    optimizer = _make_optimizer(net, 1, cfg.lr)
    if resume:
        if not ckpt_path.is_file() and (run_dir / LEGACY_CHECKPOINT_NAME).is_file():
            raise InputError(
                run_dir,
                f"an rmr3d run folder of the older layout ({LEGACY_CHECKPOINT_NAME}, log.jsonl, "
                f"train_config.json) cannot be resumed; this version resumes from "
                f"{CHECKPOINT_NAME}: start a new run folder",
            )
        if not ckpt_path.is_file():
            raise InputError(ckpt_path, "no checkpoint to resume from")
        ckpt = folder.load_checkpoint(map_location=dev)
        if ckpt.get("method") != "rmr3d":
            raise InputError(ckpt_path, "not an RMR-Fusion checkpoint")
        if ckpt["net_config"] != config_dict(net):
            raise ConfigError(f"{ckpt_path}: network config differs from the requested one")
        saved = {**LEGACY_CONVENTIONS, **ckpt.get("train_config", {})}
        for key in LEGACY_CONVENTIONS:
            if saved[key] != getattr(cfg, key):
                raise ConfigError(
                    f"{ckpt_path}: the run was trained with {key} {saved[key]!r}, the config "
                    f"asks for {getattr(cfg, key)!r}; set {key}: {saved[key]} to resume it"
                )
        net.load_state_dict(ckpt["model"])
        stage, step = int(ckpt["stage"]), int(ckpt["step"])
        if stage >= 2:
            net.freeze_stage1()
        optimizer = _make_optimizer(net, min(stage, 2), cfg.lr)
        optimizer.load_state_dict(ckpt["optimizer"])
        say(f"resumed from {ckpt_path} at stage {stage}, step {step}")
        at = (stage, step)  # the resumed run logs the later steps again
        folder.truncate_metrics(lambda r: (int(r.get("stage", 0)), int(r.get("step", 0))) <= at)
    if cfg.stage1_from is not None and not resume:
        stage1 = _read_stage1(Path(cfg.stage1_from), net)
        folder.create()
        save_torch_atomic(stage1, run_dir / STAGE1_NAME)
        stage, step = 2, 0
        net.freeze_stage1()
        optimizer = _make_optimizer(net, 2, cfg.lr)
        say(f"stage 1 skipped: encoders and decoder from {cfg.stage1_from}")
    folder.create().write_config(cfg.to_dict())
    folder.write_run_info("rmr3d", dev, resume, **(run_info or {}))

    def save_checkpoint() -> None:
        folder.save_checkpoint(
            {
                "method": "rmr3d",
                "stage": stage,
                "step": step,
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "net_config": config_dict(net),
                "train_config": cfg.to_dict(),
            }
        )

    while stage <= 2:
        net.train()
        t0 = time.perf_counter()
        while step < steps[stage]:
            rng = np.random.default_rng([cfg.seed, stage, step])
            images, labels = sampler.sample(cfg.batch_size, rng)
            images, labels = images.to(dev), labels.to(dev)
            if stage == 1:
                degraded = degrade(images.cpu(), int(rng.integers(2**31))).to(dev)
                loss, parts = stage1_loss(net, images, degraded, cfg)
            else:
                loss, parts = stage2_loss(net, images, labels, target_index, cfg)
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at stage {stage} step {step}: {parts}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % cfg.log_every == 0 or step == steps[stage]:
                dt = (time.perf_counter() - t0) / max(1, step)
                rec = {"stage": stage, "step": step, "loss": float(loss.detach()), **parts}
                folder.log_metrics(rec)
                terms = " ".join(
                    f"{k} {v:.4f}" for k, v in rec.items() if k not in ("stage", "step")
                )
                say(f"stage {stage} step {step}/{steps[stage]} {terms} ({dt:.2f} s/step)")
            if step % cfg.checkpoint_every == 0:
                save_checkpoint()
        if stage == 1:  # the trained autoencoder, reusable with other heads
            save_torch_atomic(
                {
                    "format": STAGE1_FORMAT,
                    "net_config": config_dict(net),
                    "state_dict": {
                        k: v.detach().cpu().clone()
                        for k, v in net.state_dict().items()
                        if k.startswith(("encoders.", "decoder."))
                    },
                },
                run_dir / STAGE1_NAME,
            )
        stage, step = stage + 1, 0
        if stage <= 2:
            net.freeze_stage1()
            optimizer = _make_optimizer(net, 2, cfg.lr)
        save_checkpoint()
    model = build_model_dict(net, cfg, _normalisation_of(store))
    out = folder.model
    save_torch_atomic(model, out)
    say(f"wrote {out}")
    return out


def _read_stage1(path: Path, net: RMRNet) -> dict[str, Any]:
    """Load a ``stage1.pt`` into ``net``'s encoders and decoder; returns the file's dict.

    Raises:
        InputError: missing, unreadable or not a stage-1 file, or an autoencoder of other sizes.
    """
    stage1 = load_tagged_torch(
        path,
        STAGE1_FORMAT,
        missing="stage1_from: file not found",
        unreadable="cannot read",
        foreign="not an RMR-Fusion stage1.pt",
        error=InputError,
    )
    own = {k: v for k, v in net.state_dict().items() if k.startswith(("encoders.", "decoder."))}
    theirs = stage1.get("state_dict") or {}
    if set(theirs) != set(own) or any(theirs[k].shape != v.shape for k, v in own.items()):
        raise InputError(
            path, "its encoders / decoder do not match this preset and modalities (other sizes)"
        )
    net.load_state_dict(theirs, strict=False)
    return stage1


def _normalisation_of(store: Any) -> dict[str, Any]:
    """Normalisation record for ``model.pt``: percentiles, the store's in-plane ``scale``
    (prediction from NIfTI resamples by it) and the store's own record, if any."""
    norm: dict[str, Any] = dict(NORMALISATION)
    manifest = getattr(store, "manifest", None)
    if isinstance(manifest, dict):
        norm["scale"] = float(manifest.get("scale", 1.0) or 1.0)  # store in-plane scale
        if "normalisation" in manifest:
            norm["store"] = manifest["normalisation"]
    return norm


def train_rmr(
    prep_dir: str | Path,
    run_dir: str | Path,
    config: RMRTrainConfig | dict[str, Any] | str | Path | None = None,
    device: str | torch.device = "auto",
    resume: bool = False,
    max_steps: int | None = None,
    log: Callable[[str], None] | None = print,
    fold: int | None = None,
) -> Path:
    """Train RMR-Fusion on a ``fuse4seg prepare`` store; returns the path of ``model.pt``.

    ``fold`` trains on cross-validation fold ``fold`` of the store's ``splits_final.json``
    (its training cases; its held-out cases are the ``val`` split, which rmr3d does not
    train on): the same patient split as ``fuse4seg train --fold`` of the 2D methods. See
    :func:`train_rmr_on_store` for the other arguments.
    """
    try:
        from fuse4seg.data import PreparedStore
    except ImportError as exc:  # pragma: no cover - depends on the data layer
        raise ConfigError("fuse4seg.data.PreparedStore is not available") from exc
    prep_dir = Path(prep_dir)
    if not prep_dir.is_dir():
        raise InputError(prep_dir, "prepared store folder not found (run `fuse4seg prepare`)")
    store = PreparedStore(prep_dir)
    info = {"prep_dir": str(prep_dir), "manifest_sha256": manifest_sha256(prep_dir)}
    if fold is not None:
        store = store.fold(fold)
        info["fold"] = fold
    return train_rmr_on_store(
        store, run_dir, config, device, resume, max_steps, log, str(prep_dir), info
    )
