"""CDDFuse's training objective for a fusion network on its own (Zhao et al., CVPR 2023).

The disjoint baseline of Fuse4Seg (Table 1 "CDDFuse + Seg", Table 3's first row) is a fusion
network trained as its own paper trains it, then frozen. CDDFuse trains in two phases:

* **phase I** (autoencoder, the first 40 of 120 epochs): every source is encoded and decoded
  *alone* and must come back: per source ``MSE(x_hat, x) + 5 (1 - SSIM(x_hat, x)) / 2``, plus
  ``5 L1(grad x_hat, grad x)`` (normalised Sobel derivatives), plus ``2 L_decomp`` between the
  sources' features;
* **phase II** (fusion): ``L1(x_f, max_m x_m) + 10 L1(|Sobel x_f|, max_m |Sobel x_m|)`` with the
  ``cddfuse`` gradient convention (raw integer Sobel kernels, ``|g_x| + |g_y|``, zero padding:
  :func:`fuse4seg.losses.gradient_magnitude`), plus ``2 L_decomp``.

Differences from the reference code, kept on purpose: M sources instead of two (maxima and
means over all of them; phase I's gradient term on every source, not the visible one only)
and SSIM in ``valid`` mode (:func:`fuse4seg.losses.ssim`; the reference pads).
Shapes: fused / reconstructions ``(B, 1 or M, H, W)``, sources ``(B, M, H, W)``, in [0, 1].
"""

from __future__ import annotations

import torch

from .fusion import _check_fused_sources
from .gradients import gradient_magnitude, sobel_gradients
from .ssim import ssim

__all__ = [
    "CDDFUSE_DECOMP_WEIGHT",
    "CDDFUSE_PHASE1_FRACTION",
    "cddfuse_fusion_loss",
    "cddfuse_reconstruction_loss",
]

#: weight of L_decomp in both phases (CDDFuse's ``coeff_decomp``)
CDDFUSE_DECOMP_WEIGHT = 2.0
#: share of the fuser's training spent in phase I (CDDFuse: 40 of 120 epochs)
CDDFUSE_PHASE1_FRACTION = 1.0 / 3.0


def cddfuse_fusion_loss(fused: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Phase II: ``L1(x_f, max_m x_m) + 10 L1(|Sobel x_f|_1, max_m |Sobel x_m|_1)``.

    Args:
        fused: ``(B, 1, H, W)``.
        sources: ``(B, M, H, W)``.

    Returns:
        Scalar tensor (0 when ``x_f`` is the pixel-wise maximum of sources whose gradient
        magnitudes agree with its own).
    """
    _check_fused_sources(fused, sources)
    intensity = (fused - sources.amax(dim=1, keepdim=True)).abs().mean()
    target = gradient_magnitude(sources, "cddfuse").amax(dim=1, keepdim=True)
    grad = (gradient_magnitude(fused, "cddfuse") - target).abs().mean()
    return intensity + 10.0 * grad


def cddfuse_reconstruction_loss(recon: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Phase I, without L_decomp: mean over sources of ``MSE + 5 (1 - SSIM) / 2 + 5 L1(grad)``.

    Args:
        recon: ``(B, M, H, W)``, source ``m`` decoded from its own features alone.
        sources: ``(B, M, H, W)``.

    Returns:
        Scalar tensor (0 for a perfect reconstruction).
    """
    if recon.shape != sources.shape or recon.ndim != 4:
        raise ValueError(
            f"recon {tuple(recon.shape)} and sources {tuple(sources.shape)} must be the same "
            "(B, M, H, W) shape"
        )
    # every term is a mean over (B, M, H, W): the mean over sources of the per-source terms
    mse = (recon - sources).pow(2).mean()
    ssim_term = (1.0 - ssim(recon, sources, data_range=1.0)) / 2.0
    grad = (sobel_gradients(recon) - sobel_gradients(sources)).abs().mean()
    return mse + 5.0 * ssim_term + 5.0 * grad
