"""The trained model file ``model.pt`` and the inference wrapper :class:`FusionSegModel`.

``model.pt`` is a plain dict (see ``docs/architecture.md``) that ``torch.load(path,
weights_only=True)`` reads: the method, modalities, the EMA leader (``fusion``) or a
classical ``fusion_rule``, the follower (``segmentation``), the prepare manifest's
normalisation and the training config.

The networks are rebuilt through three registries, filled by the packages that own the
networks (``register_...`` at import time; :mod:`fuse4seg.plugins` lists the packages of the
higher layers, imported the first time a name is unknown):

* segmentation archs, ``segmentation["arch"]`` -> ``from_config(dict) -> nn.Module``:
  ``"segnet"`` (:class:`~fuse4seg.models.SegNet`, also when the key is absent, registered
  here) and the MONAI backbones of :mod:`fuse4seg.models.backbones` (``"dynunet"``,
  ``"swinunetr"``; ``config`` = ``PaddedBackbone.config``);
* fusion archs, ``fusion["config"]["arch"]`` -> ``from_config``: absent =
  :class:`~fuse4seg.models.FusionNet` (registered here), ``"v1"`` (:mod:`fuse4seg.v1`);
* model loaders, ``method`` -> ``loader(data, path) -> nn.Module``, for methods whose model
  is not a :class:`FusionSegModel`: ``"rmr3d"`` (:mod:`fuse4seg.rmr`).

The follower's input is fixed by the file, as in training: the leader's fused image
(``fusion``), a classical ``fusion_rule`` (``average`` = the modality mean), or, with
neither, the M modalities as channels (``multichannel``).

Nothing in the file names a Python module or class, so moving code never breaks old files.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fuse4seg.errors import ModelFileError
from fuse4seg.fusion_rules import FUSION_RULES, apply_fusion_rule
from fuse4seg.io.atomic import load_tagged_torch, save_torch_atomic
from fuse4seg.plugins import load_plugins

from .fusion_net import FusionNet
from .seg_net import SegNet

__all__ = [
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "FusionSegModel",
    "save_model_file",
    "load_model_file",
    "check_model_values",
    "register_seg_arch",
    "register_fusion_arch",
    "register_model_loader",
    "seg_archs",
]

MODEL_FORMAT = "fuse4seg-model"
MODEL_FORMAT_VERSION = 1

NetFromConfig = Callable[[dict], nn.Module]
ModelLoader = Callable[[dict, Path], nn.Module]

#: ``segmentation["arch"]`` -> network from its config
_SEG_ARCHS: dict[str, NetFromConfig] = {}
#: ``fusion["config"]["arch"]`` -> network from its config (``None``: no ``arch`` key)
_FUSION_ARCHS: dict[str | None, NetFromConfig] = {}
#: ``method`` -> loader of the whole model, for methods that are no FusionSegModel
_MODEL_LOADERS: dict[str, ModelLoader] = {}


def _register(table: dict, kind: str, name: Any, value: Callable) -> None:
    if table.get(name, value) != value:
        raise ValueError(f"{kind} {name!r} is already registered")
    table[name] = value


def register_seg_arch(name: str, from_config: NetFromConfig) -> None:
    """Make ``segmentation["arch"] == name`` loadable: ``from_config(config)`` builds the
    (untrained) follower ``(B, C_in, H, W) -> logits``; the saved network must have
    ``.arch == name`` (absent: ``"segnet"``) and a ``.config``. Idempotent for the same
    function; ``ValueError`` if another one holds the name."""
    _register(_SEG_ARCHS, "segmentation arch", name, from_config)


def register_fusion_arch(name: str | None, from_config: NetFromConfig) -> None:
    """Make ``fusion["config"]["arch"] == name`` loadable (``None``: configs without an
    ``arch`` key); ``from_config(config)`` builds the leader ``(B, M, H, W) -> .fused``."""
    _register(_FUSION_ARCHS, "fusion arch", name, from_config)


def register_model_loader(method: str, loader: ModelLoader) -> None:
    """Load files of ``method`` with ``loader(data, path)`` instead of as a
    :class:`FusionSegModel` (``data``: the checked file dict; raise ``ModelFileError``)."""
    _register(_MODEL_LOADERS, "model loader", method, loader)


def _lookup(table: dict, name: Any) -> Callable | None:
    """``table[name]``, importing the plugin packages once if the name is unknown."""
    if name not in table:
        load_plugins()
    return table.get(name)


def seg_archs() -> tuple[str, ...]:
    """Every registered ``segmentation["arch"]`` (plugins included)."""
    load_plugins()
    return tuple(_SEG_ARCHS)


register_seg_arch("segnet", SegNet.from_config)
register_fusion_arch(None, FusionNet.from_config)


class FusionSegModel(nn.Module):
    """Fusion leader (or classical rule, or none) followed by the segmentation follower.

    Args:
        method: training method name (``fuse4seg``, ``average``, ``multichannel``, ...).
        modalities: input modality order, e.g. ``["t1ce", "flair"]``.
        seg_net: follower ``(B, C_in, H, W) -> logits (B, num_classes, H, W)``.
        fusion_net: leader ``(B, M, H, W) -> FusionOutput`` or ``None``.
        fusion_rule: classical rule (see :mod:`fuse4seg.fusion_rules`) when there is no
            leader; ``None`` with no leader means multichannel input.
        num_classes: number of classes of ``seg_net``.
        preprocessing: the prepare manifest's normalisation (scale, size, percentiles).
        input_size: in-plane size the networks were trained on.
        fusion_preset, seg_preset: preset names (stored in ``model.pt``).
        train_config: the resolved training config (plain dict).
    """

    spatial_dims = 2

    def __init__(
        self,
        method: str,
        modalities: list[str] | tuple[str, ...],
        seg_net: nn.Module,
        fusion_net: nn.Module | None = None,
        fusion_rule: str | None = None,
        num_classes: int = 4,
        preprocessing: dict | None = None,
        input_size: int | None = None,
        fusion_preset: str | None = None,
        seg_preset: str | None = None,
        train_config: dict | None = None,
    ) -> None:
        super().__init__()
        if fusion_net is not None and fusion_rule is not None:
            raise ValueError("give either fusion_net or fusion_rule, not both")
        self.method = method
        self.modalities = list(modalities)
        self.num_classes = int(num_classes)
        self.fusion_net = fusion_net
        self.fusion_rule = fusion_rule
        self.seg_net = seg_net
        self.preprocessing = dict(preprocessing or {})
        self.input_size = input_size
        self.fusion_preset = fusion_preset
        self.seg_preset = seg_preset
        self.train_config = dict(train_config or {})

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.num_modalities:
            raise ValueError(
                f"expected input (B, {self.num_modalities}, H, W) for modalities "
                f"{self.modalities}, got {tuple(x.shape)}"
            )

    def fuse(self, x: torch.Tensor) -> torch.Tensor | None:
        """Fused image ``(B, 1, H, W)`` in [0, 1] from ``x (B, M, H, W)``; ``None`` for
        methods without a fused image (multichannel)."""
        self._check(x)
        if self.fusion_net is not None:
            return self.fusion_net(x).fused
        if self.fusion_rule is not None:
            return apply_fusion_rule(self.fusion_rule, x)
        return None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``x (B, M, H, W)`` -> ``(fused (B, 1, H, W) | None, logits (B, C, H, W))``.

        A leader whose output carries a ``seg_input`` (fuse4seg-v1 without its
        reconstruction decoder: the fused embedding) feeds that to ``seg_net``."""
        if self.fusion_net is not None:
            self._check(x)
            out = self.fusion_net(x)
            seg_in = getattr(out, "seg_input", None)
            return out.fused, self.seg_net(out.fused if seg_in is None else seg_in)
        fused = self.fuse(x)
        logits = self.seg_net(x if fused is None else fused)
        return fused, logits


