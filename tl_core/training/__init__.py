"""Training: the ``Trainer``, its loop, its inputs and its callbacks (see each module)."""

from .callbacks import (
    BestWeights,
    Callback,
    EarlyStopping,
    EveryBatch,
    MeasuringCallback,
    StopOnEvent,
    TimeLimit,
)
from .feature_cache import FEATURE_CACHE_BYTES, FeatureCache, prune_feature_cache
from .loop import NAN_CHECK_STEPS, Inputs, TrainingDiverged
from .recipe import class_weights, default_workers, seed_everything
from .records import EpochRecord, TrainResult
from .trainer import Trainer

__all__ = [
    "FEATURE_CACHE_BYTES",
    "NAN_CHECK_STEPS",
    "BestWeights",
    "Callback",
    "EarlyStopping",
    "EpochRecord",
    "EveryBatch",
    "FeatureCache",
    "Inputs",
    "MeasuringCallback",
    "StopOnEvent",
    "TimeLimit",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "class_weights",
    "default_workers",
    "prune_feature_cache",
    "seed_everything",
]
