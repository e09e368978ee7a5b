"""What checkpoint checksums and fsync cost on the default Fashion-MNIST model.

    .venv/bin/python scripts/checkpoint_cost.py --rounds 7 --threads 1

Trains one epoch of the default model (MLP 784-512-256-32, Bernoulli, batch 128) three
ways, in a shuffled order every round: ``--checkpoint-every 50`` as shipped (sha256
manifest, every file fsynced), the same with the checksums and fsync replaced by no-ops,
and checkpoints at the epoch end only. Prints the epoch times (the row's ``seconds``: the
steps and the mid-epoch checkpoints), the time spent inside ``Run.checkpoint`` (finiteness
check, CPU copy, save) and in one save, and what verifying a checkpoint costs on load.
Epoch times on a shared machine spread widely; the per-save times are the figure to trust.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

import vaekit.train.checkpoint as ck
import vaekit.train.loop as loop
from vaekit.config import RunConfig
from vaekit.train import fit, setup_run
from vaekit.train.callbacks import Checkpoint, DivergenceGuard

MODES = ("checksums + fsync", "neither", "epoch-end checkpoint only")


class _NoHash:
    def __init__(self, *args: object) -> None: ...

    def hexdigest(self) -> str:
        return "0" * 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--every", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="vaekit-ckpt-cost-", dir=Path.cwd()))  # the runs' disk
    real_fsync, real_sha, real_save, real_ck = (os.fsync, hashlib.sha256, ck.save_checkpoint,
                                                loop.Run.checkpoint)
    epochs: dict[str, list[float]] = {m: [] for m in MODES}
    saves: dict[str, list[float]] = {m: [] for m in MODES}
    inside: dict[str, list[float]] = {m: [] for m in MODES}
    mode = MODES[0]

    def timed_save(*a: object, **k: object) -> object:
        t = time.perf_counter()
        out = real_save(*a, **k)
        saves[mode].append(time.perf_counter() - t)
        return out

    def timed_checkpoint(self: loop.Run) -> None:
        t = time.perf_counter()
        real_ck(self)
        inside[mode].append(time.perf_counter() - t)

    loop.save_checkpoint, loop.Run.checkpoint = timed_save, timed_checkpoint
    rng, run = random.Random(0), None
    for r in range(args.rounds):
        for mode in rng.sample(MODES, len(MODES)):
            off = mode == "neither"
            os.fsync = (lambda fd: None) if off else real_fsync
            ck.hashlib.sha256 = _NoHash if off else real_sha
            cfg = RunConfig.from_dict({"train": {"epochs": 1, "device": "cpu"}})
            run = setup_run(cfg, root / f"{MODES.index(mode)}-{r}")
            every = 0 if mode == MODES[2] else args.every
            fit(run, [DivergenceGuard(), Checkpoint(every)])
            epochs[mode].append(run.history[0]["seconds"])
            print(f"round {r}: {mode}: epoch {epochs[mode][-1]:.2f} s", flush=True)
    os.fsync, ck.hashlib.sha256 = real_fsync, real_sha
    print(f"\n{len(run.loader)} steps an epoch; --checkpoint-every {args.every}: "
          f"{len(run.loader) // args.every} checkpoints inside each epoch, one at its end")
    for m in MODES:
        med = statistics.median(epochs[m])
        print(f"{m:26s} epoch median {med:.2f} s ({min(epochs[m]):.2f}-{max(epochs[m]):.2f}); "
              f"Run.checkpoint {statistics.median(inside[m]) * 1e3:.1f} ms each, "
              f"{sum(inside[m]) / args.rounds:.2f} s an epoch; one save "
              f"{statistics.median(saves[m]) * 1e3:.1f} ms")
    t = time.perf_counter()
    for _ in range(10):
        ck.find_checkpoint(root / f"0-{args.rounds - 1}")
    print(f"verifying the newest checkpoint on load: {(time.perf_counter() - t) * 100:.1f} ms")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
