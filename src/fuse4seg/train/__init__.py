"""Training: the bi-level trainer (Algorithm 1), baselines, checkpoints, EMA, DDP, reports.
(The model file ``model.pt`` is :mod:`fuse4seg.models.model_file`.)

Public API::

    TrainConfig, PRESETS, make_config        typed config, presets tiny/base/paper, YAML
    METHODS, MethodSpec, register_method     fuse4seg, disjoint, average, multichannel
    Trainer, run_training, TrainingStopped   the training loop and its runner
    PatientBatchSampler, split_by_patient    patient-aware batches, D_tr / D_val split
    EMA                                      leader weight averaging
    quick_dice, evaluate_cases, predict_volume         evaluation on a store split
"""

from __future__ import annotations

from fuse4seg.train.config import PRESETS, TrainConfig, make_config
from fuse4seg.train.ema import EMA
from fuse4seg.train.evaluate import evaluate_cases, predict_volume, quick_dice, summarise
from fuse4seg.train.methods import METHODS, MethodSpec, get_method, register_method
from fuse4seg.train.sampler import PatientBatchSampler, split_by_patient
from fuse4seg.train.trainer import Trainer, TrainingStopped, TrainResult, run_training

__all__ = [
    "EMA",
    "METHODS",
    "PRESETS",
    "MethodSpec",
    "PatientBatchSampler",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingStopped",
    "evaluate_cases",
    "get_method",
    "make_config",
    "predict_volume",
    "quick_dice",
    "register_method",
    "run_training",
    "split_by_patient",
    "summarise",
]
