"""Configuration of the first-version Fuse4Seg variant (``--method fuse4seg-v1``).

One typed dataclass :class:`V1Config` covers the network sizes, the pre-training stage and
the cooperative training stage. Presets are plain dicts of overrides:

* ``paper`` — paper 001, "Setup": pre-training 80 epochs, Adam lr 1e-4 halved every 20
  epochs, 224x224 random crops, batch 16; cooperative (fusion) stage 140 epochs with the
  same Adam schedule for the fusion network and discriminators, segmentation SGD lr 0.01,
  momentum 0.9, weight decay 1e-4. Network widths follow CDDFuse (dim 64, 8 heads). Eq. 13's
  gradient term on CDDFuse's convention (``grad_convention: cddfuse``).
* ``base`` — a CPU/GPU-friendly middle ground.
* ``tiny`` — for tests on CPU (dims 8, 32x32 crops, a couple of steps).

``base`` and ``tiny`` keep the ``unit`` gradient convention (their runs are unchanged).
Switches of the paper's ablations and options: ``gan_loss`` (``lsgan`` default, ``log`` =
eqs. 9-12 as written), ``cross_attention: false`` ("w/o cross-attention mechanism"),
``recon_decoder: false`` ("w/o Reconstruction Decoder": segmentation on the fused embedding).

Values the paper does not give (lambda, sigma of eq. 9, the eq. 6 weight of the fusion
loss, the adversarial weight of eq. 13, the discriminator sizes) are our choices and are
marked "(ours)".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fuse4seg.errors import ConfigError
from fuse4seg.losses.gradients import GRAD_CONVENTIONS

from .discriminator import GAN_LOSSES

__all__ = ["V1Config", "V1_PRESETS", "V1_LEGACY_DEFAULTS", "make_v1_config", "saved_v1_config"]

#: values of keys added after the first runs, for configs saved without them (resume)
V1_LEGACY_DEFAULTS: dict[str, Any] = {
    "grad_convention": "unit",
    "gan_loss": "lsgan",
    "cross_attention": True,
    "recon_decoder": True,
}


@dataclass
class V1Config:
    """Every setting of a ``fuse4seg-v1`` run (defaults = the ``base`` preset)."""

    preset: str = "base"
    modalities: tuple[str, ...] | None = None  # two modalities (None = first two of the store)

    # --- network (FusionNetV1) ------------------------------------------------------
    dim: int = 32  # feature channels C of the encoder branches
    heads: int = 4  # heads of the Restormer blocks and of the cross-attention
    shared_blocks: int = 2  # shared Restormer blocks of the encoder
    low_blocks: int = 1  # Restormer blocks of the low-frequency (transformer) branch
    high_blocks: int = 3  # invertible coupling nodes of the high-frequency branch
    decoder_blocks: int = 2  # Restormer blocks of the decoder
    downsample: int = 2  # encoder works at H/downsample (strided embed, pixel-shuffle up)
    attn_grid: int = 16  # token grid side of the cross-attention (see attention.py)
    cross_attention: bool = True  # False = ablation "w/o cross-attention mechanism"
    recon_decoder: bool = True  # False = ablation "w/o Reconstruction Decoder" (seg on embedding)
    disc_width: int = 16  # discriminator first-layer channels (ours)
    disc_depth: int = 3  # discriminator stride-2 layers (ours)
    seg_preset: str = "base"  # SegNet preset (fuse4seg.models), input = fused image

    # --- pre-training stage (eq. 9-12) -----------------------------------------------
    pretrain_epochs: int = 20
    pretrain_lr: float = 1e-4  # Adam, encoder/decoder and discriminators
    crop_size: int = 224  # random crops (paper: 224x224); slices smaller are used whole
    batch_size: int = 16
    adv_weight_pretrain: float = 0.1  # lambda of eq. 9 (ours)
    sigma: float = 0.5  # sigma of eq. 9 (ours)
    gan_loss: str = "lsgan"  # adversarial loss: lsgan (ours, default) or log (eqs. 9-12)

    # --- cooperative stage (eq. 6, 13, 14) -------------------------------------------
    coop_epochs: int = 40
    fusion_lr: float = 1e-4  # Adam, fusion network and discriminators
    lr_step_epochs: int = 20  # both Adam schedules: lr x lr_gamma every lr_step_epochs
    lr_gamma: float = 0.5
    seg_lr: float = 0.01  # SGD
    seg_momentum: float = 0.9
    seg_weight_decay: float = 1e-4
    follower_steps: int = 1  # lower-level (segmentation) steps per upper-level step (ours)
    fusion_weight: float = 1.0  # lambda of eq. 6: weight of L^f in the upper objective (ours)
    adv_weight_fusion: float = 0.1  # weight of the adversarial term of eq. 13 (ours)
    # Sobel term of eq. 13: unit (kernels / 8, L2: slope a -> a) or cddfuse (raw kernels,
    # |gx| + |gy|: 8a); see fuse4seg.losses.gradients
    grad_convention: str = "unit"
    ce_weight: float = 1.0  # alpha of eq. 14
    dice_weight: float = 1.0  # beta of eq. 14
    num_classes: int = 4

    # --- bookkeeping ------------------------------------------------------------------
    steps_per_epoch: int | None = None  # cap on batches per epoch (None = one pass)
    tumour_fraction: float | None = 0.75  # share of tumour slices in cooperative batches
    seed: int = 0
    log_every: int = 10

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON and ``torch.load(weights_only=True)`` safe)."""
        d = dataclasses.asdict(self)
        d["modalities"] = None if self.modalities is None else list(self.modalities)
        return d

    def validate(self) -> V1Config:
        """Check ranges; raise :class:`ConfigError` naming the bad key."""
        for key in (
            "dim", "heads", "shared_blocks", "low_blocks", "high_blocks", "decoder_blocks",
            "downsample", "attn_grid", "disc_width", "disc_depth", "crop_size", "batch_size",
            "lr_step_epochs", "follower_steps", "num_classes", "log_every",
        ):  # fmt: skip
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"config key {key!r} must be >= 1, got {getattr(self, key)}")
        for key in ("pretrain_epochs", "coop_epochs"):
            if int(getattr(self, key)) < 0:
                raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(self, key)}")
        if self.dim % self.heads or self.dim % 2:
            raise ConfigError(f"config key 'dim' ({self.dim}) must be even and divisible by heads")
        if self.downsample not in (1, 2, 4):
            raise ConfigError(f"config key 'downsample' must be 1, 2 or 4, got {self.downsample}")
        if self.crop_size % self.downsample:
            raise ConfigError(
                f"config key 'crop_size' ({self.crop_size}) must be divisible by downsample"
            )
        if not 0.0 <= self.sigma <= 1.0:
            raise ConfigError(f"config key 'sigma' must be in [0, 1], got {self.sigma}")
        for key in ("pretrain_lr", "fusion_lr", "seg_lr"):
            if float(getattr(self, key)) <= 0:
                raise ConfigError(f"config key {key!r} must be > 0, got {getattr(self, key)}")
        for key in (
            "adv_weight_pretrain", "adv_weight_fusion", "fusion_weight", "ce_weight",
            "dice_weight", "seg_weight_decay", "seg_momentum", "lr_gamma",
        ):  # fmt: skip
            if float(getattr(self, key)) < 0:
                raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(self, key)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(
                f"config key 'steps_per_epoch' must be >= 1, got {self.steps_per_epoch}"
            )
        if self.grad_convention not in GRAD_CONVENTIONS:
            raise ConfigError(
                f"config key 'grad_convention' must be one of {list(GRAD_CONVENTIONS)}, "
                f"got {self.grad_convention!r}"
            )
        if self.gan_loss not in GAN_LOSSES:
            raise ConfigError(
                f"config key 'gan_loss' must be one of {list(GAN_LOSSES)}, got {self.gan_loss!r}"
            )
        for key in ("cross_attention", "recon_decoder"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(
                    f"config key {key!r} must be true or false, got {getattr(self, key)!r}"
                )
        if self.modalities is not None and len(self.modalities) != 2:
            raise ConfigError(
                f"fuse4seg-v1 fuses exactly 2 modalities, got {list(self.modalities)}"
            )
        return self


#: Named presets: overrides of the dataclass defaults.
V1_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "dim": 64,
        "heads": 8,
        "shared_blocks": 4,
        "low_blocks": 1,
        "high_blocks": 3,
        "decoder_blocks": 4,
        "downsample": 1,
        "attn_grid": 16,
        "seg_preset": "paper",
        "pretrain_epochs": 80,
        "pretrain_lr": 1e-4,
        "crop_size": 224,
        "batch_size": 16,
        "coop_epochs": 140,
        "fusion_lr": 1e-4,
        "lr_step_epochs": 20,
        "lr_gamma": 0.5,
        "seg_lr": 0.01,
        "seg_momentum": 0.9,
        "seg_weight_decay": 1e-4,
        "grad_convention": "cddfuse",
    },  # fmt: skip
    "base": {},
    "tiny": {
        "dim": 8,
        "heads": 2,
        "shared_blocks": 1,
        "low_blocks": 1,
        "high_blocks": 1,
        "decoder_blocks": 1,
        "downsample": 2,
        "attn_grid": 8,
        "disc_width": 4,
        "disc_depth": 2,
        "seg_preset": "tiny",
        "pretrain_epochs": 1,
        "crop_size": 32,
        "batch_size": 2,
        "coop_epochs": 1,
        "steps_per_epoch": 2,
        "log_every": 1,
    },  # fmt: skip
}


def make_v1_config(preset: str = "base", overrides: dict[str, Any] | None = None) -> V1Config:
    """Build a validated :class:`V1Config` from a preset name and key-by-key overrides.

    Raises:
        ConfigError: unknown preset or key, or a value out of range.
    """
    if preset not in V1_PRESETS:
        raise ConfigError(
            f"unknown fuse4seg-v1 preset {preset!r}: choose from {sorted(V1_PRESETS)}"
        )
    values: dict[str, Any] = {**V1_PRESETS[preset], "preset": preset, **(overrides or {})}
    known = {f.name for f in dataclasses.fields(V1Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown fuse4seg-v1 config key(s) {unknown}; valid keys: {sorted(known)}"
        )
    if values.get("modalities") is not None:
        values["modalities"] = tuple(values["modalities"])
    return V1Config(**values).validate()


def saved_v1_config(saved: dict[str, Any]) -> V1Config:
    """Rebuild the :class:`V1Config` of a saved run (checkpoint or ``v1_config.json``).

    Keys added after the run was saved take the value that run used
    (:data:`V1_LEGACY_DEFAULTS`), not the preset's current one.
    """
    values = {**V1_LEGACY_DEFAULTS, **saved}
    return make_v1_config(values.get("preset", "base"), values)
