"""Reproducible standard-normal noise indexed by (example, sample).

Evaluation results must not depend on how examples are batched or how the K samples are
chunked. ``IndexedNoise`` keeps a table of T iid N(0, I_L) rows (T a power of two >= 4K);
sample k of example i uses row (a_i * k + b_i) mod T with a_i odd and (a_i, b_i) hashed
from (seed, i). Since k -> a_i k + b_i is a bijection mod T, each example's K <= T rows are
distinct, hence K iid draws; which rows an example gets depends only on (seed, i, k).
"""

from __future__ import annotations

import numpy as np
import torch

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 arrays (wrap-around arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


class IndexedNoise:
    """``noise(idx, k0, k1)`` -> eps (k1-k0, E, L) for global example indices ``idx`` (E,)."""

    def __init__(self, dim: int, k_max: int, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.size = max(1 << 16, 1 << int(np.ceil(np.log2(4 * max(k_max, 1)))))
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(self.size, dim, generator=g).to(device)  # (T, L)
        self.seed, self.k_max = seed, k_max

    def __call__(self, idx: torch.Tensor, k0: int, k1: int) -> torch.Tensor:
        if k1 > self.size:
            raise ValueError(f"at most {self.size} samples per example, asked for {k1}")
        keys = idx.cpu().numpy().astype(np.uint64) + np.uint64(self.seed) * np.uint64(1 << 40)
        h1 = _splitmix64(keys)
        h2 = _splitmix64(h1)
        mask = np.uint64(self.size - 1)
        a = torch.from_numpy(((h1 & mask) | np.uint64(1)).astype(np.int64))  # odd
        b = torch.from_numpy((h2 & mask).astype(np.int64))
        k = torch.arange(k0, k1, dtype=torch.int64)
        rows = (k[:, None] * a[None, :] + b[None, :]) & (self.size - 1)  # (k, E)
        return self.table[rows.to(self.table.device)]  # (k, E, L)
