"""Fusion metrics (reference | standard conventions) and BraTS segmentation metrics.

See ``docs/metrics.md`` for every formula, unit and the two fusion conventions.
"""

from __future__ import annotations

from fuse4seg.metrics.fusion import (
    CONVENTIONS,
    average_gradient,
    entropy,
    fmi,
    mutual_information,
    psnr,
    qabf,
    scd,
    spatial_frequency,
    ssim_sum,
    standard_deviation,
    vif,
)
from fuse4seg.metrics.fusion_collection import (
    EXTRA_FUSION_METRICS,
    FUSION_METRICS,
    FusionMetrics,
    compute_fusion_metrics,
)
from fuse4seg.metrics.image_reading import IMAGE_SUFFIXES, read_gray_reference
from fuse4seg.metrics.ms_ssim import ms_ssim
from fuse4seg.metrics.segmentation import (
    BRATS_CLASSES,
    SEG_METRICS,
    SegmentationMetrics,
    binary_metrics,
    compute_segmentation_metrics,
    hd95,
)

__all__ = [
    "CONVENTIONS",
    "FUSION_METRICS",
    "EXTRA_FUSION_METRICS",
    "compute_fusion_metrics",
    "FusionMetrics",
    "entropy",
    "standard_deviation",
    "spatial_frequency",
    "average_gradient",
    "mutual_information",
    "scd",
    "vif",
    "qabf",
    "ssim_sum",
    "psnr",
    "fmi",
    "ms_ssim",
    "IMAGE_SUFFIXES",
    "read_gray_reference",
    "BRATS_CLASSES",
    "SEG_METRICS",
    "binary_metrics",
    "hd95",
    "compute_segmentation_metrics",
    "SegmentationMetrics",
]
