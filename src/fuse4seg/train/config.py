"""The training configuration: one typed dataclass, named presets and YAML overrides.

``TrainConfig`` holds every knob of a run. Presets (``tiny``, ``base``, ``paper``) are plain
dicts of overrides; a YAML file overrides a preset key by key; unknown keys are errors.

Epoch / step accounting (see ``docs/training.md``):

* ``warmup_epochs`` epochs of stage 1 (one follower step per batch),
* ``rollout_epochs`` epochs of stage 2 (per batch: ``inner_steps`` = K follower steps and,
  for the bi-level method, one leader step),
* ``steps_per_epoch`` caps the batches of an epoch (``None``: one pass over the slices),
* ``max_steps`` (``--max-steps``) stops the run after that many optimiser steps (follower +
  leader), at the next batch boundary.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fuse4seg.errors import ConfigError

__all__ = [
    "TrainConfig",
    "PRESETS",
    "make_config",
    "apply_overrides",
    "load_yaml_overrides",
    "save_config",
]


@dataclass
class TrainConfig:
    """Every setting of a training run (defaults = the ``base`` preset)."""

    # --- what is trained -------------------------------------------------------------
    method: str = "fuse4seg"  # fuse4seg, disjoint, average, multichannel, rule-*, ... (methods.py)
    preset: str = "base"  # name of the preset these values started from
    bilevel: bool = True  # False = --no-bilevel: leader and follower trained jointly
    use_decomp: bool = True  # False = --no-decomp: alpha term dropped
    use_grad: bool = True  # False = --no-grad: beta term dropped
    use_ema: bool = True  # False = --no-ema: raw leader for validation and export
    # how the `disjoint` baseline trains its fuser: "cddfuse" (CDDFuse's two-phase objective,
    # fuse4seg.losses.cddfuse) or "regularisers" (alpha L_decomp + beta L_grad + gamma L_recon)
    disjoint_objective: str = "cddfuse"
    fusion_preset: str = "base"  # FusionNet preset (fuse4seg.models)
    # FusionNet config keys that override the fusion preset (e.g. {transfer_hidden: 16})
    fusion_overrides: dict[str, Any] | None = None
    # --method fuse4seg-v1 only: V1Config keys over its preset (e.g. {gan_loss: log,
    # cross_attention: false}); docs/v1.md
    v1_overrides: dict[str, Any] | None = None
    seg_preset: str = "base"  # SegNet preset (fuse4seg.models)
    num_classes: int = 4  # background, NCR, ED, ET

    # --- schedule (paper sec. 4.1: 40 warm-up + 120 rollout epochs, K = 5) ----------------
    warmup_epochs: int = 10  # stage 1: follower on the modality mean, leader frozen
    rollout_epochs: int = 30  # stage 2: asymmetric bi-level rollout
    inner_steps: int = 5  # K follower steps per leader step (per batch)
    leader_pretrain: bool = False  # stage 1 also trains the leader on fusion losses only
    steps_per_epoch: int | None = None  # cap on batches per epoch (None = full pass)
    max_steps: int | None = None  # stop after this many optimiser steps (smoke runs)

    # --- batches -------------------------------------------------------------------
    batch_size: int = 8  # slices per batch (per process under DDP)
    patients_per_batch: int = 2  # >= 2, so D_tr and D_val are both non-empty
    val_patient_fraction: float = 0.5  # share of a batch's patients that form D_val
    tumour_fraction: float | None = 0.75  # share of tumour slices in training (None = as is)
    augment: bool = True  # random flips / intensity jitter in SliceDataset
    num_workers: int = 0  # DataLoader workers

    # --- optimisation (AdamW, cosine) ----------------------------------------------------
    lr_leader: float = 1e-4  # fusion leader learning rate (eta_f)
    lr_follower: float = 3e-4  # segmentation follower learning rate (eta_s)
    weight_decay: float = 1e-5
    schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of the initial lr
    grad_clip: float = 0.0  # clip the global grad norm to this value (0 = off)
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)

    # --- losses (L_upper = L_seg + alpha L_decomp + beta L_grad + gamma L_recon) --------
    alpha: float = 1.0  # L_decomp weight
    beta: float = 5.0  # L_grad weight
    # L_grad's Sobel magnitude: "unit" (kernels / 8, L2: a ramp of slope a gives a) or
    # "cddfuse" (raw kernels, |gx| + |gy|, zero padding: 8a); docs/training.md
    grad_convention: str = "unit"
    gamma: float = 0.05  # L_recon weight
    info: float = 0.0  # L_info weight (information anchor; needs source_decoder_hidden > 0)
    # L_info's pixel weights: "uniform", or "rarity" (rare joint source intensities weigh
    # more: fuse4seg.losses.rarity_weights)
    info_weighting: str = "uniform"
    # L_sep weight (separation anchor: label classes apart in the fused intensities,
    # fuse4seg.losses.class_separation_loss; leader steps with labels only)
    sep: float = 0.0
    # L_floor weight (contrast floor: no tumour class less contrasted against healthy brain
    # than in x_avg, fuse4seg.losses.contrast_floor_loss; one-sided, leader steps with labels)
    contrast_floor: float = 0.0
    # L_floor's units: "healthy" (sd of healthy brain) or "pooled" (sd of healthy brain and
    # the class together, d': also asks that a class does not spread out)
    contrast_spread: str = "healthy"
    dice_weight: float = 1.0  # Dice term of L_seg
    ce_weight: float = 1.0  # cross-entropy term of L_seg
    class_weights: list[float] | None = None  # per-class Dice weights w_c (None = equal)
    # the class weights of L_seg inside the leader's L_upper (None = class_weights)
    leader_class_weights: list[float] | None = None
    # what L_seg's Dice term averages over: "classes" (NCR, ED, ET), "regions" (WT, TC, ET,
    # as nnU-Net trains BraTS) or "both" (mean of the two); leader_dice_over: the same inside
    # the leader's L_upper (None = dice_over)
    dice_over: str = "classes"
    leader_dice_over: str | None = None

    # --- EMA of the leader -------------------------------------------------------------
    ema_momentum: float = 0.99  # m in  theta_hat <- m theta_hat + (1 - m) theta
    ema_warmup: bool = False  # use min(m, (1 + t) / (10 + t)) for the t-th update

    # --- validation / logging --------------------------------------------------------
    val_every: int = 1  # validate every N epochs (and at the end)
    val_max_cases: int | None = None  # validate on at most this many validation cases
    seed: int = 0
    log_every: int = 10  # optimiser steps between metrics.jsonl lines
    tensorboard: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML/torch-weights_only safe)."""
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        """Check value ranges; raise :class:`ConfigError` naming the bad key."""
        for f in dataclasses.fields(self):  # NaN/Inf pass every range check below
            value = getattr(self, f.name)
            items = value if isinstance(value, (list, tuple)) else [value]
            for v in items:
                if isinstance(v, float) and not math.isfinite(v):
                    raise ConfigError(f"config key {f.name!r} must be a finite number, got {value}")
        _positive = ("batch_size", "inner_steps", "patients_per_batch", "val_every", "log_every")
        for key in _positive:
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"config key {key!r} must be >= 1, got {getattr(self, key)}")
        for key in ("warmup_epochs", "rollout_epochs", "num_workers"):
            if int(getattr(self, key)) < 0:
                raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(self, key)}")
        if self.patients_per_batch < 2:
            raise ConfigError(
                f"config key 'patients_per_batch' must be >= 2 (D_tr and D_val), "
                f"got {self.patients_per_batch}"
            )
        if self.patients_per_batch > self.batch_size:
            raise ConfigError(
                f"patients_per_batch ({self.patients_per_batch}) exceeds batch_size "
                f"({self.batch_size})"
            )
        if not 0.0 < self.val_patient_fraction < 1.0:
            raise ConfigError(
                f"config key 'val_patient_fraction' must be in (0, 1), "
                f"got {self.val_patient_fraction}"
            )
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ConfigError(
                f"config key 'ema_momentum' must be in [0, 1), got {self.ema_momentum}"
            )
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(
                f"config key 'schedule' must be cosine or constant, got {self.schedule!r}"
            )
        for key in ("lr_leader", "lr_follower"):
            if float(getattr(self, key)) <= 0:
                raise ConfigError(f"config key {key!r} must be > 0, got {getattr(self, key)}")
        for key in (
            "alpha",
            "beta",
            "gamma",
            "info",
            "sep",
            "contrast_floor",
            "weight_decay",
            "grad_clip",
            "min_lr_ratio",
        ):
            if float(getattr(self, key)) < 0:
                raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(self, key)}")
        if self.tumour_fraction is not None and not 0.0 <= self.tumour_fraction <= 1.0:
            raise ConfigError(
                f"config key 'tumour_fraction' must be in [0, 1] or null, "
                f"got {self.tumour_fraction}"
            )
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(
                f"config key 'steps_per_epoch' must be >= 1, got {self.steps_per_epoch}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"config key 'max_steps' must be >= 1, got {self.max_steps}")
        if self.info_weighting not in ("uniform", "rarity"):
            raise ConfigError(
                "config key 'info_weighting' must be 'uniform' or 'rarity', "
                f"got {self.info_weighting!r}"
            )
        from fuse4seg.losses import CONTRAST_SPREADS

        if self.contrast_spread not in CONTRAST_SPREADS:
            raise ConfigError(
                f"config key 'contrast_spread' must be one of {CONTRAST_SPREADS}, "
                f"got {self.contrast_spread!r}"
            )
        from fuse4seg.losses import DICE_OVER

        for key in ("dice_over", "leader_dice_over"):
            value = getattr(self, key)
            if value is not None and value not in DICE_OVER:
                raise ConfigError(f"config key {key!r} must be one of {DICE_OVER}, got {value!r}")
        from fuse4seg.losses import GRAD_CONVENTIONS

        if self.grad_convention not in GRAD_CONVENTIONS:
            raise ConfigError(
                f"config key 'grad_convention' must be one of {list(GRAD_CONVENTIONS)}, "
                f"got {self.grad_convention!r}"
            )
        if self.v1_overrides:  # unknown V1Config keys / values fail here
            from fuse4seg.v1.config import V1_PRESETS, make_v1_config

            make_v1_config(self.preset if self.preset in V1_PRESETS else "base", self.v1_overrides)
        if self.disjoint_objective not in ("cddfuse", "regularisers"):
            raise ConfigError(
                "config key 'disjoint_objective' must be 'cddfuse' or 'regularisers', "
                f"got {self.disjoint_objective!r}"
            )
        if self.warmup_epochs + self.rollout_epochs < 1:
            raise ConfigError("warmup_epochs + rollout_epochs must be >= 1")
        from fuse4seg.models.presets import FUSION_PRESETS, build_fusion_config

        if self.fusion_preset in FUSION_PRESETS:  # unknown keys / values fail here
            fusion = build_fusion_config(self.fusion_preset, **(self.fusion_overrides or {}))
            if self.info > 0 and not fusion.source_decoder_hidden:
                raise ConfigError(
                    f"config key 'info' ({self.info}) needs a leader with a source decoder "
                    "(fusion_overrides: {source_decoder_hidden: 16})"
                )
        return self


#: Named presets: overrides of the dataclass defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # Paper sec. 4.1: 40 warm-up + 120 rollout epochs, K = 5, AdamW 1e-5, cosine,
    # lr 1e-4 leader / 3e-4 follower, batch 8 with AMP, alpha 1, beta 5, gamma 0.05, m 0.99.
    "paper": {
        "fusion_preset": "paper",
        "seg_preset": "paper",
        "warmup_epochs": 40,
        "rollout_epochs": 120,
        "inner_steps": 5,
        "batch_size": 8,
        "lr_leader": 1e-4,
        "lr_follower": 3e-4,
        "weight_decay": 1e-5,
        "schedule": "cosine",
        "amp": True,
        "alpha": 1.0,
        "beta": 5.0,
        "grad_convention": "cddfuse",  # the CDDFuse code the paper builds on
        "gamma": 0.05,
        "ema_momentum": 0.99,
        "ema_warmup": False,
        "leader_pretrain": False,
        # the paper states no tumour-slice oversampling and no augmentation
        "tumour_fraction": None,
        "augment": False,
    },
    # Same algorithm, mid-size networks and a shorter schedule; the information anchor
    # L_info on (its leader has the source decoder): without it the leader collapsed onto
    # one modality in the cross-validation runs of docs/benchmarks.md.
    "base": {"info": 1.0},
    # CPU demo on the phantom: tiny networks, few short epochs, faster learning rates,
    # EMA with warm-up (few leader steps), K = 3. The warm-up must leave a follower that
    # already segments x_avg: the leader's semantic gradients come from it.
    "tiny": {
        "fusion_preset": "tiny",
        "seg_preset": "tiny",
        "warmup_epochs": 4,
        "rollout_epochs": 8,
        "inner_steps": 3,
        "steps_per_epoch": 16,
        "batch_size": 8,
        "lr_leader": 1e-3,
        "lr_follower": 3e-3,
        "min_lr_ratio": 0.1,
        "class_weights": [1.0, 2.0, 1.0, 2.0],
        "tumour_fraction": 0.9,
        "leader_pretrain": False,
        "grad_clip": 5.0,
        "info": 1.0,
        "ema_momentum": 0.9,
        "ema_warmup": True,
        "val_max_cases": 4,
        "log_every": 5,
    },
}


