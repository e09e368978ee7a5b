"""Reproducible standard-normal noise indexed by (example, sample).

Evaluation results must not depend on how examples are batched or how the K samples are
chunked. Example i draws its K x L noise from its own generator, seeded by a hash of
(seed, i), always in whole blocks of 16 rows: torch's CPU normal sampler fills in blocks of
16 values, so the first k rows are the same whatever K is asked for. Different examples get
independent streams, so estimates of different examples are independent.
"""

from __future__ import annotations

import math

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """SplitMix64 finalizer: a well-mixed 64-bit hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class IndexedNoise:
    """``noise.block(idx, k)`` -> eps (k, E, L): k standard-normal draws for each example in
    ``idx`` (E,), a function of (seed, example index, sample index) only."""

    def __init__(self, dim: int, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.dim, self.seed, self.device = dim, seed, device
        self._gen = torch.Generator()

    def _example_seed(self, i: int) -> int:
        return _splitmix64((self.seed << 32) ^ i) >> 1  # manual_seed takes < 2^63

    def block(self, idx: torch.Tensor, k: int) -> torch.Tensor:
        rows = 16 * math.ceil(k / 16)  # whole blocks of 16 rows keep prefixes stable
        out = torch.empty(len(idx), rows * self.dim)
        for n, i in enumerate(idx.tolist()):  # RNG only: one seeded draw per example
            self._gen.manual_seed(self._example_seed(int(i)))
            torch.randn(rows * self.dim, generator=self._gen, out=out[n])
        eps = out.view(len(idx), rows, self.dim)[:, :k].transpose(0, 1)  # (k, E, L)
        return eps.to(self.device)
