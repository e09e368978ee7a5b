"""From a loaded dataset to model inputs: validation split, fixed eval transforms, batches.

The whole split lives in one tensor (on the training device); a batch is a slice of a
tensor shuffled once per epoch (labels follow the same permutation), never a per-sample
DataLoader.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from vaekit.data.batch import Batch
from vaekit.data.datasets import Dataset, load_dataset
from vaekit.data.transforms import (
    LikelihoodSpec,
    apply_transform,
    check_range,
    protocol,
    resolve_transform,
)
from vaekit.distributed import block
from vaekit.errors import DataError
from vaekit.numerics import derive_seed, seeded_generator, seeded_split


@dataclass
class PreparedData:
    """Training split (raw, transformed per batch) plus fixed-transformed val and test."""

    dataset: Dataset
    transform: str  # the resolved transform
    train_raw: torch.Tensor  # (N, *shape) as stored
    train_y: torch.Tensor | None  # (N,) labels, or None
    val: Batch  # (V, *shape) float, fixed transform, with labels where the data have them
    test: Batch  # (M, *shape)
    protocol: str  # sentence printed beside every number
    likelihood: LikelihoodSpec  # the likelihood class the protocol serves
    val_raw: torch.Tensor | None = None  # (V, *shape) as stored (for other transforms)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one model input (after the transform)."""
        return tuple(self.test.x.shape[1:])

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    @property
    def levels(self) -> int | None:
        return self.dataset.levels

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def bpd_offset(self) -> float | None:
        """Nats added to -log p(x) for a discrete-data NLL; None when bits/dim do not apply."""
        return self.likelihood.bpd_offset(self.transform, self.levels, self.dim)

    def to(self, device: torch.device) -> PreparedData:
        self.train_raw = self.train_raw.to(device)
        self.val_raw = None if self.val_raw is None else self.val_raw.to(device)
        self.train_y = None if self.train_y is None else self.train_y.to(device)
        self.val, self.test = self.val.to(device), self.test.to(device)
        return self


class DataSettings(Protocol):
    """What the data layer reads of a run's data settings (``vaekit.config.DataConfig``)."""

    name: str  # dataset name, or a directory / file path
    transform: str  # auto, or a transform name
    val_fraction: float  # share of the training split held out for validation
    eval_seed: int  # seed of the fixed transform of the validation set (+ 1: test set)
    limit: int  # the first N training examples only (0 = all)


def prepare_data(cfg: DataSettings, lik: LikelihoodSpec, seed: int) -> PreparedData:
    """Load ``cfg.name``, split off validation data (seeded), apply the fixed eval transform
    under which the likelihood class ``lik`` is a proper likelihood."""
    ds = load_dataset(cfg.name)
    transform = resolve_transform(cfg.transform, lik, ds.levels)
    for split, x in (("training split", ds.train), ("test split", ds.test)):
        check_range(x, transform, lik, ds.levels, f"the {split} of {ds.source}")
    n = cfg.limit or len(ds.train)
    train, train_y = ds.train[:n], None if ds.train_y is None else ds.train_y[:n]
    if len(train) < 2 or len(ds.test) == 0:
        raise DataError(f"{ds.source} has {len(train)} training and {len(ds.test)} test "
                        "examples: too few to train and evaluate", "use a larger dataset")
    n_val = int(len(train) * cfg.val_fraction)
    held_i, keep_i = seeded_split(len(train), n_val, seed)
    keep, held = Batch(train, train_y)[keep_i], Batch(train, train_y)[held_i]
    val = Batch(fixed_transform(held.x, transform, ds.levels, derive_seed(cfg.eval_seed, "val")),
                held.y)
    test = Batch(fixed_transform(ds.test, transform, ds.levels,
                                 derive_seed(cfg.eval_seed, "test")), ds.test_y)
    return PreparedData(ds, transform, keep.x, keep.y, val, test,
                        protocol(transform, lik, ds.levels, cfg.eval_seed), lik, held.x)


def fixed_transform(x: torch.Tensor, transform: str, levels: int | None,
                    seed: int) -> torch.Tensor:
    """The evaluation version of a transform: one draw with a fixed seed (e.g. binarized once)."""
    return apply_transform(transform, x, levels, seeded_generator(seed, x.device))


class BatchLoader:
    """Shuffled mini-batches of one in-memory tensor (and its labels) with a per-batch
    random transform.

    Reproducible and resumable: the permutation of each epoch comes from ``generator``; the
    state before the permutation and the step inside the epoch are enough to resume exactly.

    Data-parallel: ``shard=(rank, world)`` yields rank's contiguous block of each (global)
    batch of ``batch_size`` rows, transformed as a whole first, so that every rank, with
    the same generator, sees its part of exactly what one process would (``Batch.total``
    holds the global batch's size).
    """

    def __init__(self, raw: torch.Tensor, transform: str, levels: int | None,
                 batch_size: int, generator: torch.Generator, drop_last: bool = False,
                 labels: torch.Tensor | None = None, shard: tuple[int, int] = (0, 1)) -> None:
        self.raw, self.labels, self.transform, self.levels = raw, labels, transform, levels
        self.batch_size, self.generator, self.drop_last = batch_size, generator, drop_last
        self.shard = shard
        self.step = 0  # batches already yielded in the current epoch
        self.epoch_state = generator.get_state()  # generator state before this epoch's perm
        self._resume_state: torch.Tensor | None = None

    def __len__(self) -> int:
        n, b = len(self.raw), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def remaining(self) -> int:
        """Examples still to come in the current epoch."""
        return max(0, len(self.raw) - self.step * self.batch_size)

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"epoch_state": self.epoch_state, "state": self.generator.get_state(),
                "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.epoch_state, self.step = state["epoch_state"], int(state["step"])
        self._resume_state = state["state"]

    def epoch(self) -> Iterator[Batch]:
        """Yield the (remaining) batches of one epoch: x (B, *shape) float, y (B,) or None."""
        resume = self._resume_state
        if resume is None:
            self.epoch_state, self.step = self.generator.get_state(), 0
        else:
            self.generator.set_state(self.epoch_state)
        perm = torch.randperm(len(self.raw), generator=self.generator, device=self.raw.device)
        xs = self.raw[perm]  # one gather per epoch; batches below are views
        ys = None if self.labels is None else self.labels[perm]
        if resume is not None:
            if self.step > 0:  # mid-epoch: continue the noise stream after batch `step`
                self.generator.set_state(resume)
            self._resume_state = None
        for i in range(self.step, len(self)):
            rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
            self.step = i + 1
            x = apply_transform(self.transform, xs[rows], self.levels, self.generator)
            batch = Batch(x, None if ys is None else ys[rows])
            if self.shard[1] > 1:
                a, b = block(len(batch), *self.shard)
                batch = Batch(batch.x[a:b], None if ys is None else batch.y[a:b], len(batch))
            yield batch
        self.step = 0
        self.epoch_state = self.generator.get_state()
