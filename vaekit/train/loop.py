"""Training in two calls: ``setup_run`` builds (or restores) everything a run needs, ``fit``
trains it, with callbacks for validation, logs, checkpoints and progress::

    run = setup_run(cfg, "runs/x")           # data, model, optimizer, loader, step, state
    fit(run, standard_callbacks(run))        # the loop below
    run = setup_run(cfg, model=m, data=d)    # from objects a caller built; no files

A second stage trained on in-memory codes, a distributed wrapper or a benchmark builds
its own objects and calls the same two functions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit.config import RESUMABLE, RunConfig
from vaekit.data.pipeline import BatchLoader, PreparedData, fixed_transform, prepare_data
from vaekit.errors import CheckpointError, ConfigError
from vaekit.models import build_model
from vaekit.train.checkpoint import (
    checkpoint_dir,
    load_run_config,
    load_trainer_state,
    load_weights,
    save_checkpoint,
)
from vaekit.train.step import Step, make_optimizer, make_step, schedule_notes, warmup_steps


@dataclass
class TrainState:
    """Where training stands: what a checkpoint records beside the tensors."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))  # this epoch's
    seen: int = 0  # examples of this epoch so far (both survive a mid-epoch resume)


@dataclass
class Run:
    """Everything ``fit`` needs; ``run_dir`` None keeps the run in memory (no files)."""

    cfg: RunConfig
    model: nn.Module
    data: PreparedData
    optimizer: torch.optim.Optimizer
    loader: BatchLoader
    step: Step
    state: TrainState
    device: torch.device
    run_dir: Path | None = None
    fast_path: str = "off"  # "on" or "off (<reason>)"
    notes: list[str] = field(default_factory=list)  # set-up facts for the run log

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history

    @property
    def total_steps(self) -> int:
        return self.cfg.train.epochs * len(self.loader)

    def checkpoint(self) -> None:
        """Save model, optimizer, RNG and data-order state (run directories only)."""
        if self.run_dir is None:
            return
        counters = {"epoch": self.state.epoch, "step": self.state.step,
                    "history": self.state.history, "step_in_epoch": self.loader.step,
                    "epoch_loss_sum": float(self.state.loss_sum), "epoch_seen": self.state.seen}
        save_checkpoint(self.run_dir, self.model, self.optimizer, counters, self._rng_states())

    def _rng_states(self) -> dict[str, torch.Tensor]:
        states = {"torch_rng": torch.get_rng_state(), "loader_epoch": self.loader.epoch_state,
                  "loader_now": self.loader.generator.get_state()}
        if self.device.type == "cuda":
            states["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return states

    def restore(self) -> None:
        """Continue exactly where the run directory's last checkpoint stopped."""
        ckpt = checkpoint_dir(self.run_dir)
        load_weights(self.model, ckpt)
        counters, opt_sd, states = load_trainer_state(ckpt)
        self.optimizer.load_state_dict(opt_sd)
        torch.set_rng_state(states["torch_rng"])
        if "cuda_rng" in states and self.device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda_rng"], self.device)
        self.loader.load_state_dict({"epoch_state": states["loader_epoch"],
                                     "state": states["loader_now"],
                                     "step": counters["step_in_epoch"]})
        self.state = TrainState(counters["epoch"], counters["step"], counters["history"],
                                torch.tensor(float(counters.get("epoch_loss_sum", 0.0)),
                                             device=self.device),
                                int(counters.get("epoch_seen", 0)))


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; a missing GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unknown or unsupported device {name!r}",
                          "use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available",
                          "use --device cpu (or auto)")
    return device


