"""From a loaded dataset to model inputs: validation split, fixed eval transforms, batches.

The whole split lives in one tensor (on the training device); a batch is a slice of a
tensor shuffled once per epoch, never a per-sample DataLoader.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from vaekit.config import DataConfig
from vaekit.data.datasets import Dataset, load_dataset
from vaekit.data.transforms import (
    apply_transform,
    bits_per_dim_offset,
    check_range,
    protocol,
    resolve_transform,
)
from vaekit.errors import DataError


@dataclass
class PreparedData:
    """Training split (raw, transformed per batch) plus fixed-transformed val and test."""

    dataset: Dataset
    transform: str  # the resolved transform
    train_raw: torch.Tensor  # (N, *shape) as stored
    val: torch.Tensor  # (V, *shape) float, fixed transform
    test: torch.Tensor  # (M, *shape) float, fixed transform
    protocol: str  # sentence printed beside every number
    likelihood: str = "bernoulli"  # the likelihood the protocol serves

    @property
    def shape(self) -> tuple[int, ...]:
        return self.dataset.shape

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    @property
    def bpd_offset(self) -> float | None:
        """Nats added to -log p(x) for a discrete-data NLL; None when bits/dim do not apply."""
        return bits_per_dim_offset(self.transform, self.dataset.levels, self.dim,
                                   self.likelihood)

    def to(self, device: torch.device) -> PreparedData:
        self.train_raw, self.val, self.test = (t.to(device) for t in
                                               (self.train_raw, self.val, self.test))
        return self


def prepare_data(cfg: DataConfig, likelihood: str, seed: int) -> PreparedData:
    """Load ``cfg.name``, split off validation data (seeded), apply the fixed eval transform."""
    ds = load_dataset(cfg.name)
    transform = resolve_transform(cfg.transform, likelihood, ds.levels)
    for split, x in (("training split", ds.train), ("test split", ds.test)):
        check_range(x, transform, likelihood, ds.levels, f"the {split} of {ds.source}")
    train = ds.train[: cfg.limit] if cfg.limit else ds.train
    if len(train) < 2 or len(ds.test) == 0:
        raise DataError(f"{ds.source} has {len(train)} training and {len(ds.test)} test "
                        "examples: too few to train and evaluate", "use a larger dataset")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(train) * cfg.val_fraction)
    train_raw, val_raw = train[perm[n_val:]], train[perm[:n_val]]
    return PreparedData(ds, transform, train_raw, fixed_transform(val_raw, transform, ds.levels,
                                                                  cfg.eval_seed),
                        fixed_transform(ds.test, transform, ds.levels, cfg.eval_seed + 1),
                        protocol(transform, likelihood, cfg.eval_seed), likelihood)


def fixed_transform(x: torch.Tensor, transform: str, levels: int | None,
                    seed: int) -> torch.Tensor:
    """The evaluation version of a transform: one draw with a fixed seed (e.g. binarized once)."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    return apply_transform(transform, x, levels, g)


class BatchLoader:
    """Shuffled mini-batches of one in-memory tensor with a per-batch random transform.

    Reproducible and resumable: the permutation of each epoch comes from ``generator``; the
    state before the permutation and the step inside the epoch are enough to resume exactly.
    """

    def __init__(self, raw: torch.Tensor, transform: str, levels: int | None,
                 batch_size: int, generator: torch.Generator, drop_last: bool = False) -> None:
        self.raw, self.transform, self.levels = raw, transform, levels
        self.batch_size, self.generator, self.drop_last = batch_size, generator, drop_last
        self.step = 0  # batches already yielded in the current epoch
        self.epoch_state = generator.get_state()  # generator state before this epoch's perm

    def __len__(self) -> int:
        n, b = len(self.raw), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"epoch_state": self.epoch_state, "state": self.generator.get_state(),
                "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.epoch_state, self.step = state["epoch_state"], int(state["step"])
        self._resume_state = state["state"]

    def epoch(self) -> Iterator[torch.Tensor]:
        """Yield the (remaining) batches of one epoch: (B, *shape) float tensors."""
        resume = getattr(self, "_resume_state", None)
        if resume is None:
            self.epoch_state, self.step = self.generator.get_state(), 0
        else:
            self.generator.set_state(self.epoch_state)
        perm = torch.randperm(len(self.raw), generator=self.generator, device=self.raw.device)
        shuffled = self.raw[perm]  # one gather per epoch; batches below are views
        if resume is not None:
            if self.step > 0:  # mid-epoch: continue the noise stream after batch `step`
                self.generator.set_state(resume)
            self._resume_state = None
        for i in range(self.step, len(self)):
            batch = shuffled[i * self.batch_size : (i + 1) * self.batch_size]
            self.step = i + 1
            yield apply_transform(self.transform, batch, self.levels, self.generator)
        self.step = 0
        self.epoch_state = self.generator.get_state()
