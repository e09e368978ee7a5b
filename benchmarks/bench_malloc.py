"""glibc malloc settings (vaekit.runtime.keep_freed_memory) against glibc's defaults, on the
tasks that allocate large tensors: importance-sampled log p(x) of a conv VAE and its training.

    python benchmarks/bench_malloc.py            # 3 repeats, alternated
    python benchmarks/bench_malloc.py --quick    # smoke run

Each (setting, repeat) is a fresh `vaekit` CLI process, timed from outside with its user and
system CPU time and peak resident size (os.wait4). "glibc defaults" sets MALLOC_ARENA_MAX=8,
which vaekit takes as the user's own malloc setting (it then leaves malloc alone; 8 arenas
are glibc's own limit on 1 core and above what 2 threads use). The model is the
`resnet-bernoulli` preset trained for 1 epoch on 2,000 Fashion-MNIST images (same seed,
same weights for every evaluation). No timing assertions: figures are printed and saved.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import default_json, machine_info, table, write_json

SETTINGS = {"vaekit (keep freed memory)": {}, "glibc defaults": {"MALLOC_ARENA_MAX": "8"}}


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall, user and system seconds and peak RSS (MB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-500:]}")
    return {"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n", type=int, default=200, help="test images of the log p(x) task")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if a.quick:
        a.repeats, a.n = 1, 20
    vaekit = [sys.executable, "-m", "vaekit"]
    work = Path(tempfile.mkdtemp(prefix="bench-malloc-"))
    try:
        run = work / "run"
        subprocess.run([*vaekit, "train", "--preset", "resnet-bernoulli", "--epochs", "1",
                        "--limit", "2000", "--out", str(run), "--no-progress", "--no-report"],
                       check=True, stdout=subprocess.DEVNULL)
        tasks = {
            f"log p(x), K=1000, {a.n} images": lambda i: [
                *vaekit, "evaluate", str(run), "--loglik", "1000", "--limit", str(a.n),
                "--no-report", "--force", "--json", str(work / "e.json")],
            "training, 1 epoch of 2,000 images": lambda i: [
                *vaekit, "train", "--preset", "resnet-bernoulli", "--epochs", "1", "--limit",
                "2000", "--out", str(work / f"t{i}"), "--no-progress", "--no-report"]}
        results: dict[str, dict[str, list[dict[str, float]]]] = {}
        count = itertools.count()  # a fresh run directory per training
        for _ in range(a.repeats):
            for task, cmd in tasks.items():
                for name, env in SETTINGS.items():
                    runs = results.setdefault(task, {}).setdefault(name, [])
                    runs.append(timed(cmd(next(count)), env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for task, by_setting in results.items():
        base = min(r["wall_s"] for r in by_setting["glibc defaults"])
        for name, runs in by_setting.items():
            best = min(runs, key=lambda r: r["wall_s"])
            rows.append([task, name, best["wall_s"], best["user_s"], best["sys_s"],
                         best["max_rss_mb"], base / best["wall_s"]])
    print(table(["task", "malloc", "wall s (best)", "user s", "sys s", "peak RSS MB",
                 "speed-up vs defaults"], rows, title=f"best of {a.repeats}", digits=2))
    write_json(a.json or default_json("bench_malloc" + ("_quick" if a.quick else "")),
               {"benchmark": "bench_malloc", "machine": machine_info(2), "results": results})


if __name__ == "__main__":
    main()
