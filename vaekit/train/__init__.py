"""Training: one readable loop, checkpoints with exact resume, metric logs."""

from vaekit.train.checkpoint import load_model, load_run_config
from vaekit.train.trainer import TrainResult, resolve_device, train

__all__ = ["TrainResult", "load_model", "load_run_config", "resolve_device", "train"]
