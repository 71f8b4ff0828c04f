"""Slice fusers for the exports: classical rules and the fusion network of a ``model.pt``.

A :class:`~fuse4seg.benchmark.export_brats_fuse.SliceFuser` maps ``(B, m, H, W)`` in ``[0, 1]``
to ``(B, 1, H, W)``. :func:`volume_fuser` turns one into the whole-volume fuser the nnU-Net
export takes (axial slices, empty slices left 0).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fuse4seg.benchmark.export_brats_fuse import SliceFuser, fuse_slices, select_slices
from fuse4seg.benchmark.volumes import VolumeCase
from fuse4seg.errors import ConfigError, InputError
from fuse4seg.fusion_rules import FUSION_RULES, get_fusion_rule

__all__ = ["rule_slice_fuser", "model_slice_fuser", "raw_normaliser", "volume_fuser"]


def rule_slice_fuser(name: str) -> SliceFuser:
    """The classical rule ``name`` (average, max, laplacian, dwt, pca): any combination."""
    if name not in FUSION_RULES:
        raise ConfigError(f"unknown fusion rule {name!r}; choose from {sorted(FUSION_RULES)}")
    return SliceFuser(name=name, fuse=get_fusion_rule(name), modalities=None)


def model_slice_fuser(
    model_path: str | Path,
    device: torch.device | str = "cpu",
    name: str | None = None,
    rescale: bool = True,
) -> tuple[SliceFuser, torch.nn.Module]:
    """The fusion network of a trained model file; supports only the model's modalities.

    Args:
        model_path: ``model.pt``.
        device: torch device.
        name: fuser name (default: the model's method).
        rescale: slices are at the original resolution (a BraTS folder): resample them by
            the model's ``preprocessing["scale"]`` and back, as :class:`Predictor` does.
            False for slices of a prepared store, already at the training resolution.

    Returns:
        ``(fuser, model)``; the model is the loaded :class:`FusionSegModel`.

    Raises:
        ModelFileError / InputError: unreadable file, or a method without a fused image.
    """
    from fuse4seg.inference.predictor import Predictor
    from fuse4seg.models.model_file import load_model_file

    dev = torch.device(device)
    model = load_model_file(model_path, dev)
    modalities = tuple(getattr(model, "modalities", ()) or ())
    if not modalities:
        raise InputError(model_path, "model file lists no modalities")
    predictor = Predictor(model, device=dev)
    if not rescale:
        predictor.scale = 1.0

    def fuse(x: torch.Tensor) -> torch.Tensor:
        fused, _ = predictor.predict_slices(x.float())
        if fused is None:
            raise InputError(
                model_path, f"method {getattr(model, 'method', '?')!r} produces no fused image"
            )
        return fused.float().clamp(0.0, 1.0).cpu()

    fuse(torch.zeros(1, len(modalities), 16, 16))  # fail early for a method without fusion
    label = name or str(getattr(model, "method", None) or "model")
    return SliceFuser(name=label, fuse=fuse, modalities=modalities), model


def raw_normaliser(model: torch.nn.Module | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Normalisation of one raw modality volume ``(X, Y, Z)`` as ``fuse4seg prepare`` does it:
    with the model's recorded preprocessing, or the prepare defaults without a model."""
    preprocessing = dict(getattr(model, "preprocessing", None) or {})

    def normalise(volume: np.ndarray) -> np.ndarray:
        from fuse4seg.data.normalise import normalise_for_model

        return np.asarray(normalise_for_model(volume, preprocessing), dtype=np.float32)

    return normalise


def volume_fuser(
    fuser: SliceFuser,
    normalise: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 16,
) -> Callable[[VolumeCase], np.ndarray]:
    """Whole-volume fuser: ``VolumeCase`` (images ``(M, X, Y, Z)``) -> ``(X, Y, Z)`` float32.

    Raw volumes (BraTS folder) are normalised with ``normalise`` first; a prepared store's are
    used as they are. Slices where every modality is 0 (outside the brain) stay 0.
    """

    def run(case: VolumeCase) -> np.ndarray:
        if fuser.modalities is not None and tuple(case.modalities) != tuple(fuser.modalities):
            raise InputError(
                None,
                f"{case.case_id}: model fuses {list(fuser.modalities)}, the export has "
                f"{list(case.modalities)} (pass --modalities {' '.join(fuser.modalities)})",
            )
        images = case.images
        if not case.normalised:
            images = np.stack([normalise(v) for v in images]).astype(np.float32)
        zs = select_slices(images, None, "brain")
        out = np.zeros(images.shape[1:], dtype=np.float32)
        if zs:
            out[..., zs] = fuse_slices(fuser.fuse, images, zs, batch_size).transpose(1, 2, 0)
        return out

    return run
