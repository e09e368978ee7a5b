"""Training in two calls: ``setup_run`` builds (or restores) everything a run needs, ``fit``
trains it, with callbacks for validation, logs, checkpoints and progress::

    run = setup_run(cfg, "runs/x")           # data, model, optimizer, loader, step, state
    fit(run, standard_callbacks(run))        # the loop below
    run = setup_run(cfg, model=m, data=d)    # from objects a caller built; no files

A second stage trained on in-memory codes, a distributed wrapper or a benchmark builds
its own objects and calls the same two functions.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit import distributed
from vaekit.config import RunConfig, resume_config
from vaekit.data.pipeline import BatchLoader, PreparedData, fixed_transform, prepare_data
from vaekit.errors import CheckpointError, ConfigError
from vaekit.io import DirectoryLock, write_error
from vaekit.limits import check_model_size
from vaekit.models import build_model
from vaekit.models.build import meta_model
from vaekit.numerics import derive_seed, seeded_generator
from vaekit.registry import LIKELIHOODS
from vaekit.train.base import (
    STOP,
    Callback,
    DivergenceError,
    Interrupted,
    Run,
    TrainState,
    rank_seed,
    resolve_device,
)
from vaekit.train.checkpoint import has_checkpoint, load_run_config
from vaekit.train.step import make_optimizer, make_step, schedule_notes, warmup_steps

# what a run writes before its first checkpoint (tensorboard/: the TensorBoard callback's logs)
PRE_CHECKPOINT = ("config.json", "train.log", "tensorboard", DirectoryLock.NAME)


def _before_first_checkpoint(p: Path) -> bool:
    """Whether ``p`` is only what a run wrote before its first checkpoint: its config, log,
    an unfinished first save or the temporary file of an interrupted write."""
    return (p.name in PRE_CHECKPOINT or (p.name.startswith(".") and p.name.endswith(".tmp"))
            or (p.name in ("checkpoint.new", "checkpoint.del") and not has_checkpoint(p.parent)))


def pre_checkpoint_only(run_dir: Path) -> bool:
    """A folder that holds nothing but what a run killed before its first checkpoint wrote
    (it can be resumed from step 0, or a new run can use it)."""
    return run_dir.is_dir() and all(_before_first_checkpoint(p) for p in run_dir.iterdir())


def prepare_run_dir(run_dir: Path) -> list[str]:
    """A new run needs a new or empty directory: nothing is ever overwritten. One holding
    only what a run killed before its first checkpoint wrote counts as empty (returns a
    note saying it was reused)."""
    if run_dir.is_symlink() and not run_dir.exists():
        raise CheckpointError(f"--out {run_dir} is a symbolic link to the missing "
                              f"{os.readlink(run_dir)}", "create its target or choose another "
                              "--out")
    if run_dir.exists() and not pre_checkpoint_only(run_dir):
        raise CheckpointError(f"run directory {run_dir} already exists and is not empty",
                              f"choose a new --out, or continue it with --resume {run_dir}")
    notes = []
    if run_dir.exists() and any(run_dir.iterdir()):
        notes.append(f"{run_dir} held only what an earlier run wrote before its first "
                     "checkpoint: reused")
        for p in run_dir.iterdir():  # an unfinished save or write of that run
            if p.name not in PRE_CHECKPOINT:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(run_dir, err, "create the run directory") from err
    return notes


def prepare_run_data(cfg: RunConfig) -> PreparedData:
    """The data of a run: ``cfg.data`` prepared for the likelihood ``cfg.model`` names."""
    return prepare_data(cfg.data, LIKELIHOODS.get(cfg.model.likelihood.name).build,
                        cfg.train.seed)


def setup_run(cfg: RunConfig | None, run_dir: str | Path | None = None, *,
              resume: bool = False, overrides: dict[str, Any] | None = None,
              model: nn.Module | None = None, data: PreparedData | None = None,
              optimizer: torch.optim.Optimizer | None = None,
              allow_unverified: bool = False) -> Run:
    """Build a run from ``cfg`` (or from the ``model``/``data``/``optimizer`` a caller
    built), in a new ``run_dir``, or restored from it (``resume``: ``cfg`` None, or only
    ``overrides`` nested like a config file, continues the saved config; see
    :func:`vaekit.config.resume_config`). Seeds as the config says; ``cfg`` itself is not
    changed (``run.cfg`` is the run's own, with the data's shape filled in).
    ``allow_unverified``: a resume may start from a checkpoint without checksums."""
    cfg, world_notes = _resolve(cfg, run_dir, resume, overrides, distributed.launch_size())
    world = distributed.init(cfg.train.device)  # under torchrun: join the job (once)
    distributed.check_same_json(cfg.to_dict(), "the configuration")
    device = distributed.local_device(resolve_device(cfg.train.device))
    data = (data if data is not None else prepare_run_data(cfg)).to(device)
    _fill_from_data(cfg, data)
    torch.manual_seed(derive_seed(cfg.train.seed, "init"))
    if model is None:  # its size is checked before anything is allocated
        check_model_size(meta_model(cfg.model), cfg.train, device, len(data.train_raw))
        model = build_model(cfg.model)
        _init_from_data(model, data)
    model = model.to(device)
    if cfg.train.channels_last:  # NHWC convolutions (oneDNN / cuDNN often prefer them)
        model = model.to(memory_format=torch.channels_last)
    if world.rank:  # every rank its own reparameterization noise (rank 0: as one process)
        torch.manual_seed(rank_seed(cfg.train.seed, world.rank))
    optimizer = optimizer or make_optimizer(model, cfg.train.lr, cfg.train.adam_eps)
    gen = seeded_generator(derive_seed(cfg.train.seed, "data-order"), device)  # every rank
    loader = BatchLoader(data.train_raw, data.transform, data.levels,
                         cfg.train.batch_size * world.size, gen, labels=data.train_y,
                         shard=(world.rank, world.size))
    total = cfg.train.epochs * len(loader)
    step, fast = make_step(model, optimizer, cfg, device, total, world.size)
    run = Run(cfg, model, data, optimizer, loader, step, TrainState(), device,
              None if run_dir is None else Path(run_dir), fast, world=world,
              allow_unverified=allow_unverified)
    run.notes = _notes(run) + world_notes + schedule_notes(cfg, run.total_steps)
    _open_run_dir(run, resume)
    return run


def _resolve(cfg: RunConfig | None, run_dir: str | Path | None, resume: bool,
             overrides: dict[str, Any] | None, world_size: int) -> tuple[RunConfig, list[str]]:
    """The run's own config: a validated copy of ``cfg`` (``train.batch_size`` is per rank,
    ``train.world_size`` records the ranks), or on resume what the resume policy makes of
    the saved config and the request."""
    if not resume:
        if cfg is None:
            raise ValueError("a new run needs a config")
        cfg = copy.deepcopy(cfg).validate()
        if cfg.train.epochs < 1:
            raise ConfigError(f"a new run needs at least one epoch, got {cfg.train.epochs}",
                              "pass e.g. --epochs 10")
        cfg.train.world_size = world_size
        return cfg, []
    if run_dir is None:
        raise ValueError("resume needs a run directory")
    saved = load_run_config(Path(run_dir))
    return resume_config(saved, cfg if cfg is not None else overrides, world_size, run_dir)


def _fill_from_data(cfg: RunConfig, data: PreparedData) -> None:
    """The model's data-derived settings: input shape, levels, classes when conditional."""
    m = cfg.model
    m.data_shape, m.data_levels = list(data.shape), data.levels or 0
    m.num_classes = data.num_classes if m.conditional else 0
    if m.conditional and not m.num_classes:
        why = data.dataset.label_note or "these have none"
        raise ConfigError(f"a conditional model needs labelled data, and {why}",
                          "use a dataset with labels (IDX label files, NPZ y arrays) or drop "
                          "--conditional")