def _net_config(net: nn.Module) -> dict:
    cfg = getattr(net, "config", None)
    if cfg is None:
        raise ValueError(f"{type(net).__name__} has no .config; cannot be saved in model.pt")
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


def _segmentation_entry(model: FusionSegModel, in_channels: int) -> dict:
    """``segmentation`` of ``model.pt``: arch, preset, input channels, config, weights."""
    net = model.seg_net
    arch = getattr(net, "arch", "segnet")  # PaddedBackbone.arch: the backbone name
    if _lookup(_SEG_ARCHS, arch) is None:
        raise ValueError(f"{type(net).__name__} has arch {arch!r}; known: {seg_archs()}")
    entry = {
        "arch": arch,
        "preset": model.seg_preset or "",
        "in_channels": in_channels,
        "config": _net_config(net),
        "state_dict": net.state_dict(),
    }
    if arch != "segnet":
        if int(entry["config"].get("in_channels", -1)) != in_channels:
            raise ValueError(
                f"{arch} has {entry['config'].get('in_channels')} input channels, the "
                f"model's input has {in_channels}"
            )
        entry.update(getattr(net, "file_record", {}))  # e.g. monai_version, for the record
    return entry


def save_model_file(model: FusionSegModel, path: str | Path) -> None:
    """Write ``model`` as ``model.pt`` (plain dict, weights_only-loadable), atomically."""
    from fuse4seg import __version__

    fusion = None
    if model.fusion_net is not None:
        fusion = {
            "preset": model.fusion_preset or "",
            "config": _net_config(model.fusion_net),
            "state_dict": model.fusion_net.state_dict(),
        }
    in_channels = 1 if (model.fusion_net is not None or model.fusion_rule) else model.num_modalities
    in_channels = getattr(model.fusion_net, "seg_channels", in_channels)  # v1: fused embedding
    payload = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "method": model.method,
        "modalities": list(model.modalities),
        "num_classes": model.num_classes,
        "input_size": int(model.input_size) if model.input_size is not None else 0,
        "fusion": fusion,
        "fusion_rule": model.fusion_rule,
        "segmentation": _segmentation_entry(model, in_channels),
        "normalisation": model.preprocessing,
        "train_config": model.train_config,
        "fuse4seg_version": __version__,
    }
    save_torch_atomic(payload, path)


