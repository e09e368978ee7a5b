"""Data parallelism on ``torch.distributed``: the same commands under ``torchrun``.

``torchrun --nproc-per-node N -m vaekit train ...`` starts N processes and sets, for each,
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; vaekit reads
those five (plus ``VAEKIT_DIST_BACKEND`` and ``VAEKIT_DIST_TIMEOUT``), joins the process group
(NCCL for CUDA devices, gloo for CPUs) and then:

- training (``vaekit.train``): every rank builds the same model and data, takes a disjoint
  contiguous block of each global batch of the shared permutation, and DDP all-reduces
  the gradients (see :class:`LossModule`); only rank 0 writes files;
- evaluation: inside :func:`sharded`, the per-example primitives (ELBO terms, the log p(x)
  estimators, KDE densities, feature extraction) compute a contiguous block of rows on each
  rank and :func:`gather_rows` joins them in order, so every rank ends with the figures of
  one process (sums and counts are reduced, never means of means).

With one process (no ``torchrun``) every function here is a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from vaekit.errors import ConfigError, VaekitError

T = TypeVar("T")

ENV_BACKEND = "VAEKIT_DIST_BACKEND"  # gloo | nccl (default: nccl for CUDA devices, else gloo)
ENV_TIMEOUT = "VAEKIT_DIST_TIMEOUT"  # seconds a collective waits for a missing rank
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank in [0, size), its node-local rank."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world() -> World:
    """The current process group (one process when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def launch_size() -> int:
    """The number of processes the launcher (torchrun) started: ``WORLD_SIZE``, 1 without
    one; known before the process group is joined."""
    value = os.environ.get("WORLD_SIZE", "") or "1"
    if not value.isdigit() or not 1 <= int(value) <= 1 << 20:
        raise ConfigError(f"WORLD_SIZE={value!r} is not a number of processes",
                          "unset it, or start distributed runs with torchrun --nproc-per-node N")
    return int(value)


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started more than one process."""
    return launch_size() > 1


def timeout_seconds() -> float:
    value = os.environ.get(ENV_TIMEOUT, "")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{ENV_TIMEOUT}={value!r} is not a positive number of seconds",
                          f"set e.g. {ENV_TIMEOUT}=600")
    return seconds


def init(device: str = "auto") -> World:
    """Join the process group that the launcher's environment describes (a no-op for one
    process or when already joined). ``device`` picks the default backend."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return world()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing or not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but "
                          + (f"{', '.join(missing)} not" if missing else
                             "torch.distributed is not available"),
                          "start distributed runs with torchrun --nproc-per-node N -m vaekit ...")
    cuda = not str(device).startswith("cpu") and torch.cuda.is_available()
    backend = os.environ.get(ENV_BACKEND) or ("nccl" if cuda else "gloo")
    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"{ENV_BACKEND}={backend!r} is not a supported backend",
                          "use gloo (CPUs) or nccl (CUDA GPUs)")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
    return world()


def shutdown(wait: bool = True) -> None:
    """Leave the process group at the end of a command. ``wait``: after every rank got here
    (none tears its connections down while another still uses them: that aborted a rank
    now and then); on an error, at once (the others may never get here)."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            with contextlib.suppress(RuntimeError, ValueError):  # a rank already gone
                dist.barrier()
        dist.destroy_process_group()


def backend() -> str:
    """The process group's backend (``gloo`` / ``nccl``), or ``none``."""
    return dist.get_backend() if world().active else "none"


def local_device(device: torch.device) -> torch.device:
    """A CUDA device becomes this rank's GPU (``cuda:LOCAL_RANK``) in a job of several
    processes (known from the launcher's environment, also before joining the group)."""
    if launched() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def _comm_device() -> torch.device:
    """Where collective buffers live: the GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def block(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rows [a, b) of rank ``rank`` out of n split into ``size`` contiguous blocks whose
    sizes differ by at most one."""
    return n * rank // size, n * (rank + 1) // size


