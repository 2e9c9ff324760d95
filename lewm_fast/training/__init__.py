"""Training LeWM: presets, the trainer (single process or DDP under torchrun), checkpoints, metrics."""

from lewm_fast.training.checkpoint import latest_checkpoint, save_checkpoint
from lewm_fast.training.presets import PRESETS, Preset, get_preset
from lewm_fast.training.trainer import NonFiniteLoss, TrainConfig, train

__all__ = ["PRESETS", "NonFiniteLoss", "Preset", "TrainConfig", "get_preset", "latest_checkpoint", "save_checkpoint",
           "train"]  # fmt: skip
