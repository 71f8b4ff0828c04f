"""fuse4seg: task-driven multi-modal medical image fusion and segmentation.

Subpackages:
    data       BraTS discovery/loading, preprocessing store, phantom dataset
    models     fusion leader (FusionNet) and segmentation follower (SegNet)
    losses     Dice+CE, L_decomp, L_grad, L_recon, SSIM, TV (2D and 3D)
    metrics    fusion metrics (reference and standard conventions), BraTS segmentation metrics
    train      bi-level trainer (Algorithm 1) and baselines
    inference  prediction on NIfTI volumes and image-pair fusion
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