def _init_from_data(model: nn.Module, data: PreparedData, n: int = 10_000) -> None:
    """The likelihood's data-dependent initialization (e.g. gamma at the data's variance),
    from a fixed-seed transformed sample of up to n training examples."""
    likelihood = getattr(model, "likelihood", None)
    if likelihood is not None:
        x = fixed_transform(data.train_raw[:n], data.transform, data.levels,
                            seed=derive_seed(0, "init-from-data"))
        likelihood.init_from_data(x.to(torch.get_default_dtype()).cpu())


def _open_run_dir(run: Run, resume: bool) -> None:
    """A new run directory (refused unless new or empty), or the saved run restored; locked
    for this run (rank 0 holds the lock for the job); the run's config written."""
    if run.run_dir is None:
        return
    if not resume:
        run.notes += distributed.on_main(lambda: prepare_run_dir(run.run_dir)) or []
    run.lock = distributed.on_main(lambda: DirectoryLock(run.run_dir, "run directory").acquire())
    if resume and pre_checkpoint_only(run.run_dir):  # killed before its first checkpoint
        run.notes.append(f"{run.run_dir} holds no checkpoint yet (the run stopped before "
                         "its first one): training starts from step 0")
    elif resume:
        run.restore()  # the checkpoint loaded: now record e.g. raised epochs
    distributed.on_main(lambda: run.cfg.save(run.run_dir / "config.json"))  # rank 0 writes


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
            f"device {run.device}; fast path: {run.fast_path}",
            *([f"data parallel: {run.world.size} ranks ({distributed.backend()}), batch "
               f"{t.batch_size} per rank = {t.batch_size * run.world.size} per step"]
              if run.world.active else [])]


