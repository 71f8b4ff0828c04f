"""RMR-Fusion (Zhang et al., AAAI 2024): 3D degradation-robust fusion + mutual-reinforcing
segmentation, method ``"rmr3d"``.

Public API::

    create_rmr_net(preset, num_modalities, **overrides) -> RMRNet   (tiny / base / paper)
    train_rmr(prep_dir, run_dir, config, device, resume, max_steps) -> Path of model.pt
    load_rmr_model(path, device) -> RMRModel;  predict_volume(net, images (M, D, H, W))

Training from the main CLI: ``fuse4seg train --method rmr3d`` (registered by
:mod:`fuse4seg.rmr.runner`); ``python -m fuse4seg.rmr train`` also trains on phantoms.
Prediction: ``fuse4seg predict`` (:class:`fuse4seg.inference.Predictor`); robustness:
``fuse4seg benchmark robustness`` (:mod:`fuse4seg.benchmark.robustness`).
Degradations live in :mod:`fuse4seg.degradations` (reusable by every method).
"""

from __future__ import annotations

from fuse4seg.data.volume_store import InMemoryVolumeStore, PatchSampler, phantom_store
from fuse4seg.rmr.networks import (
    RMR_PRESETS,
    SEMANTIC_HEADS,
    RMRConfig,
    RMRNet,
    RMROutput,
    create_rmr_net,
)
from fuse4seg.rmr.predict import RMRModel, load_rmr_model, predict_volume
from fuse4seg.rmr.runner import RMR_METHOD, configure_rmr, register_rmr, run_rmr_training
from fuse4seg.rmr.train import (
    RMRTrainConfig,
    load_train_config,
    train_rmr,
    train_rmr_on_store,
)

# plugin registration (fuse4seg.plugins): --method rmr3d; the model-file loader of rmr3d
# registers in fuse4seg.rmr.predict
register_rmr()

__all__ = [
    "RMR_METHOD",
    "configure_rmr",
    "register_rmr",
    "run_rmr_training",
    "RMR_PRESETS",
    "SEMANTIC_HEADS",
    "RMRConfig",
    "RMRNet",
    "RMROutput",
    "create_rmr_net",
    "RMRTrainConfig",
    "load_train_config",
    "train_rmr",
    "train_rmr_on_store",
    "RMRModel",
    "load_rmr_model",
    "predict_volume",
    "InMemoryVolumeStore",
    "PatchSampler",
    "phantom_store",
]
