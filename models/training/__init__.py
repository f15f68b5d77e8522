"""The one training loop for every deep model, its checkpoints and memory planning.

    data = TrainData.from_prepared(prepared, "sequence", "direction")
    result = train(module, data, TrainConfig(), task="direction",
                   callbacks=[CheckpointEvery("ckpt")])
    # later, after a crash:
    result = train(module, data, cfg, task="direction", resume_state=load_checkpoint("ckpt"))
"""

from models.training.batching import SplitTensors, TrainData, batch_bounds, class_weights
from models.training.callbacks import Callback, CheckpointEvery, EarlyStopping, StopAfter
from models.training.checkpoint import load_checkpoint, save_checkpoint
from models.training.loop import EPOCH_METRICS, TrainResult, train
from models.training.losses import compute_loss, evaluate, macro_f1, monitor_name
from models.training.memory import auto_batch_size, estimate_memory
from models.training.optim import LrSchedule, build_optimizer, build_scheduler
from models.training.precision import (
    Precision,
    deterministic_algorithms,
    resolve_device,
    resolve_precision,
    seed_everything,
)

__all__ = [
    "EPOCH_METRICS",
    "Callback",
    "CheckpointEvery",
    "EarlyStopping",
    "LrSchedule",
    "Precision",
    "SplitTensors",
    "StopAfter",
    "TrainData",
    "TrainResult",
    "auto_batch_size",
    "batch_bounds",
    "build_optimizer",
    "build_scheduler",
    "class_weights",
    "compute_loss",
    "deterministic_algorithms",
    "estimate_memory",
    "evaluate",
    "load_checkpoint",
    "macro_f1",
    "monitor_name",
    "resolve_device",
    "resolve_precision",
    "save_checkpoint",
    "seed_everything",
    "train",
]