def fit(run: Run, callbacks: Sequence[Callback] = ()) -> Run:
    """Train ``run.model`` until ``run.cfg.train.epochs``; returns ``run`` (model in eval mode).

    Per epoch: one pass of optimizer steps over the shuffled training data, then a row of
    figures (training loss, speed, ``epoch_metrics`` of the callbacks) recorded in
    ``run.state.history``. The loss stays on the device: no host sync per step. A loss,
    weight or optimizer state that is not finite (checked at each epoch end and checkpoint,
    and per step on CPU by ``DivergenceGuard``) raises :class:`DivergenceError`: the run returns to
    its last good state with the learning rate halved (``Run.rollback``), at most
    ``MAX_ROLLBACKS`` times.
    """
    STOP.armed = True
    try:
        for cb in callbacks:
            cb.on_fit_start(run)
        if run.good is None or run.good.step != run.state.step:
            run.good = run.capture()  # the start is good: a divergence may return here
        while run.state.epoch < run.cfg.train.epochs:
            try:
                _fit_epoch(run, callbacks)
            except DivergenceError as err:
                note = run.rollback(err)
                for cb in callbacks:
                    cb.on_rollback(run, note)
            except Interrupted as stop:
                for cb in callbacks:
                    cb.on_interrupt(run, stop.line)
                raise
    finally:
        STOP.armed = False
        for cb in callbacks:
            cb.on_fit_end(run)
    run.model.eval()
    return run


def _fit_epoch(run: Run, callbacks: Sequence[Callback]) -> None:
    """One epoch (or the rest of one, after a mid-epoch resume) and its row."""
    state, loader = run.state, run.loader
    run.model.train()
    if loader.step == 0:  # a new epoch (a mid-epoch resume keeps the running sums)
        state.loss_sum, state.seen = torch.zeros((), device=run.device), 0
    t0, seen0 = time.perf_counter(), run._epoch_totals()[1]
    for batch in loader.epoch():
        loss = run.step(batch, state.step)
        state.step += 1
        state.loss_sum += loss.float() * len(batch)  # on the device: no host sync
        state.seen += len(batch)
        for cb in callbacks:
            cb.on_step_end(run, loss)
        if STOP.pending(run):  # a signal asked to stop: the state is consistent here
            raise _stopped(run)
    run.verify()  # one host sync per epoch
    loss_sum, seen = run._epoch_totals()  # of all ranks
    row = _epoch_row(state.epoch, state.step, loss_sum / max(seen, 1), seen - seen0,
                     time.perf_counter() - t0)
    for cb in callbacks:
        row.update(cb.epoch_metrics(run))
    state.history.append(row)
    state.epoch += 1
    for cb in callbacks:
        cb.on_epoch_end(run, row)
    if run.good is None or run.good.step != state.step:  # no checkpoint kept it (no run dir)
        run.good = run.capture()


def _stopped(run: Run) -> Interrupted:
    """Save the run where it stands (a run directory; after the finiteness check) and say
    so: the stop a signal asked for, as one line."""
    sig = STOP.signal or signal.SIGINT
    STOP.signal = None  # taken
    where = f"epoch {run.state.epoch + 1}, step {run.state.step}"
    if run.run_dir is None:
        return Interrupted(f"interrupted by {sig.name} at {where} (the run was in memory)",
                           128 + sig.value)
    run.checkpoint()
    return Interrupted(f"interrupted by {sig.name} at {where}: the run was saved there; "
                       f"continue it with `vaekit train --resume {run.run_dir}`", 128 + sig.value)


def _epoch_row(epoch: int, step: int, loss: float, n_timed: int,
               seconds: float) -> dict[str, Any]:
    """The epoch's figures: mean training loss over all its examples, speed of this pass."""
    return {"epoch": epoch + 1, "step": step, "train_loss": loss,
            "seconds": round(seconds, 3), "images_per_s": round(n_timed / max(seconds, 1e-9), 1)}