def _field_types() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """Check ``value`` against the type of the field's default (int/float/bool/str)."""
    if value is None:
        return None
    if isinstance(default, bool) or key in ("bilevel", "amp", "augment", "tensorboard"):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: key {key!r} must be true/false, got {value!r}")
        return value
    if key in ("fusion_overrides", "v1_overrides"):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            what = "FusionNet" if key == "fusion_overrides" else "fuse4seg-v1 (V1Config)"
            raise ConfigError(f"{source}: key {key!r} must be a mapping of {what} keys")
        return dict(value)
    if key in ("class_weights", "leader_class_weights"):
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{source}: key {key!r} must be a list of numbers, got {value!r}")
        return [float(v) for v in value]
    if isinstance(default, float) or key in ("tumour_fraction",):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: key {key!r} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, int) or key in ("steps_per_epoch", "max_steps", "val_max_cases"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: key {key!r} must be an integer, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{source}: key {key!r} must be a string, got {value!r}")
        return value
    return value


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any], source: str) -> TrainConfig:
    """Return a copy of ``cfg`` with ``overrides``; unknown keys raise :class:`ConfigError`."""
    fields = _field_types()
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown config key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(fields)}"
        )
    values = {}
    for key, value in overrides.items():
        values[key] = _coerce(key, value, getattr(cfg, key), source)
    return dataclasses.replace(cfg, **values)


def load_yaml_overrides(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of config overrides (raises InputError-style ConfigError)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of key: value")
    return data


def make_config(
    preset: str = "base",
    config_file: str | Path | None = None,
    **overrides: Any,
) -> TrainConfig:
    """Build a validated config: dataclass defaults <- preset <- YAML file <- ``overrides``.

    ``overrides`` whose value is ``None`` are ignored (CLI options that were not given).
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    cfg = apply_overrides(TrainConfig(), PRESETS[preset], f"preset {preset}")
    cfg = dataclasses.replace(cfg, preset=preset)
    if config_file is not None:
        file_values = load_yaml_overrides(config_file)
        cfg = apply_overrides(cfg, file_values, str(config_file))
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        cfg = apply_overrides(cfg, given, "command line")
    return cfg.validate()


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    import yaml

    from fuse4seg.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