def check_same_json(obj: object, what: str) -> None:
    """Refuse a job whose ranks were given different settings (a hash of ``obj`` as JSON)."""
    if not world().active:
        return
    text = json.dumps(obj, sort_keys=True, default=str)
    digests = gather_objects(hashlib.sha256(text.encode()).hexdigest()[:16])
    odd = [r for r, d in enumerate(digests) if d != digests[0]]
    if odd:
        raise ConfigError(f"{what} differs between ranks: rank 0 and rank(s) "
                          f"{', '.join(map(str, odd))} were given different settings",
                          "start every rank with the same command line and files")


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over all ranks (a new tensor, on ``t``'s device); ``t`` itself with
    one process."""
    if not world().active:
        return t
    buf = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf)
    return buf.to(t.device)


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` (small, picklable: e.g. RNG states), in rank order."""
    w = world()
    if not w.active:
        return [obj]
    out: list[object] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


_LOST = ("connection reset", "connection closed", "broken pipe", "timed out", "timeout",
         "nccl", "gloo")


def collective_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another rank is gone (or hangs
    past ``VAEKIT_DIST_TIMEOUT``) in a distributed job."""
    if not world().active:
        return False
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(word in text for word in _LOST)


def barrier() -> None:
    if world().active:
        dist.barrier()


class RankError(VaekitError):
    """Rank 0 failed at something only it does (writing files): every other rank raises
    this with rank 0's message, so the job stops together instead of waiting on it."""

    quiet = True  # rank 0 prints the message; the CLI prints nothing for this one


def on_main(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 only (all of it with one process) and share the outcome: a
    :class:`VaekitError` there is raised on every rank. Returns ``fn()``'s value on rank 0,
    None elsewhere. Every rank must call it."""
    w = world()
    if not w.active:
        return fn()
    outcome: list[object] = [None]
    result, error = None, None
    if w.main:
        try:
            result = fn()
        except VaekitError as err:
            error, outcome[0] = err, (err.problem, err.fix, err.exit_code)
        except BaseException as err:
            outcome[0] = (f"rank 0 stopped: {type(err).__name__}: {err}", "", 1)
            dist.broadcast_object_list(outcome, src=0)
            raise
    dist.broadcast_object_list(outcome, src=0)
    if error is not None:
        raise error
    if outcome[0] is not None:
        problem, fix, code = outcome[0]
        err = RankError(problem, fix)
        err.exit_code = code
        raise err
    return result


# ---------------------------------------------------------------- sharded evaluation

_SHARDING = [False]


@contextlib.contextmanager
def sharded() -> Iterator[None]:
    """Inside: the per-example evaluation primitives split their rows across the ranks and
    gather the results (every rank must enter it and call the same primitives)."""
    old, _SHARDING[0] = _SHARDING[0], world().active
    try:
        yield
    finally:
        _SHARDING[0] = old


def _splits(n: int) -> int:
    """Ranks the rows are split across: the world inside :func:`sharded` (when each gets at
    least one row), else 1."""
    size = world().size
    return size if _SHARDING[0] and n >= size else 1


def local_rows(n: int) -> tuple[int, int]:
    """This rank's rows [a, b) of n examples (all of them when not sharded)."""
    size = _splits(n)
    return block(n, world().rank, size) if size > 1 else (0, n)


def gather_rows(t: torch.Tensor, n: int, dim: int = 0) -> torch.Tensor:
    """Join every rank's rows (from :func:`local_rows` of n) of ``t`` along ``dim``, in
    rank order: the full (..., n, ...) tensor on every rank. ``t`` itself when not sharded."""
    size = _splits(n)
    if size == 1:
        return t
    sizes = [b - a for a, b in (block(n, r, size) for r in range(size))]
    rows = t.movedim(dim, 0)
    dtype = torch.uint8 if rows.dtype == torch.bool else rows.dtype  # gloo has no bool
    pad = torch.zeros((max(sizes), *rows.shape[1:]), dtype=dtype, device=_comm_device())
    pad[: len(rows)] = rows.to(pad.device, dtype)
    parts = [torch.empty_like(pad) for _ in range(size)]
    dist.all_gather(parts, pad)
    out = torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])
    return out.to(t.device, rows.dtype).movedim(0, dim)


# ---------------------------------------------------------------- training


class LossModule(nn.Module):
    """The module DDP wraps: ``forward(batch, beta)`` returns (loss for backward, loss).

    Rank r holds n_r of the N rows of a global batch; ``loss_fn`` is its mean over them.
    DDP averages gradients over the W ranks, so the backward loss is scaled by W n_r / N:
    (1/W) sum_r W n_r/N grad(mean_r) = grad(global mean), exact also for a last, uneven
    batch. A rank without rows still runs a forward (DDP needs every rank in the
    all-reduce) with a zero loss that touches every parameter.
    """

    def __init__(self, model: nn.Module, loss_fn) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch, beta: float, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        if len(batch) == 0:
            zero = sum(p.sum() for p in self.model.parameters()) * 0.0
            return zero, zero.detach()
        loss = self.loss_fn(self.model, batch, beta)
        return loss * (world().size * len(batch) / total), loss.detach()


def wrap(model: nn.Module, loss_fn, device: torch.device) -> nn.Module:
    """``LossModule(model, loss_fn)`` in DistributedDataParallel (rank 0's weights are
    broadcast to every rank when it is built)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(LossModule(model, loss_fn), device_ids=ids)