def prepare_run_dir(run_dir: Path) -> None:
    """A new run needs a new or empty directory: nothing is ever overwritten."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise CheckpointError(f"run directory {run_dir} already exists and is not empty",
                              f"choose a new --out, or continue it with --resume {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)


def setup_run(cfg: RunConfig, run_dir: str | Path | None = None, *, resume: bool = False,
              model: nn.Module | None = None, data: PreparedData | None = None,
              optimizer: torch.optim.Optimizer | None = None) -> Run:
    """Build a run from ``cfg`` (or from the ``model``/``data``/``optimizer`` a caller
    built), in a new ``run_dir``, or restored from it (``resume``). Seeds as ``cfg`` says."""
    cfg.validate()
    device = resolve_device(cfg.train.device)
    if data is None:
        data = prepare_data(cfg.data, cfg.model.likelihood.name, cfg.train.seed)
    data = data.to(device)
    m = cfg.model
    m.data_shape, m.data_levels = list(data.shape), data.levels or 0
    m.num_classes = data.num_classes if m.conditional else 0
    if m.conditional and not m.num_classes:
        why = data.dataset.label_note or "these have none"
        raise ConfigError(f"a conditional model needs labelled data, and {why}",
                          "use a dataset with labels (IDX label files, NPZ y arrays) or drop "
                          "--conditional")
    torch.manual_seed(cfg.train.seed)
    if model is None:
        model = build_model(m)
        _init_from_data(model, data)
    model = model.to(device)
    if cfg.train.channels_last:  # NHWC convolutions (oneDNN / cuDNN often prefer them)
        model = model.to(memory_format=torch.channels_last)
    optimizer = optimizer or make_optimizer(model, cfg.train.lr)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed + 1)
    loader = BatchLoader(data.train_raw, data.transform, data.levels, cfg.train.batch_size, gen,
                         labels=data.train_y)
    total = cfg.train.epochs * len(loader)
    step, fast = make_step(model, optimizer, cfg, device, total)
    run = Run(cfg, model, data, optimizer, loader, step, TrainState(), device,
              None if run_dir is None else Path(run_dir), fast)
    run.notes = _notes(run) + schedule_notes(cfg, run.total_steps)
    _open_run_dir(run, resume)
    return run


def _init_from_data(model: nn.Module, data: PreparedData, n: int = 10_000) -> None:
    """The likelihood's data-dependent initialization (e.g. gamma at the data's variance),
    from a fixed-seed transformed sample of up to n training examples."""
    likelihood = getattr(model, "likelihood", None)
    if likelihood is not None:
        x = fixed_transform(data.train_raw[:n], data.transform, data.levels, seed=0)
        likelihood.init_from_data(x.to(torch.get_default_dtype()).cpu())


def _open_run_dir(run: Run, resume: bool) -> None:
    if run.run_dir is None:
        if resume:
            raise ValueError("resume needs a run directory")
        return
    if resume:
        _check_same_run(run.cfg, run.run_dir)
        run.restore()  # the checkpoint loaded: now record e.g. raised epochs
    else:
        prepare_run_dir(run.run_dir)
    run.cfg.save(run.run_dir / "config.json")


def _check_same_run(cfg: RunConfig, run_dir: Path) -> None:
    """A resumed run continues the saved one: only the RESUMABLE settings may differ."""
    saved = load_run_config(run_dir)
    for path, (new, old) in cfg.differences(saved).items():
        if path not in RESUMABLE and path != "version" and not path.startswith("model.data_"):
            raise CheckpointError(f"{path} = {new} does not match the run saved in {run_dir} "
                                  f"(saved: {old})", "resume with the saved config.json, or "
                                  "start a new run")


def _notes(run: Run) -> list[str]:
    """What a user should know about the set-up, for the console and ``train.log``."""
    d, m, t = run.data, run.cfg.model, run.cfg.train
    note = f" ({d.dataset.label_note})" if d.dataset.label_note else ""
    labels = f", labels 0-{d.num_classes - 1}" if d.num_classes else f", no labels{note}"
    levels = f"{d.levels} levels" if d.levels else "continuous"
    return [f"data: {d.dataset.name} from {d.dataset.source}: {len(d.train_raw)} training, "
            f"{len(d.val)} validation, {len(d.test)} test examples of shape {d.shape} "
            f"({levels}{labels}); transform {d.transform}",
            f"model: {m.kind.label()}, {m.arch.label()}, latent {m.latent_dim}, likelihood "
            f"{m.likelihood.label()}, prior {m.prior.label()}"
            + (", conditional on labels" if m.conditional else ""),
            f"training: {t.objective.label()}, beta {t.beta}"
            + (f" (warmed up over {t.beta_warmup_steps} steps)" if t.beta_warmup_steps else "")
            + f", batch {t.batch_size}, Adam lr {t.lr} ({t.lr_schedule}, "
            f"{warmup_steps(run.cfg, run.total_steps)} warm-up steps), {t.precision}, "
            f"device {run.device}; fast path: {run.fast_path}"]


class Callback:
    """Hooks of the fit loop; subclasses override what they need."""

    def on_fit_start(self, run: Run) -> None: ...

    def on_step_end(self, run: Run, loss: torch.Tensor) -> None: ...

    def epoch_metrics(self, run: Run) -> dict[str, Any]:
        """Figures added to the epoch's row before it is recorded (e.g. validation)."""
        return {}

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        """After the row is recorded in ``run.state`` (checkpoints, logs, printing)."""

    def on_fit_end(self, run: Run) -> None:
        """Always called, also when the loop stops with an exception."""


