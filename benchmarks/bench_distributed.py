"""Data-parallel training throughput: 1 process against 2 gloo processes (DDP) on this
machine, on the default Fashion-MNIST model (MLP 784-512-256-32, Bernoulli), and the
all-reduce time per step from the PyTorch profiler.

    python benchmarks/bench_distributed.py            # 300 timed steps per setting
    python benchmarks/bench_distributed.py --quick    # smoke run

Settings (each in fresh processes started by this script with torchrun's environment):
    1 process, fast path        what `vaekit train` runs on one process (2 threads)
    1 process, autograd         the same steps through autograd (--no-fused; DDP needs it)
    2 ranks, global batch B     DDP, B/2 per rank (the same optimization: strong scaling)
    2 ranks, B per rank         DDP, global batch 2B (weak scaling)
Each rank runs 1 thread with 2 ranks (2 cores). No timing assertions: the numbers are
printed and written to JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import busy_warning, default_json, ensure_importable, machine_info, table, write_json

ensure_importable()

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(out: str, batch: int, steps: int, warmup: int, fused: bool, limit: int) -> None:
    """One rank: set up the default model, time ``steps`` optimizer steps after ``warmup``,
    then profile 20 more for the all-reduce time. Rank 0 writes the figures to ``out``."""
    import torch

    from vaekit import distributed
    from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from vaekit.train import setup_run

    w = distributed.init("cpu")
    cfg = RunConfig(DataConfig(limit=limit), ModelConfig(),
                    TrainConfig(batch_size=batch, device="cpu", fused=fused, epochs=1000))
    run = setup_run(cfg)

    def steps_of(n: int) -> float:
        it, i, t0 = run.loader.epoch(), 0, time.perf_counter()
        while i < n:
            for b in it:
                run.step(b, run.state.step)
                run.state.step += 1
                i += 1
                if i == n:
                    break
            else:
                it = run.loader.epoch()
        distributed.barrier()
        return time.perf_counter() - t0

    steps_of(warmup)
    seconds = steps_of(steps)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        steps_of(20)
    reduce_us = sum(e.cpu_time_total for e in prof.key_averages()
                    if "allreduce" in e.key.lower().replace("_", "")) / 20
    if w.main:
        Path(out).write_text(json.dumps({
            "world": w.size, "batch_per_rank": batch, "global_batch": batch * w.size,
            "steps": steps, "seconds": seconds, "images_per_s": steps * batch * w.size / seconds,
            "ms_per_step": 1e3 * seconds / steps, "allreduce_ms_per_step": reduce_us / 1e3,
            "fast_path": run.fast_path,
            "threads": torch.get_num_threads()}))
    distributed.shutdown()


def launch(world: int, batch: int, steps: int, warmup: int, fused: bool, limit: int,
           threads: int) -> dict:
    """Start ``world`` worker processes as torchrun would and return rank 0's figures."""
    port = str(_free_port())
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.json")
        procs = []
        for rank in range(world):
            env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
                   "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                   "OMP_NUM_THREADS": str(threads)}
            code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                    f"import bench_distributed as b; b.worker({out!r}, {batch}, {steps}, "
                    f"{warmup}, {fused}, {limit})")
            procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT))
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"a worker failed (exit codes {codes})")
        return json.loads(Path(out).read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--batch", type=int, default=128, help="global batch B (default: 128)")
    p.add_argument("--limit", type=int, default=0, help="training images (0: all)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each setting, alternated")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if a.quick:
        a.steps, a.warmup, a.limit, a.repeats = 40, 5, 5000, 1
    info = machine_info(2)
    busy_warning(info)
    settings = {"1 process, fast path": (1, a.batch, True, 2),
                "1 process, autograd": (1, a.batch, False, 2),
                "2 ranks, global batch B": (2, a.batch // 2, False, 1),
                "2 ranks, B per rank": (2, a.batch, False, 1)}
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    for _ in range(a.repeats):  # alternate, so a change in machine load hits every setting
        for name, (world, batch, fused, threads) in settings.items():
            runs[name].append(launch(world, batch, a.steps, a.warmup, fused, a.limit, threads))
    best = {name: max(r, key=lambda x: x["images_per_s"]) for name, r in runs.items()}
    base = best["1 process, autograd"]["images_per_s"]
    rows = [[name, r["world"], r["batch_per_rank"], r["global_batch"], r["images_per_s"],
             r["ms_per_step"], r["allreduce_ms_per_step"], r["images_per_s"] / base]
            for name, r in best.items()]
    print(table(["setting", "ranks", "batch/rank", "global batch", "img/s", "ms/step",
                 "all-reduce ms/step", "vs 1 process autograd"], rows,
                f"\nDDP on gloo, default Fashion-MNIST model, best of {a.repeats} runs of "
                f"{a.steps} steps", digits=2))
    write_json(a.json or default_json("distributed" + ("_quick" if a.quick else "")),
               {"benchmark": "bench_distributed", "machine": info, "runs": runs, "best": best})


if __name__ == "__main__":
    main()
