"""Training in two calls: ``setup_run`` builds (or restores) everything a run needs, ``fit``
trains it, with callbacks for validation, logs, checkpoints and progress::

    run = setup_run(cfg, "runs/x")           # data, model, optimizer, loader, step, state
    fit(run, standard_callbacks(run))        # the loop below
    run = setup_run(cfg, model=m, data=d)    # from objects a caller built; no files

A second stage trained on in-memory codes, a distributed wrapper or a benchmark builds
its own objects and calls the same two functions.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit import distributed
from vaekit.config import RESUMABLE, RunConfig
from vaekit.data.pipeline import BatchLoader, PreparedData, fixed_transform, prepare_data
from vaekit.errors import CheckpointError, ConfigError
from vaekit.io import write_error
from vaekit.limits import check_model_size
from vaekit.models import build_model
from vaekit.train.checkpoint import (
    KEEP,
    Snapshot,
    capture,
    check_model_config,
    check_position,
    check_states,
    find_checkpoint,
    has_checkpoint,
    load_optimizer,
    load_run_config,
    load_state,
    read_checkpoint,
    save_checkpoint,
    settle,
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


MAX_ROLLBACKS = 3  # a diverged run is rolled back (lr halved) this often, then stopped


class DivergenceError(ConfigError):
    """The loss, the weights or the optimizer state stopped being finite (raised inside
    ``fit``, which rolls the run back to its last good state)."""

    def __init__(self, step: int, what: str) -> None:
        super().__init__(f"{what} at step {step}", "lower --lr")
        self.step, self.what = step, what


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
    keep_checkpoints: int = KEEP  # checkpoints kept in the run directory
    good: Snapshot | None = None  # the last state found finite: where a divergence returns
    rollbacks: int = 0  # divergences rolled back so far (at most MAX_ROLLBACKS)
    world: distributed.World = field(default_factory=distributed.World)  # data-parallel ranks

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state.history

    @property
    def total_steps(self) -> int:
        return self.cfg.train.epochs * len(self.loader)

    def capture(self) -> Snapshot:
        """A CPU copy of model, optimizer, RNG and data-order state, and the counters (this
        epoch's loss sum and examples: of all ranks). Collective in a distributed run."""
        loss_sum, seen = self._epoch_totals()
        counters = {"epoch": self.state.epoch, "step": self.state.step,
                    "history": self.state.history, "step_in_epoch": self.loader.step,
                    "epoch_loss_sum": loss_sum, "epoch_seen": seen, "rollbacks": self.rollbacks}
        return capture(self.model, self.optimizer, counters, self._rng_states())

    def verify(self) -> None:
        """Raise :class:`DivergenceError` unless this epoch's loss sum, the weights and the
        optimizer state are all finite: one host sync (a NaN or Inf loss or gradient in any
        step since the epoch began has reached the loss sum or, through Adam, the weights)."""
        tensors = [self.state.loss_sum, *self.model.parameters(),
                   *(v for st in self.optimizer.state.values() for v in st.values()
                     if isinstance(v, torch.Tensor) and v.is_floating_point())]
        # a NaN or Inf survives a sum, and a float64 sum of finite floats cannot overflow:
        # 4 ms for the default model's 3.3M numbers (an isfinite pass: 15 ms)
        sums = torch.stack([t.detach().sum(dtype=torch.float64).to(self.device)
                            for t in tensors])
        sums = distributed.all_sum(sums)  # every rank takes the same decision
        if bool(sums.isfinite().all()):
            return
        what = ("the training loss is not finite" if not bool(sums[0].isfinite())
                else "the weights or optimizer state are not finite")
        raise DivergenceError(self.state.step, what)

    def checkpoint(self) -> None:
        """Check that the state is finite (else :class:`DivergenceError`), keep it as the last good
        state and save it with checksums (run directories only)."""
        self.verify()
        self.good = self.capture()
        if self.run_dir is not None:  # rank 0 writes; a failure there stops every rank
            distributed.on_main(lambda: save_checkpoint(self.run_dir, self.good, self.cfg.model,
                                                        self.keep_checkpoints))

    def _epoch_totals(self) -> tuple[float, int]:
        """This epoch's loss sum and examples so far, over all ranks."""
        s = self.state
        both = torch.stack([s.loss_sum.detach().double().cpu(), torch.tensor(float(s.seen),
                                                                              dtype=torch.float64)])
        loss_sum, seen = distributed.all_sum(both).tolist()
        return loss_sum, int(seen)

    def _rng_states(self) -> dict[str, torch.Tensor]:
        """The data order (the same on every rank) and each rank's noise generators (rank r's
        as ``torch_rng_rank<r>``, ``cuda_rng_rank<r>`` for r > 0)."""
        states = {"loader_epoch": self.loader.epoch_state,
                  "loader_now": self.loader.generator.get_state()}
        mine = {"torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            mine["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        for rank, rng in enumerate(distributed.gather_objects(mine)):
            states.update({(k if rank == 0 else f"{k}_rank{rank}"): v for k, v in rng.items()})
        return states

    def _set_rng(self, states: dict[str, torch.Tensor]) -> None:
        """This rank's noise generators; a rank the checkpoint has none for (a run resumed on
        more ranks) gets a fresh seed, and the notes say so."""
        suffix = f"_rank{self.world.rank}" if self.world.rank else ""
        fresh = [r for r in range(1, self.world.size) if f"torch_rng_rank{r}" not in states]
        if fresh and self.world.main:  # rank 0 writes the log: it says so for all of them
            self.notes.append(f"rank(s) {', '.join(map(str, fresh))} have no saved noise state "
                              "(the run was saved with fewer ranks): fresh seeds")
        if "torch_rng" + suffix not in states:
            torch.manual_seed(rank_seed(self.cfg.train.seed + self.state.step, self.world.rank))
            return
        torch.set_rng_state(states["torch_rng" + suffix])
        if "cuda_rng" + suffix in states and self.device.type == "cuda":
            torch.cuda.set_rng_state(states["cuda_rng" + suffix], self.device)

    def restore(self) -> None:
        """Continue exactly where the run directory's newest valid checkpoint stopped (the
        notes say which one, and why any newer one was skipped)."""
        # finish a rotation a kill interrupted (rank 0; the others wait and then read)
        distributed.on_main(lambda: settle(self.run_dir, self.keep_checkpoints))
        choice = find_checkpoint(self.run_dir)
        check_model_config(choice, self.cfg.model, self.run_dir / "config.json")
        self.notes += [*choice.notes, f"resumed from {choice.describe()}"]
        snap = read_checkpoint(choice.path)
        self.load(snap, choice.path)
        self.rollbacks = int(snap.counters.get("rollbacks", 0))

    def load(self, snap: Snapshot, where: Path | str = "memory") -> None:
        """Put the run in the state ``snap`` holds, after checking that it fits this run."""
        counters, states = snap.counters, snap.states
        check_position(counters, len(self.loader), self.cfg.train.epochs,
                       Path(where) / "trainer.json")
        load_state(self.model, snap.weights, Path(where))
        load_optimizer(self.optimizer, snap, Path(where) / "trainer.safetensors")
        check_states(states, self.device, Path(where) / "trainer.safetensors")
        self.loader.load_state_dict({"epoch_state": states["loader_epoch"].clone(),
                                     "state": states["loader_now"].clone(),
                                     "step": counters["step_in_epoch"]})
        # the epoch's running sums are of all ranks: rank 0 carries them on
        main = self.world.main
        self.state = TrainState(counters["epoch"], counters["step"],
                                [dict(r) for r in counters["history"]],
                                torch.tensor(float(counters.get("epoch_loss_sum", 0.0)) * main,
                                             device=self.device),
                                int(counters.get("epoch_seen", 0)) * main)
        self._set_rng(states)
        self.good = snap

    def rollback(self, err: DivergenceError) -> str:
        """Return to the last good state with the learning rates halved (once per
        divergence, at most ``MAX_ROLLBACKS`` times; then a one-line error) and say so."""
        good, count = self.good, self.rollbacks + 1
        if count > MAX_ROLLBACKS or good is None:
            raise ConfigError(f"training diverged: {err.problem}, after {MAX_ROLLBACKS} "
                              f"roll-backs that each halved the learning rate; {self._kept()}",
                              f"start a new run with a lower --lr (e.g. "
                              f"{self.cfg.train.lr * 0.5**count:.3g}), a longer --warmup-steps "
                              "or --grad-clip") from None
        self.load(good)
        self.rollbacks, scale = count, 0.5**count
        for group in self.optimizer.param_groups:  # make_step scales scheduled lrs by it too
            group["lr"] = group["lr"] / group.get("lr_scale", 1.0) * scale
            group["lr_scale"] = scale
        return (f"diverged: {err.problem}; rolled back to epoch {good.epoch}, step {good.step} "
                f"with the learning rate halved (x{scale:g}; roll-back {count} of "
                f"{MAX_ROLLBACKS})")

    def _kept(self) -> str:
        """Where the last finite state is, for the message of a run that stops."""
        if self.run_dir is None or not has_checkpoint(self.run_dir):
            return "no checkpoint was written"
        try:
            choice = find_checkpoint(self.run_dir)
        except CheckpointError as err:
            return err.problem
        return f"the last finite checkpoint, {choice.describe()} in {self.run_dir}, is intact"


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


# what a run writes before its first checkpoint (tensorboard/: the TensorBoard callback's logs)
PRE_CHECKPOINT = ("config.json", "train.log", "tensorboard")


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


def setup_run(cfg: RunConfig, run_dir: str | Path | None = None, *, resume: bool = False,
              model: nn.Module | None = None, data: PreparedData | None = None,
              optimizer: torch.optim.Optimizer | None = None) -> Run:
    """Build a run from ``cfg`` (or from the ``model``/``data``/``optimizer`` a caller
    built), in a new ``run_dir``, or restored from it (``resume``). Seeds as ``cfg`` says."""
    cfg.validate()
    world = distributed.init(cfg.train.device)  # under torchrun: join the job (once)
    world_notes = _fit_world(cfg, world, Path(run_dir) if resume and run_dir else None)
    distributed.check_same_json(cfg.to_dict(), "the configuration")
    device = distributed.local_device(resolve_device(cfg.train.device))
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
        check_model_size(m, cfg.train, device, len(data.train_raw))  # before allocating it
        model = build_model(m)
        _init_from_data(model, data)
    model = model.to(device)
    if cfg.train.channels_last:  # NHWC convolutions (oneDNN / cuDNN often prefer them)
        model = model.to(memory_format=torch.channels_last)
    if world.rank:  # every rank its own reparameterization noise (rank 0: as one process)
        torch.manual_seed(rank_seed(cfg.train.seed, world.rank))
    optimizer = optimizer or make_optimizer(model, cfg.train.lr)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed + 1)  # same on every rank
    loader = BatchLoader(data.train_raw, data.transform, data.levels,
                         cfg.train.batch_size * world.size, gen, labels=data.train_y,
                         shard=(world.rank, world.size))
    total = cfg.train.epochs * len(loader)
    step, fast = make_step(model, optimizer, cfg, device, total, world.size)
    run = Run(cfg, model, data, optimizer, loader, step, TrainState(), device,
              None if run_dir is None else Path(run_dir), fast, world=world)
    run.notes = _notes(run) + world_notes + schedule_notes(cfg, run.total_steps)
    _open_run_dir(run, resume)
    return run


def rank_seed(seed: int, rank: int) -> int:
    """The noise seed of rank ``rank`` > 0 of a data-parallel run (rank 0 uses ``seed``)."""
    return (seed + 0x9E3779B97F4A7C15 * rank) % 2**63


def _fit_world(cfg: RunConfig, world: distributed.World, resumed: Path | None) -> list[str]:
    """``train.batch_size`` is per rank; ``train.world_size`` records the ranks. A run resumed
    on another number of ranks keeps its global batch (so its steps and data order): the
    per-rank batch becomes global / ranks."""
    t, notes = cfg.train, []
    saved = load_run_config(resumed).train if resumed and (resumed / "config.json").exists() \
        else None
    # the saved per-rank batch (or the saved global batch) means "continue as saved"; any
    # other batch size is left for the resume check to refuse
    asked = t.batch_size in (saved.batch_size, saved.batch_size * saved.world_size) \
        if saved is not None else False
    if asked:
        glob = saved.batch_size * saved.world_size
        if glob % world.size:
            raise ConfigError(f"the run's global batch of {glob} examples cannot be split "
                              f"evenly across {world.size} ranks", "resume it on a number of "
                              f"ranks that divides {glob}")
        t.batch_size = glob // world.size
        if saved.world_size != world.size:
            notes.append(f"resumed on {world.size} rank(s), saved on {saved.world_size}: batch "
                         f"{t.batch_size} per rank keeps the global batch of {glob} (same steps "
                         "and data order; the reparameterization noise and the order of float "
                         "sums differ, so the weights are not bit-identical to an uninterrupted "
                         "run)")
    t.world_size = world.size
    return notes


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
    if not resume:
        run.notes += distributed.on_main(lambda: prepare_run_dir(run.run_dir)) or []
    else:
        distributed.on_main(lambda: _check_same_run(run.cfg, run.run_dir))
        if pre_checkpoint_only(run.run_dir):  # killed before its first checkpoint
            run.notes.append(f"{run.run_dir} holds no checkpoint yet (the run stopped before "
                             "its first one): training starts from step 0")
        else:
            run.restore()  # the checkpoint loaded: now record e.g. raised epochs
    distributed.on_main(lambda: run.cfg.save(run.run_dir / "config.json"))  # rank 0 writes


def _check_same_run(cfg: RunConfig, run_dir: Path) -> None:
    """A resumed run continues the saved one: only the RESUMABLE settings may differ."""
    saved = load_run_config(run_dir)
    same_global = (cfg.train.batch_size * cfg.train.world_size
                   == saved.train.batch_size * saved.train.world_size)  # see _fit_world
    for path, (new, old) in cfg.differences(saved).items():
        if path == "train.batch_size" and same_global:  # resumed on another number of ranks
            continue
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
            f"device {run.device}; fast path: {run.fast_path}",
            *([f"data parallel: {run.world.size} ranks ({distributed.backend()}), batch "
               f"{t.batch_size} per rank = {t.batch_size * run.world.size} per step"]
              if run.world.active else [])]