def fit(run: Run, callbacks: Sequence[Callback] = ()) -> Run:
    """Train ``run.model`` until ``run.cfg.train.epochs``; returns ``run`` (model in eval mode).

    Per epoch: one pass of optimizer steps over the shuffled training data, then a row of
    figures (training loss, speed, ``epoch_metrics`` of the callbacks) recorded in
    ``run.state.history``. The loss stays on the device: no host sync per step.
    """
    state, loader = run.state, run.loader
    try:
        for cb in callbacks:
            cb.on_fit_start(run)
        for epoch in range(state.epoch, run.cfg.train.epochs):
            run.model.train()
            if loader.step == 0:  # a new epoch (a mid-epoch resume keeps the running sums)
                state.loss_sum, state.seen = torch.zeros((), device=run.device), 0
            t0, seen0 = time.perf_counter(), state.seen
            for batch in loader.epoch():
                loss = run.step(batch, state.step)
                state.step += 1
                state.loss_sum += loss.float() * len(batch)  # on the device: no host sync
                state.seen += len(batch)
                for cb in callbacks:
                    cb.on_step_end(run, loss)
            row = _epoch_row(epoch, state, state.seen - seen0, time.perf_counter() - t0)
            for cb in callbacks:
                row.update(cb.epoch_metrics(run))
            state.history.append(row)
            state.epoch = epoch + 1
            for cb in callbacks:
                cb.on_epoch_end(run, row)
    finally:
        for cb in callbacks:
            cb.on_fit_end(run)
    run.model.eval()
    return run


def _epoch_row(epoch: int, state: TrainState, n_timed: int, seconds: float) -> dict[str, Any]:
    """The epoch's figures: mean training loss over all its examples, speed of this pass."""
    loss = float(state.loss_sum) / max(state.seen, 1)
    if not math.isfinite(loss):
        raise ConfigError(f"training diverged at epoch {epoch + 1} (loss is not finite)",
                          "lower --lr or use a fixed-variance likelihood")
    return {"epoch": epoch + 1, "step": state.step, "train_loss": loss,
            "seconds": round(seconds, 3), "images_per_s": round(n_timed / max(seconds, 1e-9), 1)}


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          checkpoint_every: int = 0, on_epoch: Any = None, echo: bool | None = None) -> Run:
    """Train ``cfg`` into ``run_dir`` (new), or continue the run saved there (``resume``).

    ``progress`` shows a progress bar and prints the set-up and one line per epoch (``echo``
    prints them without the bar); ``checkpoint_every`` > 0 also checkpoints every that many
    steps inside an epoch; ``on_epoch(row, model)`` is called after each epoch's validation
    and checkpoint (e.g. to evaluate or stop early). With a ``stage2`` section, stage 2 of
    the two-stage VAE is fitted next, into ``run_dir/stage2`` (see ``vaekit.train.stages``);
    the stage-1 run is returned.
    """
    from vaekit.train.callbacks import standard_callbacks
    from vaekit.train.stages import fit_stage2

    run = setup_run(cfg, run_dir, resume=resume)
    fit(run, standard_callbacks(run, progress=progress, echo=echo,
                                checkpoint_every=checkpoint_every, on_epoch=on_epoch))
    if cfg.stage2 is not None:
        fit_stage2(run_dir, progress=progress, echo=echo, checkpoint_every=checkpoint_every)
    return run
