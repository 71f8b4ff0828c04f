"""Benchmarks reproducing the papers' tables, and dataset exports.

Public API::

    run_seg_benchmark(prep_dir, out_dir, methods=None, seeds=(0,), preset="base", ...)
        Table 1 / Table 3: disjoint pipelines, multi-channel nets, Fuse4Seg and ablations.
    run_fusion_benchmark(harvard_dir, out_dir, rules=..., train_net=True, ...)
        Table 2: fusion quality on the Harvard pairs (reference-convention metrics).
    export_brats_fuse(source, out_dir, fusers, normalise, ...)
        BraTS-Fuse PNG slices: modalities, ground truth, fused 2/3/4-modality combinations.
    export_nnunet(source, out_dir, modalities=None, fuser=None, label_mode="regions", ...)
        nnU-Net v2 raw dataset (stacked channels or the fused channel).
"""

from __future__ import annotations

from fuse4seg.benchmark.export_brats_fuse import (
    SliceFuser,
    combinations,
    export_brats_fuse,
    label_to_rgb,
    select_slices,
)
from fuse4seg.benchmark.export_nnunet import (
    build_dataset_json,
    canonical_to_nnunet_labels,
    export_nnunet,
    nnunet_to_canonical_labels,
)
from fuse4seg.benchmark.fusers import (
    model_slice_fuser,
    raw_normaliser,
    rule_slice_fuser,
    volume_fuser,
)
from fuse4seg.benchmark.fusion import (
    FUSION_METRICS,
    HARVARD_SETS,
    discover_harvard_pairs,
    run_fusion_benchmark,
    score_fused,
    split_pairs,
)
from fuse4seg.benchmark.seg import SEG_METHODS, register_rule_methods, run_seg_benchmark
from fuse4seg.benchmark.tables import MeanStd, mean_std, to_csv, to_markdown, write_table
from fuse4seg.benchmark.volumes import VolumeCase, is_prepared_store, iter_volume_cases

__all__ = [
    "FUSION_METRICS",
    "HARVARD_SETS",
    "MeanStd",
    "SEG_METHODS",
    "SliceFuser",
    "VolumeCase",
    "build_dataset_json",
    "canonical_to_nnunet_labels",
    "combinations",
    "discover_harvard_pairs",
    "export_brats_fuse",
    "export_nnunet",
    "is_prepared_store",
    "iter_volume_cases",
    "label_to_rgb",
    "mean_std",
    "model_slice_fuser",
    "nnunet_to_canonical_labels",
    "raw_normaliser",
    "register_rule_methods",
    "rule_slice_fuser",
    "run_fusion_benchmark",
    "run_seg_benchmark",
    "score_fused",
    "select_slices",
    "split_pairs",
    "to_csv",
    "to_markdown",
    "volume_fuser",
    "write_table",
]
