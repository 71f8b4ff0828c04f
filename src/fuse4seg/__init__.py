"""fuse4seg: task-driven multi-modal medical image fusion and segmentation.

Subpackages:
    data       BraTS discovery/loading, preprocessing store, phantom dataset
    models     fusion leader (FusionNet), segmentation follower (SegNet), the model file
    losses     Dice+CE, L_decomp, L_grad, L_recon, SSIM, TV (2D and 3D)
    metrics    fusion metrics (reference and standard conventions), BraTS segmentation metrics
    train      bi-level trainer (Algorithm 1) and baselines
    inference  prediction on NIfTI volumes and image-pair fusion

The top level is the Python API's front door: each name below is imported from its module on
first use (``from fuse4seg import Predictor``), so ``import fuse4seg`` stays cheap (no torch)
and the layers below never depend on it::

    from fuse4seg import Predictor, load_model_file, write_prediction

    model = load_model_file("run/model.pt")
    pred = Predictor(model, device="auto").predict_case("BraTS2021_00006")
    write_prediction(pred, "out/")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> defining module (imported on first access)
_API: dict[str, str] = {
    # data
    "discover_cases": "fuse4seg.data.discovery",
    "prepare_dataset": "fuse4seg.data.prepare",
    # models and the model file (the one loader of every method's model.pt)
    "create_fusion_net": "fuse4seg.models.registry",
    "create_seg_net": "fuse4seg.models.registry",
    "load_model_file": "fuse4seg.models.model_file",
    "save_model_file": "fuse4seg.models.model_file",
    # training
    "make_config": "fuse4seg.train.config",
    "run_training": "fuse4seg.train.trainer",
    "run_demo": "fuse4seg.train.demo",
    # inference
    "Predictor": "fuse4seg.inference.predictor",
    "predict_folder": "fuse4seg.inference.predict_folder",
    "FolderOptions": "fuse4seg.inference.predict_folder",
    "write_prediction": "fuse4seg.inference.writer",
    "fuse_images": "fuse4seg.inference.pair_fusion",
    # metrics
    "compute_fusion_metrics": "fuse4seg.metrics.fusion_collection",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'fuse4seg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