class Callback:
    """Hooks of the fit loop; subclasses override what they need."""

    def on_fit_start(self, run: Run) -> None: ...

    def on_step_end(self, run: Run, loss: torch.Tensor) -> None: ...

    def epoch_metrics(self, run: Run) -> dict[str, Any]:
        """Figures added to the epoch's row before it is recorded (e.g. validation)."""
        return {}

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        """After the row is recorded in ``run.state`` (checkpoints, logs, printing)."""

    def on_rollback(self, run: Run, note: str) -> None:
        """After a divergence was rolled back to the last good state (``note`` says how)."""

    def on_fit_end(self, run: Run) -> None:
        """Always called, also when the loop stops with an exception."""


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
    finally:
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


def _epoch_row(epoch: int, step: int, loss: float, n_timed: int,
               seconds: float) -> dict[str, Any]:
    """The epoch's figures: mean training loss over all its examples, speed of this pass."""
    return {"epoch": epoch + 1, "step": step, "train_loss": loss,
            "seconds": round(seconds, 3), "images_per_s": round(n_timed / max(seconds, 1e-9), 1)}


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          checkpoint_every: int = 0, on_epoch: Any = None, echo: bool | None = None,
          keep_checkpoints: int = KEEP) -> Run:
    """Train ``cfg`` into ``run_dir`` (new), or continue the run saved there (``resume``).

    ``progress`` shows a progress bar and prints the set-up and one line per epoch (``echo``
    prints them without the bar); ``checkpoint_every`` > 0 also checkpoints every that many
    steps inside an epoch; ``on_epoch(row, model)`` is called after each epoch's validation
    and checkpoint (e.g. to evaluate or stop early). With a ``stage2`` section, stage 2 of
    the two-stage VAE is fitted next, into ``run_dir/stage2`` (see ``vaekit.train.stages``);
    the stage-1 run is returned. The last ``keep_checkpoints`` checkpoints are kept.
    """
    from vaekit.train.callbacks import standard_callbacks
    from vaekit.train.stages import fit_stage2

    run = setup_run(cfg, run_dir, resume=resume)
    run.keep_checkpoints = keep_checkpoints
    fit(run, standard_callbacks(run, progress=progress, echo=echo,
                                checkpoint_every=checkpoint_every, on_epoch=on_epoch))
    if cfg.stage2 is not None:
        fit_stage2(run_dir, progress=progress, echo=echo, checkpoint_every=checkpoint_every)
    return run
