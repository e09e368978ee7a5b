"""Training: ``setup_run`` + ``fit`` (one readable loop with callbacks), checkpoints with
exact resume, metric logs, and the fast path (``vaekit.train.fast``)."""

from vaekit.train.callbacks import standard_callbacks
from vaekit.train.checkpoint import load_model, load_run_config
from vaekit.train.loop import Callback, Run, TrainState, fit, resolve_device, setup_run, train

__all__ = ["Callback", "Run", "TrainState", "fit", "load_model", "load_run_config",
           "resolve_device", "setup_run", "standard_callbacks", "train"]
