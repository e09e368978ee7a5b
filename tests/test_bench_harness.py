"""The benchmark harness times what it says: every contender's steps, by turns."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from common import interleaved, median, paired_ratio


def _contender(log: list[str], name: str, epoch_len: int, batch: int):
    def batches():
        for _ in range(epoch_len):
            yield torch.zeros(batch, 3), 0  # (x, label) tuples like a DataLoader's

    def step(x: torch.Tensor) -> None:
        assert x.shape == (batch, 3)
        log.append(name)

    return batches, step


def test_interleaved_runs_every_contender_by_turns():
    log: list[str] = []
    contenders = {"a": _contender(log, "a", 3, 4), "b": _contender(log, "b", 5, 2),
                  "c": _contender(log, "c", 2, 1)}
    out = interleaved(contenders, cycles=4, chunk_steps=2, warmup=1)
    assert log[:3] == ["a", "b", "c"]  # one warm-up step each
    turns = [log[i] for i in range(3, len(log), 2)]
    assert all(log[i] == log[i + 1] for i in range(3, len(log), 2))  # whole chunks
    assert turns == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]  # rotating
    for name in contenders:
        assert len(out[name]["cycle_images_per_s"]) == 4
        assert out[name]["images_per_s"] == pytest.approx(
            median(out[name]["cycle_images_per_s"]), rel=1e-3)


def test_paired_ratio_is_the_median_of_same_cycle_ratios():
    assert paired_ratio([2.0, 30.0, 5.0], [1.0, 10.0, 5.0]) == 2.0
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])