def _require(d: dict, key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in d:
        raise ModelFileError(path, f"not a fuse4seg model file (missing {key!r})")
    value = d[key]
    if not isinstance(value, kind):
        raise ModelFileError(path, f"corrupt model file ({key!r} has type {type(value).__name__})")
    return value


def _seg_arch(seg: dict, path: Path) -> tuple[str, NetFromConfig]:
    """``segmentation["arch"]``; files written before the key: ``config["backbone"]`` for the
    benchmark's backbones, else ``"segnet"``."""
    arch = seg.get("arch")
    if arch is None:
        cfg = seg.get("config")
        arch = cfg.get("backbone", "segnet") if isinstance(cfg, dict) else "segnet"
    if not isinstance(arch, str):
        raise ModelFileError(path, f"corrupt model file ('arch' has type {type(arch).__name__})")
    from_config = _lookup(_SEG_ARCHS, arch)
    if from_config is None:
        raise ModelFileError(
            path, f"unknown segmentation arch {arch!r} (known: {', '.join(seg_archs())})"
        )
    return arch, from_config


def _build_seg_net(
    arch: str, from_config: NetFromConfig, seg: dict, expected_in: int, path: Path
) -> nn.Module:
    config = seg["config"]
    if not isinstance(config, dict):
        raise ModelFileError(path, "corrupt model file ('segmentation' config is not a dict)")
    if arch == "segnet":
        return from_config(config)
    if config.get("backbone") != arch:
        found = config.get("backbone")
        raise ModelFileError(path, f"corrupt model file (arch {arch!r}, config backbone {found!r})")
    if config.get("in_channels") != expected_in:
        found = config.get("in_channels")
        raise ModelFileError(
            path, f"corrupt model file ({arch} takes {found} channels, the input has {expected_in})"
        )
    return from_config(config)


def _non_finite_numbers(value: Any, where: str) -> list[tuple[str, Any]]:
    """``(key path, value)`` of every NaN/Inf int-or-float in nested dicts and lists."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [] if math.isfinite(value) else [(where, value)]
    if isinstance(value, dict):
        return [b for k, v in value.items() for b in _non_finite_numbers(v, f"{where}.{k}")]
    if isinstance(value, (list, tuple)):
        return [b for i, v in enumerate(value) for b in _non_finite_numbers(v, f"{where}[{i}]")]
    return []


def _non_finite_tensors(value: Any, where: str) -> list[tuple[str, int]]:
    """``(key path, count)`` of every floating tensor with NaN/Inf values in nested dicts."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            bad = int((~torch.isfinite(value)).sum())
            return [(where, bad)] if bad else []
        return []
    if isinstance(value, dict):
        return [b for k, v in value.items() for b in _non_finite_tensors(v, f"{where}.{k}")]
    if isinstance(value, (list, tuple)):
        return [b for i, v in enumerate(value) for b in _non_finite_tensors(v, f"{where}[{i}]")]
    return []


def check_model_values(data: dict, path: Path) -> None:
    """Refuse a model file whose values cannot give a meaningful prediction.

    Checked at load time, before any input is read: ``modalities`` is a non-empty list of
    distinct names, every number of ``normalisation`` is finite, and every weight tensor is
    finite (a NaN weight would give all-background segmentations without an error).

    Raises:
        ModelFileError: naming the file and the first offending key.
    """
    modalities = data.get("modalities")
    if not isinstance(modalities, list) or not modalities:
        raise ModelFileError(path, f"model file lists no input modalities ({modalities!r})")
    if not all(isinstance(m, str) and m for m in modalities) or len(set(modalities)) != len(
        modalities
    ):
        raise ModelFileError(path, f"invalid input modalities {modalities!r}")
    bad_numbers = _non_finite_numbers(data.get("normalisation") or {}, "normalisation")
    if bad_numbers:
        key, value = bad_numbers[0]
        raise ModelFileError(path, f"{key} is {value} (normalisation values must be finite)")
    bad_tensors = _non_finite_tensors(
        {k: v for k, v in data.items() if k not in ("train_config", "normalisation")}, "model"
    )
    if bad_tensors:
        key, count = bad_tensors[0]
        more = f" (and {len(bad_tensors) - 1} more tensors)" if len(bad_tensors) > 1 else ""
        raise ModelFileError(
            path, f"weights {key[len('model.') :]} hold {count} NaN/Inf values{more}"
        )


def load_model_file(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load ``model.pt`` (``weights_only=True``) onto ``device`` in eval mode: a
    :class:`FusionSegModel`, or what the method's registered loader builds (for the 3D
    method ``rmr3d``: a :class:`fuse4seg.rmr.predict.RMRModel`, which offers
    ``predict_volume`` to :class:`fuse4seg.inference.Predictor`).

    Raises:
        ModelFileError: missing, truncated, foreign or incompatible file, no modalities,
            NaN/Inf weights or normalisation values (message names the file).
    """
    path = Path(path)
    data = load_tagged_torch(
        path,
        MODEL_FORMAT,
        missing="model file not found",
        unreadable="not a readable model file",
        foreign="not a fuse4seg model file",
    )
    version = data.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise ModelFileError(path, f"model format version {version} is not supported (expected 1)")
    check_model_values(data, path)
    method = _require(data, "method", str, path)
    loader = _lookup(_MODEL_LOADERS, method)
    model = _fusion_seg_model(data, path) if loader is None else loader(data, path)
    return model.to(torch.device(device)).eval()


def _fusion_seg_model(data: dict, path: Path) -> FusionSegModel:
    """The :class:`FusionSegModel` of a checked model-file dict."""
    modalities = _require(data, "modalities", list, path)
    seg = _require(data, "segmentation", dict, path)
    fusion = data.get("fusion")
    fusion_rule = data.get("fusion_rule")
    seg_arch, seg_from_config = _seg_arch(seg, path)
    fusion_from_config = None
    if fusion is not None:
        fusion_cfg = fusion.get("config") if isinstance(fusion, dict) else None
        if not isinstance(fusion_cfg, dict):
            raise ModelFileError(path, "corrupt model file ('fusion' has no config dict)")
        fusion_arch = fusion_cfg.get("arch")
        fusion_from_config = _lookup(_FUSION_ARCHS, fusion_arch)
        if fusion_from_config is None:
            known = ", ".join(sorted(str(a) for a in _FUSION_ARCHS if a is not None))
            raise ModelFileError(
                path, f"unknown fusion arch {fusion_arch!r} (known: {known}, or none)"
            )
    if fusion_rule is not None and (
        not isinstance(fusion_rule, str) or fusion_rule not in FUSION_RULES
    ):
        raise ModelFileError(
            path, f"unknown fusion_rule {fusion_rule!r} (known: {', '.join(FUSION_RULES)})"
        )
    try:
        expected_in = 1 if (fusion is not None or fusion_rule) else len(modalities)
        seg_net = _build_seg_net(seg_arch, seg_from_config, seg, expected_in, path)
        seg_net.load_state_dict(seg["state_dict"])
        fusion_net = None
        if fusion_from_config is not None:
            fusion_net = fusion_from_config(fusion["config"])
            fusion_net.load_state_dict(fusion["state_dict"])
    except ModelFileError:
        raise
    except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(path, f"incompatible network weights ({msg[:200]})") from exc
    return FusionSegModel(
        method=str(data["method"]),
        modalities=modalities,
        seg_net=seg_net,
        fusion_net=fusion_net,
        fusion_rule=fusion_rule,
        num_classes=int(data.get("num_classes", 4)),
        preprocessing=data.get("normalisation") or {},
        input_size=int(data.get("input_size") or 0) or None,
        fusion_preset=(fusion or {}).get("preset") or None,
        seg_preset=seg.get("preset") or None,
        train_config=data.get("train_config") or {},
    )
