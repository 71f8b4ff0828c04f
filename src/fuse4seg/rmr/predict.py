"""RMR-Fusion inference: load ``model.pt`` and fuse + segment whole volumes (sliding window).

* :func:`load_rmr_model` -> :class:`RMRModel` (network + modalities + patch size).
* :func:`predict_volume` -- ``(M, D, H, W)`` in [0, 1] -> fused ``(D, H, W)`` float32 in [0, 1]
  and labels ``(D, H, W)`` uint8 (canonical 0 bg, 1 NCR, 2 ED, 3 ET), via
  ``monai.inferers.sliding_window_inference`` with the training patch as window.
* :meth:`RMRModel.predict_volume` -- NIfTI axes ``(1, M, X, Y, Z)``, the interface of
  :class:`fuse4seg.inference.Predictor`: ``fuse4seg predict`` (the one NIfTI predictor)
  reads, normalises and writes the volumes of rmr3d models as of every other method.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fuse4seg.device import resolve_device
from fuse4seg.errors import ModelFileError
from fuse4seg.io.atomic import load_tagged_torch
from fuse4seg.models.model_file import MODEL_FORMAT, register_model_loader
from fuse4seg.rmr.networks import RMRNet

__all__ = ["RMRModel", "load_rmr_model", "predict_volume", "sliding_window", "windows_per_pass"]

#: voxels per forward pass that :func:`windows_per_pass` aims at
VOXELS_PER_PASS = 2**17


def windows_per_pass(roi_size: Sequence[int]) -> int:
    """Default windows per forward pass: as many ``roi_size`` windows as fit in 2^17 voxels,
    at least 1 (8 for the ``tiny`` 16x32x32 patch, 1 from 32x64x64 up). Eval-mode networks
    give the same output per window whatever the batch; on 2 CPU threads a 137x120x120 volume
    took 38 s with 8 windows of 16x32x32 per pass, about 3.5x less than one at a time."""
    size = 1
    for r in roi_size:
        size *= int(r)
    return max(1, VOXELS_PER_PASS // size)


class RMRModel(nn.Module):
    """A trained RMR-Fusion network packaged for inference.

    Follows the model interface of ``fuse4seg.inference.Predictor``: attributes ``method``
    (``"rmr3d"``), ``modalities``, ``num_classes``, ``spatial_dims`` (3), ``preprocessing``, and
    :meth:`predict_volume` on NIfTI-axis volumes ``(1, M, X, Y, Z)``.
    """

    method = "rmr3d"
    spatial_dims = 3

    def __init__(
        self,
        net: RMRNet,
        modalities: Sequence[str],
        model_dict: dict[str, Any] | None = None,
        overlap: float = 0.25,
    ) -> None:
        super().__init__()
        self.net = net
        self.modalities = list(modalities)
        self.num_classes = net.config.num_classes
        self.patch_size = tuple(net.config.patch_size)
        self.model_dict = model_dict or {}
        self.preprocessing = dict(self.model_dict.get("normalisation") or {})
        self.overlap = overlap

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, M, D, H, W) -> ``(fused (B, 1, D, H, W), logits (B, K, D, H, W))``."""
        out = self.net(x)
        return out.fused, out.logits

    def predict(
        self, images: np.ndarray | torch.Tensor, **kwargs: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`predict_volume` on store-layout ``(M, D, H, W)`` with this model's patch."""
        kwargs.setdefault("roi_size", self.patch_size)
        kwargs.setdefault("overlap", self.overlap)
        return predict_volume(self.net, images, **kwargs)

    @property
    def scale(self) -> float:
        """In-plane scale of the training store (NIfTI input is resampled by it)."""
        return float(self.preprocessing.get("scale", 1.0) or 1.0)

    def _run(self, vol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``vol`` (1, M, Z, X, Y) at native resolution -> fused, probabilities, same grid."""
        size = tuple(vol.shape[2:])
        if self.scale != 1.0:
            scaled = (size[0], round(size[1] * self.scale), round(size[2] * self.scale))
            vol = F.interpolate(vol, size=scaled, mode="trilinear", align_corners=False)
        fused, logits = sliding_window(self.net, vol, self.patch_size, self.overlap)
        probs = torch.softmax(logits, dim=1)
        if self.scale != 1.0:
            fused = F.interpolate(fused, size=size, mode="trilinear", align_corners=False)
            probs = F.interpolate(probs, size=size, mode="trilinear", align_corners=False)
        return fused, probs

    @torch.no_grad()
    def predict_volume(
        self, x: torch.Tensor, tta: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """NIfTI axes ``(1, M, X, Y, Z)`` -> fused ``(1, 1, X, Y, Z)``, probabilities
        ``(1, K, X, Y, Z)``; in-plane resampling by the store's ``scale`` and back; ``tta``
        averages over flips of X, Y and both."""
        vol = x.permute(0, 1, 4, 2, 3).float()  # (1, M, Z, X, Y): depth = axial axis
        flips: list[tuple[int, ...]] = [()] + ([(-1,), (-2,), (-2, -1)] if tta else [])
        fused_sum, prob_sum = None, None
        for dims in flips:
            xi = torch.flip(vol, dims) if dims else vol
            fused, probs = self._run(xi)
            if dims:
                fused, probs = torch.flip(fused, dims), torch.flip(probs, dims)
            fused_sum = fused if fused_sum is None else fused_sum + fused
            prob_sum = probs if prob_sum is None else prob_sum + probs
        fused = (fused_sum / len(flips)).clamp(0, 1).permute(0, 1, 3, 4, 2)  # (1, 1, X, Y, Z)
        probs = (prob_sum / len(flips)).permute(0, 1, 3, 4, 2)  # (1, K, X, Y, Z)
        return fused.to(x.device), probs.to(x.device)


def load_rmr_model(path: str | Path, device: str | torch.device = "cpu") -> RMRModel:
    """Load an ``rmr3d`` ``model.pt`` (``torch.load(weights_only=True)``) onto ``device``.

    Raises:
        ModelFileError: missing/unreadable file, not a fuse4seg model, or another method.
    """
    path = Path(path)
    md = load_tagged_torch(
        path,
        MODEL_FORMAT,
        missing="model file not found",
        unreadable="cannot read model file",
        foreign="not a fuse4seg model file",
    )
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return rmr_model_from_dict(md, path).to(dev).eval()


def rmr_model_from_dict(md: dict, path: str | Path) -> RMRModel:
    """Build the :class:`RMRModel` of an already loaded ``rmr3d`` model dict (on the CPU).

    Raises:
        ModelFileError: another method, or weights that do not match the stored config.
    """
    if md.get("method") != "rmr3d":
        raise ModelFileError(path, f"method is {md.get('method')!r}, expected 'rmr3d'")
    try:
        net = RMRNet.from_config(md["fusion"]["config"])
        state = {**md["fusion"]["state_dict"], **md["segmentation"]["state_dict"]}
        net.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ModelFileError(path, f"weights do not match the config ({str(exc)[:200]})") from None
    return RMRModel(net, md["modalities"], md)


@torch.no_grad()
def predict_volume(
    net: RMRNet,
    images: np.ndarray | torch.Tensor,
    roi_size: Sequence[int] | None = None,
    overlap: float = 0.25,
    sw_batch_size: int | None = None,
    mode: str = "gaussian",
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse and segment a whole volume by sliding-window inference.

    Args:
        net: an :class:`RMRNet` (put in eval mode here).
        images: ``(M, D, H, W)`` intensities in [0, 1], modalities in the model's order.
        roi_size: window ``(d, h, w)`` (default the network's training patch); volumes smaller
            than the window are padded and the result cropped back.
        overlap: fraction of window overlap (0.25 default; larger is smoother but slower).
        sw_batch_size: windows per forward pass (default :func:`windows_per_pass`).
        mode: blending of overlapping windows, ``"gaussian"`` or ``"constant"``.
        device: where to run (default: the network's device); the volume stays on the CPU.

    Returns:
        ``(fused (D, H, W) float32, labels (D, H, W) uint8)``.
    """
    if isinstance(images, np.ndarray):
        x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    else:
        x = images.float()
    m = net.config.num_modalities
    if x.ndim != 4 or x.shape[0] != m:
        raise ValueError(f"images must be (M={m}, D, H, W), got {tuple(x.shape)}")
    roi = tuple(int(r) for r in (roi_size or net.config.patch_size))
    fused, logits = sliding_window(net, x[None], roi, overlap, sw_batch_size, mode, device)
    fused_np = fused[0, 0].clamp(0, 1).numpy().astype(np.float32)
    labels = logits[0].argmax(dim=0).numpy().astype(np.uint8)
    return fused_np, labels


@torch.no_grad()
def sliding_window(
    net: RMRNet,
    x: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.25,
    sw_batch_size: int | None = None,
    mode: str = "gaussian",
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (1, M, D, H, W) -> ``(fused (1, 1, D, H, W), logits (1, K, D, H, W))`` on x's device.

    Windows of ``roi_size`` run on ``device`` (default the network's), ``sw_batch_size`` per
    pass (default :func:`windows_per_pass`); overlaps are blended with ``mode`` weights
    (``monai.inferers.sliding_window_inference``). All-zero windows share one forward pass
    (same input, same output).
    """
    from monai.inferers import sliding_window_inference

    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    net.eval()

    def forward(window: torch.Tensor) -> torch.Tensor:
        out = net(window.to(dev))
        return torch.cat([out.fused, out.logits], dim=1)  # (b, 1 + K, *roi)

    empty: list[torch.Tensor] = []  # the output of an all-zero window, computed once

    def run(window: torch.Tensor) -> torch.Tensor:
        # Windows that hold only zeros (outside a skull-stripped brain: about 30 % of the
        # 16x32x32 windows of a 120x120 BraTS volume) all give the same output: computed once.
        blank = window.flatten(1).abs().amax(dim=1) == 0  # (b,)
        if not bool(blank.any()):
            return forward(window)
        if not empty:
            empty.append(forward(torch.zeros_like(window[:1])))
        out = empty[0].expand(window.shape[0], *empty[0].shape[1:]).clone()
        if not bool(blank.all()):
            out[~blank.to(out.device)] = forward(window[~blank])
        return out

    res = sliding_window_inference(
        x,
        roi_size=tuple(int(r) for r in roi_size),
        sw_batch_size=sw_batch_size or windows_per_pass(roi_size),
        predictor=run,
        overlap=overlap,
        mode=mode,
        sw_device=dev,
        device=x.device,
    )  # (1, 1 + K, D, H, W)
    return res[:, :1], res[:, 1:]


# plugin registration (fuse4seg.plugins): load_model_file builds rmr3d files with this loader
register_model_loader("rmr3d", rmr_model_from_dict)
