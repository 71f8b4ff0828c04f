"""Prediction on BraTS NIfTI volumes: fused image and segmentation for a whole case.

:class:`Predictor` wraps a trained model (``fuse4seg.models.model_file.load_model_file``) with
the attributes ``method``, ``modalities``, ``num_classes``, ``spatial_dims`` and
``preprocessing`` and the method ``forward(x (B, M, H, W)) -> (fused (B, 1, H, W) | None,
logits (B, C, H, W))``. For each case it

1. loads the model's modalities (checked: shapes, affines, NaN, all-zero, corrupt files),
2. normalises each modality exactly as ``fuse4seg prepare`` did for training,
3. takes axial slices ``vol[:, :, z]`` as ``(H, W) = (X, Y)``, skips slices with no brain
   (background label, fused 0), rescales in-plane by ``preprocessing["scale"]``, zero-pads
   to a multiple of 16, runs the model in batches (AMP on CUDA), optionally averages the
   softmax probabilities (and fused images) over flips (``tta``),
4. resamples logits and fused images back to the original in-plane size (bilinear), takes
   the softmax/argmax, and returns volumes with the input's exact shape.

A model may supply its own volume-level prediction (3D methods) with
``predict_volume(x (1, M, X, Y, Z), tta: bool) -> (fused (1, 1, X, Y, Z) | None,
probabilities (1, C, X, Y, Z))``; the Predictor then uses it instead of the slice loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fuse4seg.data import (
    LABEL_NAMES,
    BratsCase,
    LoadedCase,
    discover_cases,
    from_canonical_labels,
    load_case,
)
from fuse4seg.data.normalise import normalise_for_model
from fuse4seg.data.preprocess import brain_mask, resample_slices
from fuse4seg.device import autocast_dtype, resolve_device
from fuse4seg.errors import ConfigError, InputError
from fuse4seg.metrics.segmentation import BRATS_CLASSES, column, dice_scores
from fuse4seg.models import crop_to, zero_pad_to_multiple

__all__ = ["CasePrediction", "Predictor", "dice_per_region", "prepare_normaliser"]

#: ``f(volume (X, Y, Z), brain mask (X, Y, Z), preprocessing dict) -> normalised volume``
Normaliser = Callable[[np.ndarray, np.ndarray, dict], np.ndarray]


@dataclass
class CasePrediction:
    """Prediction for one case; arrays have the input's shape ``(X, Y, Z)``.

    Attributes:
        case: the case predicted.
        seg: uint8 canonical labels (0 bg, 1 NCR, 2 ED, 3 ET).
        fused: float32 fused volume in ``[0, 1]``, or None for methods without a fused image.
        probabilities: float32 ``(X, Y, Z, C)`` softmax probabilities (classes last, canonical
            order), when requested.
        affine, header: geometry of the reference (first) modality, for writing outputs.
        reference: the case's own canonical segmentation, when it has one.
        seg_problem: why the case's segmentation could not be used for scoring, if so.
        label_warning: why the prediction looks wrong (nearly all one class), if it does
            (:func:`label_warning`).
    """

    case: BratsCase
    seg: np.ndarray
    fused: np.ndarray | None
    probabilities: np.ndarray | None
    affine: np.ndarray
    header: Any
    reference: np.ndarray | None = None
    seg_problem: str | None = None
    label_warning: str | None = None

    @property
    def seg_in_file_convention(self) -> np.ndarray:
        """Labels in the input's convention (ET = 4 for 2018-2022 naming, 3 for 2023)."""
        return from_canonical_labels(self.seg, self.case.et_label)

    def dice(self) -> dict[str, float] | None:
        """Dice per region (WT, TC, ET) and per label (NCR, ED, ET) against the case's seg."""
        if self.reference is None:
            return None
        return dice_per_region(self.seg, self.reference)


