"""Training: ``setup_run`` + ``fit`` (one readable loop with callbacks), checkpoints with
exact resume, metric logs, stage 2 of the two-stage VAE, and the fast path
(``vaekit.train.fast``). ``vaekit.api.train`` runs all of it into a run directory."""

from vaekit.train.base import Callback, DivergenceError, Run, TrainState, resolve_device
from vaekit.train.callbacks import standard_callbacks
from vaekit.train.loop import fit, prepare_run_data, setup_run
from vaekit.train.stages import fit_stage2

__all__ = ["Callback", "DivergenceError", "Run", "TrainState", "fit", "fit_stage2",
           "prepare_run_data", "resolve_device", "setup_run", "standard_callbacks"]
