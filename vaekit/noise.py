"""Reproducible standard-normal noise indexed by (example, sample).

Evaluation results must not depend on how examples are batched or how the K samples are
chunked, and drawing samples k0..k1 of an example must not cost memory for all K. Each
example's stream of rows (one row = one L-dimensional draw) is cut into fixed blocks: rows
0-15, then 128 rows at a time. Every block has a generator seeded by a hash of (seed,
example, block), so any rows [k0, k1) come from the blocks that hold them, whatever K, the
chunking or the batching. The first block is seeded by (seed, example) alone, as vaekit 0.2.0
seeded the whole stream, so the one-sample ELBO and estimates with K <= 16 are unchanged;
for K > 16 the rows beyond the sixteenth differ from 0.2.0's (independent draws all the
same). Different examples and blocks get independent streams.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1
FIRST = 16  # rows of block 0: torch's CPU normal sampler works in blocks of 16 values
BLOCK = 128  # rows of every later block (fewer generator seedings than blocks of 16)


def _splitmix64(x: int) -> int:
    """SplitMix64 finalizer: a well-mixed 64-bit hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def block_of(row: int) -> int:
    """The block that holds row ``row`` of a stream."""
    return 0 if row < FIRST else 1 + (row - FIRST) // BLOCK


def block_rows(b: int) -> tuple[int, int]:
    """Rows [start, end) of block ``b``."""
    return (0, FIRST) if b == 0 else (FIRST + (b - 1) * BLOCK, FIRST + b * BLOCK)


class IndexedNoise:
    """``noise.rows(idx, k0, k1)`` -> eps (k1 - k0, E, L): draws k0..k1-1 for each example in
    ``idx`` (E,), a function of (seed, example index, sample index) only; ``block(idx, k)``
    is ``rows(idx, 0, k)``."""

    def __init__(self, dim: int, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.dim, self.seed, self.device = dim, seed, device
        self._gen = torch.Generator()

    def _example_seed(self, i: int) -> int:
        return _splitmix64((self.seed << 32) ^ i) >> 1  # manual_seed takes < 2^63

    def _block_seeds(self, i: int, blocks: range) -> list[int]:
        """Seeds of example i's blocks: block 0's is the example's own (as in 0.2.0)."""
        base = self._example_seed(i)
        mixed = _splitmix64(base)
        return [base if b == 0 else _splitmix64(mixed ^ b) >> 1 for b in blocks]

    @staticmethod
    def span(k0: int, k1: int) -> tuple[int, int]:
        """The whole-block rows [lo, hi) that hold rows [k0, k1)."""
        return block_rows(block_of(k0))[0], block_rows(block_of(k1 - 1))[1]

    def rows(self, idx: torch.Tensor, k0: int, k1: int) -> torch.Tensor:
        lo, hi = self.span(k0, k1)
        out = torch.empty(len(idx), hi - lo, self.dim)
        numbers = range(block_of(k0), block_of(k1 - 1) + 1)
        spans = [(start - lo, end - lo) for start, end in map(block_rows, numbers)]
        for n, i in enumerate(idx.tolist()):  # RNG only: one seeded draw per example and block
            for seed, (a, b) in zip(self._block_seeds(int(i), numbers), spans, strict=True):
                self._gen.manual_seed(seed)
                torch.randn((b - a) * self.dim, generator=self._gen, out=out[n, a:b].view(-1))
        return out[:, k0 - lo : k1 - lo].transpose(0, 1).to(self.device)  # (k1 - k0, E, L)

    def block(self, idx: torch.Tensor, k: int) -> torch.Tensor:
        return self.rows(idx, 0, k)


class NoiseWindow:
    """The rows of ``idx``'s streams that a run of consecutive sample ranges needs: each
    block is drawn once, and only the blocks of the current range are held (memory: the
    range plus at most two blocks, whatever K)."""

    def __init__(self, noise: IndexedNoise, idx: torch.Tensor) -> None:
        self.noise, self.idx = noise, idx
        self.lo = self.hi = 0
        self.eps: torch.Tensor | None = None

    def get(self, k0: int, k1: int) -> torch.Tensor:
        """eps (k1 - k0, E, L), contiguous."""
        if self.eps is None or k0 < self.lo or k1 > self.hi:
            lo, hi = self.noise.span(k0, k1)
            if self.eps is not None and self.lo <= lo < self.hi:  # keep the blocks at hand
                fresh = self.noise.rows(self.idx, self.hi, hi)
                self.eps = torch.cat([self.eps[lo - self.lo :], fresh])
            else:
                self.eps = self.noise.rows(self.idx, lo, hi)
            self.lo, self.hi = lo, hi
        return self.eps[k0 - self.lo : k1 - self.lo].contiguous()