def dice_per_region(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """3D Dice of canonical label volumes for WT, TC, ET, NCR, ED, keyed by class name
    (:func:`fuse4seg.metrics.segmentation.dice_scores`: both empty counts as 1.0)."""
    order = ("WT", "TC", "ET", "NCR", "ED")  # regions first, then the other labels
    scores = dice_scores(pred, ref, {name: BRATS_CLASSES[name] for name in order})
    return {name: scores[column("Dice", name)] for name in order}


#: A label covering more of the brain than this is flagged: a whole tumour (WT) rarely fills a
#: third of the brain in BraTS; half is a sign of wrong inputs (modality order, contrast, scale).
MAX_LABEL_SHARE = 0.5


def label_warning(seg: np.ndarray, brain: np.ndarray) -> str | None:
    """Why a canonical label volume looks wrong, or ``None``: nothing but background inside
    the brain, or one tumour label over ``MAX_LABEL_SHARE`` of the brain's voxels.

    Args:
        seg: uint8 canonical labels ``(X, Y, Z)``; brain: bool ``(X, Y, Z)``.
    """
    n_brain = int(np.count_nonzero(brain))
    if n_brain == 0:
        return "the inputs have no brain voxels (every modality is zero)"
    inside = seg[brain]
    if not np.any(inside):
        return "no tumour predicted: every brain voxel is background"
    counts = np.bincount(inside.ravel(), minlength=len(LABEL_NAMES))
    for label in range(1, len(LABEL_NAMES)):
        share = counts[label] / n_brain
        if share > MAX_LABEL_SHARE:
            return (
                f"{LABEL_NAMES[label]} covers {100 * share:.0f}% of the brain "
                "(check the modalities, their order and the model's training data)"
            )
    return None


def _argmax_channels(p: torch.Tensor) -> torch.Tensor:
    """``argmax`` over dim 1 of ``(N, C, H, W)`` -> uint8 ``(N, H, W)`` (first max wins).

    C element-wise passes; several times faster on CPU than ``torch.argmax(dim=1)``.
    """
    best = p[:, 0].clone()
    idx = torch.zeros(best.shape, dtype=torch.uint8, device=p.device)
    for c in range(1, p.shape[1]):
        better = p[:, c] > best
        idx[better] = c
        best = torch.maximum(best, p[:, c])
    return idx


def prepare_normaliser(volume: np.ndarray, mask: np.ndarray, preprocessing: dict) -> np.ndarray:
    """The normalisation of ``fuse4seg prepare``: percentile clip of the brain, scale to [0, 1]."""
    return normalise_for_model(volume, preprocessing, mask)


class Predictor:
    """Segment and fuse whole BraTS cases with a trained model.

    Args:
        model: a loaded fuse4seg model (see the module docstring).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``... or a ``torch.device``.
        batch_size: slices per forward pass.
        tta: average softmax probabilities (and fused images) over flips of H, W and both.
        amp: mixed precision on CUDA (bf16 where supported); ignored on CPU.
        keep_probabilities: return the ``(X, Y, Z, C)`` probabilities.
        skip_empty: do not run slices without brain (all modalities zero).
        normaliser: ``f(volume (X, Y, Z), brain mask, preprocessing) -> normalised volume``;
            default :func:`prepare_normaliser` (the normalisation of ``fuse4seg prepare``).
        pad_multiple: in-plane zero padding multiple before the networks.
        mask_fused: set the fused volume to 0 outside the brain (voxels where every modality
            is 0): no grey frame or bands around a slice that holds a few brain voxels.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "auto",
        batch_size: int = 16,
        tta: bool = False,
        amp: bool = True,
        keep_probabilities: bool = False,
        skip_empty: bool = True,
        normaliser: Normaliser | None = None,
        pad_multiple: int = 1,
        mask_fused: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval()
        self.modalities = tuple(model.modalities)
        self.num_classes = int(model.num_classes)
        self.preprocessing = dict(getattr(model, "preprocessing", None) or {})
        self.scale = float(self.preprocessing.get("scale", 1.0) or 1.0)
        if not 0.0 < self.scale <= 4.0:
            raise ConfigError(f"model preprocessing scale must be in (0, 4], got {self.scale}")
        self.batch_size = batch_size
        self.mask_fused = mask_fused
        self.tta = tta
        self.amp_dtype = autocast_dtype(self.device, amp)
        self.keep_probabilities = keep_probabilities
        self.skip_empty = skip_empty
        self.normaliser = normaliser or prepare_normaliser
        self.pad_multiple = pad_multiple

    # -- public API --------------------------------------------------------------------------

    def predict_case(self, case: str | Path | BratsCase) -> CasePrediction:
        """Load (with checks) and predict one case (a case folder or a :class:`BratsCase`).

        Raises:
            InputError: missing modality the model needs, mismatching shapes/affines, corrupt
                file, NaN voxels, all-zero modality, not exactly one case in the folder.
        """
        if not isinstance(case, BratsCase):
            found = discover_cases(case)
            if len(found) != 1:
                raise InputError(case, f"expected one case folder, found {len(found)} cases")
            case = found[0]
        missing = [m for m in self.modalities if m not in case.files]
        if missing:
            have = ", ".join(sorted(case.files)) or "none"
            raise InputError(
                case.folder,
                f"model needs modalities {', '.join(self.modalities)}; missing "
                f"{', '.join(missing)} (case has {have})",
            )
        try:
            loaded = load_case(case, self.modalities)
        except InputError as exc:
            # The seg is optional for prediction: a bad seg is only not scored.
            if case.seg is None or exc.path != Path(case.seg):
                raise
            loaded = load_case(case, self.modalities, seg=False)
            pred = self.predict_loaded(loaded)
            pred.seg_problem = str(exc)
            return pred
        return self.predict_loaded(loaded)

    def predict_loaded(self, loaded: LoadedCase) -> CasePrediction:
        """Predict a case already loaded with :func:`fuse4seg.data.load_case`."""
        vols = [loaded.images[m] for m in self.modalities]
        brain = brain_mask(vols)  # (X, Y, Z)
        norm = np.stack(
            [np.asarray(self.normaliser(v, brain, self.preprocessing), np.float32) for v in vols]
        )  # (M, X, Y, Z)
        if norm.shape[1:] != brain.shape:
            raise RuntimeError(f"normaliser changed the volume shape to {norm.shape[1:]}")
        if hasattr(self.model, "predict_volume"):
            fused, probs_cf = self._predict_volume(norm)  # probs (C, X, Y, Z)
            seg = probs_cf.argmax(axis=0).astype(np.uint8)
            probs = np.moveaxis(probs_cf, 0, -1) if self.keep_probabilities else None
        else:
            fused, seg, probs = self._predict_slices(norm, brain)
        if fused is not None and self.mask_fused:  # background stays 0 outside the brain
            fused = np.where(brain, fused, np.float32(0.0)).astype(np.float32, copy=False)
        return CasePrediction(
            case=loaded.case,
            seg=seg,
            fused=fused,
            probabilities=probs,
            affine=loaded.affine,
            header=loaded.header,
            reference=loaded.seg,
            label_warning=label_warning(seg, brain),
        )

    @torch.inference_mode()
    def predict_slices(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Run the 2D model on normalised slices at their original in-plane size.

        The slices are resampled by the model's ``scale`` as ``fuse4seg prepare`` did (block
        mean for ``scale = 1/k``, after zero-padding to multiples of k), run (with flips when
        ``tta``), and logits and fused images are resampled back bilinearly.

        Args:
            x: ``(N, M, H, W)`` float, normalised like the training store.

        Returns:
            ``fused (N, 1, H, W) | None`` and softmax ``probabilities (N, C, H, W)`` (float32,
            averaged over flips when ``tta``), on the predictor's device.
        """
        if x.ndim != 4 or x.shape[1] != len(self.modalities):
            raise ValueError(
                f"expected slices (N, {len(self.modalities)}, H, W), got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        x = x.to(self.device, torch.float32)
        k = self._block()
        if k > 1:
            x = zero_pad_to_multiple(x, k)  # zero = background, as prepare's crop keeps the brain
            out_size = tuple(x.shape[-2:])
            x = F.avg_pool2d(x, k)  # == prepare's k x k block mean
        elif self.scale != 1.0:
            out_size = (h, w)
            scaled, _ = resample_slices(x.cpu().numpy(), None, self.scale, self.num_classes)
            x = torch.from_numpy(scaled).to(self.device)
        else:
            out_size = (h, w)
        fused, probs = self._predict_scaled(x, out_size)
        fused = None if fused is None else crop_to(fused, (h, w))
        return fused, crop_to(probs, (h, w))

    def _predict_scaled(
        self, x: torch.Tensor, out_size: tuple[int, int]
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Slices at network resolution ``(N, M, h, w)`` -> outputs at ``out_size`` (with TTA)."""
        flips: list[tuple[int, ...]] = [()]
        if self.tta:
            flips += [(-1,), (-2,), (-2, -1)]
        fused_sum, prob_sum = None, None
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            fused, probs = self._forward(xi, out_size)
            if dims:
                probs = torch.flip(probs, dims)
                fused = None if fused is None else torch.flip(fused, dims)
            prob_sum = probs if prob_sum is None else prob_sum + probs
            if fused is not None:
                fused_sum = fused if fused_sum is None else fused_sum + fused
        probs = prob_sum / len(flips)
        fused = None if fused_sum is None else (fused_sum / len(flips)).clamp(0.0, 1.0)
        return fused, probs

    # -- internals ---------------------------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _forward(
        self, x: torch.Tensor, out_size: tuple[int, int]
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(N, M, h, w)`` -> fused ``(N, 1, H, W) | None``, probabilities ``(N, C, H, W)``."""
        inner = tuple(x.shape[-2:])
        xp = zero_pad_to_multiple(x.to(self.device, torch.float32), self.pad_multiple)
        with self._autocast():
            fused, logits = self.model(xp)
        logits = crop_to(logits.float(), inner)  # (N, C, h, w)
        if fused is not None:
            fused = crop_to(fused.float(), inner)  # (N, 1, h, w)
        if inner != out_size:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
            if fused is not None:
                fused = F.interpolate(fused, size=out_size, mode="bilinear", align_corners=False)
        return fused, torch.softmax(logits, dim=1)

    def _block(self) -> int:
        """Integer down-sampling factor ``k`` when ``scale == 1/k`` (block mean), else 1."""
        k = 1.0 / self.scale
        return int(round(k)) if abs(k - round(k)) < 1e-9 and round(k) >= 2 else 1

    def _predict_slices(
        self, norm: np.ndarray, brain: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        """Slice loop -> fused ``(X, Y, Z) | None``, seg ``(X, Y, Z)``, probs ``(X, Y, Z, C)``."""
        _, nx, ny, nz = norm.shape
        seg = np.zeros((nx, ny, nz), np.uint8)  # background where no slice is run
        probs = None
        if self.keep_probabilities:
            probs = np.zeros((nx, ny, nz, self.num_classes), np.float32)
            probs[..., 0] = 1.0
        fused_vol: np.ndarray | None = None
        if self.skip_empty:
            slices = [z for z in range(nz) if brain[:, :, z].any()]
        else:
            slices = list(range(nz))
        for start in range(0, len(slices), self.batch_size):
            zs = slices[start : start + self.batch_size]
            stack = np.ascontiguousarray(norm[:, :, :, zs].transpose(3, 0, 1, 2))  # (N, M, X, Y)
            fused, p = self.predict_slices(torch.from_numpy(stack))  # (N,1,X,Y), (N,C,X,Y)
            if p.shape[1] != self.num_classes:
                raise RuntimeError(f"model gave {p.shape[1]} classes, expected {self.num_classes}")
            seg[:, :, zs] = _argmax_channels(p).cpu().numpy().transpose(1, 2, 0)
            if probs is not None:
                probs[:, :, zs] = p.cpu().numpy().transpose(2, 3, 0, 1)  # (X, Y, N, C)
            if fused is not None:
                if fused_vol is None:
                    fused_vol = np.zeros((nx, ny, nz), np.float32)
                fused_vol[:, :, zs] = fused[:, 0].cpu().numpy().transpose(1, 2, 0)
        return fused_vol, seg, probs

    @torch.inference_mode()
    def _predict_volume(self, norm: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        x = torch.from_numpy(norm[None]).to(self.device)  # (1, M, X, Y, Z)
        with self._autocast():
            fused, probs = self.model.predict_volume(x, tta=self.tta)
        probs_np = probs[0].float().cpu().numpy()
        fused_np = None if fused is None else fused[0, 0].float().clamp(0, 1).cpu().numpy()
        return fused_np, probs_np
