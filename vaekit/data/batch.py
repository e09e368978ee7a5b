"""A batch: what the data layer hands to objectives, estimators and diagnostics."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Examples x (B, *shape) and, where the data have them, integer labels y (B,)."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    total: int = 0  # in data-parallel training: rows of the global batch this block is of

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: slice | torch.Tensor) -> Batch:
        """The same rows of x and y: ``batch[s:e]``, ``batch[perm]``."""
        return Batch(self.x[index], None if self.y is None else self.y[index])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.x.to(device), None if self.y is None else self.y.to(device),
                     self.total)

    @property
    def device(self) -> torch.device:
        return self.x.device


def as_batch(data: Batch | torch.Tensor) -> Batch:
    """Accept a bare tensor of examples wherever a batch is expected."""
    return data if isinstance(data, Batch) else Batch(data)
