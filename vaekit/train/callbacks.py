"""The fit loop's standard callbacks: divergence guard, validation, checkpoints, metric logs,
console output.

``standard_callbacks(run, ...)`` gives what ``vaekit train`` uses, in this order (the order
of their ``on_epoch_end``): guard -> validate -> checkpoint -> metrics files -> TensorBoard
(a no-op without the package) -> console -> user hook.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from vaekit import distributed
from vaekit.io import append_text, atomic_write_text
from vaekit.numerics import derive_seed, seeded_generator, to_bits_per_dim
from vaekit.objectives.elbo import elbo_terms
from vaekit.train.base import Callback, DivergenceError, Run


def validate(run: Run) -> dict[str, float]:
    """Mean validation ELBO (nats/example, and bits/dim when they apply), with fixed noise."""
    val, cfg = run.data.val, run.cfg
    if len(val) == 0:
        return {}
    run.model.eval()
    with distributed.sharded():  # data parallel: each rank a block of the examples
        v = elbo_terms(run.model, val, cfg.train.eval_batch_size,
                       seed=derive_seed(cfg.data.eval_seed, "val-elbo"))
    val_elbo = float(v["elbo"].double().mean())
    out = {"val_elbo": val_elbo, "val_kl": float(v["kl"].double().mean()),
           "val_log_px_z": float(v["log_px_z"].double().mean())}  # ELBO = log_px_z - KL
    bpd = to_bits_per_dim(-val_elbo, run.data.bpd_offset, run.data.dim)
    if bpd is not None:
        out["val_bpd"] = bpd
    return out


class DivergenceGuard(Callback):
    """A non-finite loss ends the step it happens in, on CPU: there the loss is computed
    by the time ``step`` returns, so reading it costs no wait (0.3 us per step, measured;
    a step of the default model takes ~6 ms). On a GPU the check would stall the pipeline
    every step, so nothing happens per step: the epoch's loss sum on the device accumulates
    every step's loss, a bad gradient poisons the weights through Adam, and ``Run.verify``
    reads both at every checkpoint and epoch end, before anything is saved. Either way
    ``fit`` rolls back."""

    def __init__(self) -> None:
        self.per_step = False

    def on_fit_start(self, run: Run) -> None:
        # data parallel: a rank's own loss is not what every rank sees, so only the checks
        # at checkpoints and epoch ends (over all ranks) decide
        self.per_step = run.device.type == "cpu" and not run.world.active

    def on_step_end(self, run: Run, loss: torch.Tensor) -> None:
        if self.per_step and not math.isfinite(value := loss.item()):
            raise DivergenceError(run.state.step, f"the training loss is {value}")


class Validate(Callback):
    """Validation ELBO and the likelihood's learned noise parameters, every epoch."""

    def epoch_metrics(self, run: Run) -> dict[str, Any]:
        likelihood = getattr(run.model, "likelihood", None)
        extra = likelihood.extra_metrics() if likelihood is not None else {}
        lr = {"lr": run.optimizer.param_groups[0]["lr"]} if run.optimizer.param_groups else {}
        return {**validate(run), **extra, **lr}  # lr: the weights' rate at the epoch's end


class Checkpoint(Callback):
    """A checkpoint at every epoch end, and every ``every`` steps inside an epoch."""

    def __init__(self, every: int = 0) -> None:
        self.every = every

    def on_step_end(self, run: Run, loss: torch.Tensor) -> None:
        if self.every and run.state.step % self.every == 0 and run.loader.step < len(run.loader):
            run.checkpoint()  # mid-epoch (epoch ends are saved below)

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        run.checkpoint()


