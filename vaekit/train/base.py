"""The training layer's base types, below the loop and the callbacks: where training
stands (:class:`TrainState`), everything ``fit`` needs (:class:`Run`: model, data,
optimizer, loader, step and state, with capture, verify, checkpoint, restore and
roll-back), the hooks of the loop (:class:`Callback`) and :class:`DivergenceError`.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit import distributed
from vaekit.config import RunConfig
from vaekit.data.pipeline import BatchLoader, PreparedData
from vaekit.errors import CheckpointError, ConfigError
from vaekit.io import DirectoryLock
from vaekit.train.checkpoint import (
    KEEP,
    Choice,
    Snapshot,
    capture,
    check_model_config,
    check_position,
    check_states,
    find_checkpoint,
    has_checkpoint,
    load_optimizer,
    load_state,
    read_checkpoint,
    save_checkpoint,
    settle,
)
from vaekit.train.step import Step


@dataclass
class TrainState:
    """Where training stands: what a checkpoint records beside the tensors."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))  # this epoch's
    seen: int = 0  # examples of this epoch so far (both survive a mid-epoch resume)


MAX_ROLLBACKS = 3  # a diverged run is rolled back (lr halved) this often, then stopped
STOP_CHECK_EVERY = 16  # data parallel: steps between the collective checks for a stop


class Interrupted(KeyboardInterrupt):
    """Training stopped at a step boundary because a signal asked it to (SIGTERM from a
    scheduler, Ctrl-C); ``line`` says where, and where the state was saved. ``exit_code``:
    128 + the signal's number, as a shell reports a process that a signal ended."""

    def __init__(self, line: str, exit_code: int) -> None:
        super().__init__(line)
        self.line, self.exit_code = line, exit_code


class StopRequest:
    """A stop asked for from outside the loop (the CLI's signal handlers set ``signal``);
    ``fit`` takes it at its next step boundary, where the state is consistent, saves a
    checkpoint there and raises :class:`Interrupted`. ``armed``: a loop is running."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self.armed = False

    def pending(self, run: Run) -> bool:
        """Whether to stop after this step: at once in one process; in a data-parallel run
        every ``STOP_CHECK_EVERY`` steps, decided together (any rank asked) so that every
        rank stops at the same step."""
        if not run.world.active:
            return self.signal is not None
        if run.state.step % STOP_CHECK_EVERY:
            return False
        asked = torch.tensor([float(self.signal is not None)], device=run.device)
        return bool(distributed.all_sum(asked).item() > 0)


STOP = StopRequest()


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
    saved: Choice | None = None  # the checkpoint this process saved last (rank 0)
    stage2: Run | None = None  # a two-stage run: stage 2's run, once it was fitted
    allow_unverified: bool = False  # resume from a checkpoint without checksums (<= 0.2.0)
    lock: DirectoryLock | None = None  # held on the run directory while the run writes it

    def release(self) -> None:
        """Give up the run directory's lock (another process may now write it)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

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
            self.saved = distributed.on_main(lambda: save_checkpoint(
                self.run_dir, self.good, self.cfg.model, self.keep_checkpoints))

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
        choice = find_checkpoint(self.run_dir, self.allow_unverified)
        check_model_config(choice, self.cfg.model, self.run_dir / "config.json")
        self.notes += [*choice.notes, f"resumed from {choice.describe()}"]
        self.saved = choice
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
            choice = find_checkpoint(self.run_dir, self.allow_unverified)
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


def rank_seed(seed: int, rank: int) -> int:
    """The noise seed of rank ``rank`` > 0 of a data-parallel run (rank 0 uses ``seed``)."""
    return (seed + 0x9E3779B97F4A7C15 * rank) % 2**63



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

    def on_interrupt(self, run: Run, note: str) -> None:
        """After a signal stopped the loop at a step boundary (``note``: where, and where
        the state was saved)."""

    def on_fit_end(self, run: Run) -> None:
        """Always called, also when the loop stops with an exception."""
