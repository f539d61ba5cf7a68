"""One training engine for every magphase model (autoencoder, flow stages, classifiers, PhaseGen).

Entry point: :func:`fit` with a :class:`TrainTask` and :class:`~magphase.config.training.TrainSettings`.
See ``docs/training-engine.md``.
"""

from magphase.config.training import TrainSettings
from magphase.models.weights import load_ema_into, load_ema_weights, read_weights_metadata
from magphase.training.checkpoint import list_snapshots, load_checkpoint
from magphase.training.distributed import DistInfo, init_distributed, shutdown_distributed
from magphase.training.ema import EMA
from magphase.training.engine import (
    CheckpointEvent,
    ProgressEvent,
    TrainResult,
    TrainTask,
    TrainTaskBase,
    fit,
    move_to_device,
)
from magphase.training.sampling import GlobalBatchSampler
from magphase.training.schedules import lr_factor

__all__ = [
    "EMA",
    "CheckpointEvent",
    "DistInfo",
    "GlobalBatchSampler",
    "ProgressEvent",
    "TrainResult",
    "TrainSettings",
    "TrainTask",
    "TrainTaskBase",
    "fit",
    "init_distributed",
    "list_snapshots",
    "load_checkpoint",
    "load_ema_into",
    "load_ema_weights",
    "lr_factor",
    "move_to_device",
    "read_weights_metadata",
    "shutdown_distributed",
]