class MetricsFiles(Callback):
    """``metrics.jsonl`` and ``metrics.csv``, rewritten from the history (robust to resume),
    and ``train.log``: the set-up notes and one line per epoch, appended. Data parallel:
    every rank calls it and rank 0 writes (``distributed.on_main``: a failed write there,
    e.g. a full disk, stops every rank with its message instead of leaving them waiting)."""

    def on_fit_start(self, run: Run) -> None:
        distributed.on_main(lambda: self._start(run))

    def _start(self, run: Run) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        start = "resumed" if run.state.step else "started"
        self._append(run, [f"{stamp} {start} at epoch {run.state.epoch}, step {run.state.step}",
                           *run.notes])
        if run.state.history or (run.run_dir / "metrics.jsonl").exists():
            self._write(run)  # a resume: the files say what the checkpoint's history says

    def on_rollback(self, run: Run, note: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        distributed.on_main(lambda: (self._append(run, [f"{stamp} {note}"]), self._write(run)))

    def on_interrupt(self, run: Run, note: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        distributed.on_main(lambda: self._append(run, [f"{stamp} {note}"]))

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        distributed.on_main(lambda: (self._write(run), self._append(run, [epoch_line(row, run)])))

    @staticmethod
    def _write(run: Run) -> None:
        history = run.state.history
        atomic_write_text(run.run_dir / "metrics.jsonl",
                          "".join(json.dumps(r) + "\n" for r in history))
        keys = list(dict.fromkeys(k for r in history for k in r))
        rows = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in history]
        atomic_write_text(run.run_dir / "metrics.csv", "\n".join(rows) + "\n")

    @staticmethod
    def _append(run: Run, lines: list[str]) -> None:
        append_text(run.run_dir / "train.log", "".join(line + "\n" for line in lines),
                    "the training log")


class Console(Callback):
    """A progress bar with the live loss (``bar``), the set-up notes and one line per epoch
    (``echo``)."""

    def __init__(self, bar: bool = True, echo: bool = True) -> None:
        self.show_bar, self.echo = bar, echo
        self.bar: tqdm | None = None

    def _print(self, line: str) -> None:
        if self.echo:
            (self.bar.write if self.bar is not None else print)(line)

    def on_fit_start(self, run: Run) -> None:
        if self.show_bar:
            self.bar = tqdm(total=run.total_steps, initial=run.state.step, desc="train",
                            unit="step", mininterval=0.5)
        for note in run.notes:
            self._print(note)

    def on_step_end(self, run: Run, loss: torch.Tensor) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if run.state.step % 50 == 0:  # the live loss: one host sync every 50 steps
                self.bar.set_postfix(loss=f"{loss.item():.2f}")

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        self._print(epoch_line(row, run))

    def on_rollback(self, run: Run, note: str) -> None:
        if self.bar is not None:
            self.bar.n = run.state.step
            self.bar.refresh()
        self._print(note)

    def on_fit_end(self, run: Run) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class OnEpoch(Callback):
    """Calls ``fn(row, model)`` after each epoch (e.g. to evaluate or stop early)."""

    def __init__(self, fn: Callable[[dict[str, Any], torch.nn.Module], None]) -> None:
        self.fn = fn

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        self.fn(row, run.model)


class TensorBoard(Callback):
    """Live logs for TensorBoard in ``RUN_DIR/tensorboard/`` when the ``tensorboard`` package
    is installed (``pip install vaekit[tensorboard]``); without it, nothing (metrics.jsonl
    and metrics.csv are the record). Scalars: every number of each epoch's row (x = epoch)
    and the training loss every ``every`` steps (x = step); for image data, a grid of 64
    prior samples and of validation images beside their reconstructions each epoch (fixed
    seed: the global random state is not touched)."""

    def __init__(self, every: int = 50) -> None:
        self.every, self.writer = every, None

    def on_fit_start(self, run: Run) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises ImportError when tensorboard is missing
            return
        with self._guard():
            self.writer = SummaryWriter(str(run.run_dir / "tensorboard"))

    @contextlib.contextmanager
    def _guard(self):
        """Live logs are a view: a failed write turns them off (with a note), never the run."""
        try:
            yield
        except OSError as err:
            print(f"note: TensorBoard logging stopped ({err})", file=sys.stderr)
            self.writer = None

    def on_step_end(self, run: Run, loss: torch.Tensor) -> None:
        if self.writer is not None and run.state.step % self.every == 0:
            with self._guard():
                self.writer.add_scalar("train/loss_step", float(loss), run.state.step)

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        with self._guard():
            self._epoch(run, row)

    def _epoch(self, run: Run, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float):
                self.writer.add_scalar(f"epoch/{key}", value, row["epoch"])
        if run.data.dataset.is_image and len(run.data.shape) >= 2:
            self._images(run, row["epoch"])
        self.writer.flush()

    @torch.no_grad()
    def _images(self, run: Run, epoch: int) -> None:
        """64 prior samples, and 32 validation images each beside its reconstruction, as
        image grids (TensorBoard tiles a batch of images, 8 per row)."""
        model, n = run.model, 64
        y = torch.arange(n, device=run.device) % run.cfg.model.num_classes \
            if model.conditional else None
        gen = seeded_generator(derive_seed(run.cfg.train.seed, "sample-grid"), run.device)
        x = model.sample(n, generator=gen, y=y)
        val = run.data.val[:32] if len(run.data.val) else run.data.test[:32]
        rec = model.reconstruct(val)
        pairs = torch.stack([val.x, rec], 1).reshape(-1, *val.x.shape[1:])  # input, rec, ...
        for tag, images in (("samples", x), ("reconstructions", pairs)):
            batch = images.float().clamp(0, 1).cpu()
            batch = batch.unsqueeze(1) if batch.dim() == 3 else batch  # (N, C, H, W)
            self.writer.add_images(tag, batch, epoch, dataformats="NCHW")

    def on_fit_end(self, run: Run) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def loss_name(run: Run) -> str:
    """What the training loss is, e.g. ``-ELBO``, ``-ELBO(beta=0.5)``, ``-IWAE-5``."""
    t = run.cfg.train
    if t.objective.name == "iwae":
        return f"-IWAE-{t.objective.k}"
    if t.objective.name == "elbo":
        if t.beta_warmup_steps and run.state.step <= t.beta_warmup_steps:
            return f"-ELBO(beta warming up to {t.beta:g})"
        return "-ELBO" if t.beta == 1 else f"-ELBO(beta={t.beta:g})"
    return f"{t.objective.name} loss"


def epoch_line(row: dict[str, Any], run: Run) -> str:
    line = (f"epoch {row['epoch']}/{run.cfg.train.epochs}: train {loss_name(run)} "
            f"{row['train_loss']:.2f} nats/example ({row['images_per_s']:.0f} img/s)")
    if "val_elbo" in row:
        line += f", val -ELBO {-row['val_elbo']:.2f} nats/example"
        if "val_bpd" in row:
            line += f" ({row['val_bpd']:.4f} bits/dim)"
    left = run.cfg.train.epochs - row["epoch"]
    if left > 0:  # the time the remaining epochs take at this epoch's pace
        line += f"; {_duration(left * row['seconds'])} to go"
    return line


def _duration(seconds: float) -> str:
    """``12 s``, ``4.2 min``, ``3.1 h``, ``9.5 days``, ``about 10^4 years``."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            n = seconds / size
            return f"about 10^{int(math.log10(n))} {unit}" if n >= 10**4 else f"{n:.1f} {unit}"
    return f"{seconds:.0f} s"


def standard_callbacks(run: Run, progress: bool = True, echo: bool | None = None,
                       checkpoint_every: int = 0,
                       on_epoch: Callable[[dict[str, Any], torch.nn.Module], None] | None = None
                       ) -> list[Callback]:
    """The divergence guard, validation, then (with a run directory) checkpoints, metric
    files and TensorBoard logs (when tensorboard is installed), the console (bar when
    ``progress``; lines when ``echo``, default = ``progress``), the user hook. In a
    data-parallel run only rank 0 logs and prints (all ranks validate and checkpoint:
    both are collective, and rank 0 writes)."""
    cbs: list[Callback] = [DivergenceGuard(), Validate()]
    main = run.world.main
    if run.run_dir is not None:
        cbs += [Checkpoint(checkpoint_every), MetricsFiles(), *([TensorBoard()] if main else [])]
    if main:
        cbs.append(Console(bar=progress, echo=progress if echo is None else echo))
    if on_epoch is not None:
        cbs.append(OnEpoch(on_epoch))
    return cbs
