"""Inference: prediction on NIfTI volumes (:class:`Predictor`) and 2D pair fusion.

Public API::

    Predictor(model, device, batch_size, tta).predict_case(path) -> CasePrediction
    predict_folder(model.pt, cases, out, FolderOptions(...)) -> BatchReport  (fuse4seg predict)
    write_prediction(prediction, out_dir) -> list[Path]
    read_image(path) -> Image2D; write_grey_png / write_rgb_png; rgb_to_ycbcr / ycbcr_to_rgb
    pair_files(dir_a, dir_b); fuse_images(a, b, fuser); rule_fuser(name); model_fuser(model)
"""

from __future__ import annotations

from fuse4seg.inference.image_io import (
    Image2D,
    read_image,
    rgb_to_ycbcr,
    write_grey_png,
    write_rgb_png,
    ycbcr_to_rgb,
    ycbcr_to_rgb_preserving_chroma,
)
from fuse4seg.inference.pair_fusion import (
    FusedImage,
    fuse_images,
    fuse_pair_files,
    model_fuser,
    pair_files,
    rule_fuser,
)
from fuse4seg.inference.predict_folder import FolderOptions, predict_folder
from fuse4seg.inference.predictor import CasePrediction, Predictor, dice_per_region
from fuse4seg.inference.writer import output_paths, write_prediction

__all__ = [
    "CasePrediction",
    "FolderOptions",
    "FusedImage",
    "Image2D",
    "Predictor",
    "dice_per_region",
    "fuse_images",
    "fuse_pair_files",
    "model_fuser",
    "output_paths",
    "pair_files",
    "predict_folder",
    "read_image",
    "rgb_to_ycbcr",
    "rule_fuser",
    "write_grey_png",
    "write_prediction",
    "write_rgb_png",
    "ycbcr_to_rgb",
    "ycbcr_to_rgb_preserving_chroma",
]
