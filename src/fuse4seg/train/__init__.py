"""Training: the bi-level trainer (Algorithm 1), baselines, checkpoints, EMA, DDP, reports.

Public API::

    TrainConfig, PRESETS, make_config        typed config, presets tiny/base/paper, YAML
    METHODS, MethodSpec, register_method     fuse4seg, disjoint, average, multichannel
    Trainer, run_training, TrainingStopped   the training loop and its runner
    PatientBatchSampler, split_by_patient    patient-aware batches, D_tr / D_val split
    EMA                                      leader weight averaging
    FusionSegModel, save_model_file, load_model_file   model.pt
    quick_dice, evaluate_cases, predict_volume         evaluation on a store split
"""

from __future__ import annotations

from fuse4seg.train.config import PRESETS, TrainConfig, make_config
from fuse4seg.train.ema import EMA
from fuse4seg.train.evaluate import evaluate_cases, predict_volume, quick_dice, summarise
from fuse4seg.train.methods import METHODS, MethodSpec, get_method, register_method
from fuse4seg.train.model_file import FusionSegModel, load_model_file, save_model_file
from fuse4seg.train.sampler import PatientBatchSampler, split_by_patient
from fuse4seg.train.trainer import Trainer, TrainingStopped, TrainResult, run_training

__all__ = [
    "EMA",
    "METHODS",
    "PRESETS",
    "FusionSegModel",
    "MethodSpec",
    "PatientBatchSampler",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingStopped",
    "evaluate_cases",
    "get_method",
    "load_model_file",
    "make_config",
    "predict_volume",
    "quick_dice",
    "register_method",
    "run_training",
    "save_model_file",
    "split_by_patient",
    "summarise",
]
