"""Kill training with SIGKILL at random points, resume, and check the final weights.

    .venv/bin/python scripts/kill_test.py --trials 30

Runs one uninterrupted reference training, then per trial a run of the same settings that
is killed (``kill -9``) up to three times and resumed each time (``--resume``, or a new run
into the same folder when it died before writing its config), until it completes. A kill
is either timed (a random moment: start-up, a training step, a checkpoint save) or placed
by the fault wrapper (``tests/faults.py STAGE:N``: inside the N-th checkpoint save of the
process, after the weights, after the trainer state, after the manifest, or between the two
renames of the rotation). A trial survives when its final weights equal the reference's
bit for bit. Prints the counts, by where the kills landed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
EVERY = 7  # --checkpoint-every
TRAIN = ["--data", "ring:n=3000", "--hidden", "16", "--latent-dim", "2", "--likelihood",
         "gaussian", "--batch-size", "64", "--epochs", "4", "--checkpoint-every", str(EVERY),
         "--device", "cpu", "--no-progress"]
STEPS = 43  # per epoch: 2700 training examples in batches of 64
SAVES = 4 * STEPS // EVERY + 4  # inside epochs (no multiple of 7 ends one) and at epoch ends
STAGES = ("model", "trainer", "manifest", "rotate")


def launch(run: Path, fault: str = "") -> subprocess.Popen:
    """``vaekit train`` into ``run`` (resumed when it has a config.json)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "VAEKIT_NO_REPORT": "1"}  # the HTML report after training: not what is tested
    if (run / "config.json").is_file():
        argv = ["train", "--resume", str(run), "--checkpoint-every", str(EVERY),
                "--no-progress"]
    else:
        argv = ["train", *TRAIN, "--out", str(run)]
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "faults.py"), fault, *argv],
                            cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def where(run: Path, launched: float, log_size: int) -> str:
    """Where a kill landed, from what the process left: nothing yet (start-up: imports,
    data), a half-written checkpoint.new or an unfinished rotation (inside a save), or
    neither (training steps, between saves)."""
    log = run / "train.log"
    if not log.is_file() or log.stat().st_size == log_size:
        return "during start-up (imports, data, set-up)"
    new = run / "checkpoint.new"
    if (new.exists() and new.stat().st_mtime >= launched) or not (run / "checkpoint").exists():
        return "inside a checkpoint save"
    if any(p.stat().st_mtime >= launched for p in run.glob(".*.tmp")):
        return "inside a file write"
    return "during training steps"


def same(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def trial(run: Path, rng: random.Random, start: float, seconds: float,
          landed: Counter) -> tuple[int, int]:
    """Kill and resume until the run completes; (kills, resumes). Timed kills land after
    ``start`` s (training) three times in four, before it (start-up) once."""
    kills = resumes = 0
    while True:
        timed = rng.random() < 0.5 and kills < 3
        fault = "" if timed or kills >= 3 else f"{rng.choice(STAGES)}:{rng.randint(1, SAVES)}"
        log = run / "train.log"
        log_size, launched = (log.stat().st_size if log.is_file() else -1), time.time() - 1
        if kills or (run / "config.json").exists():
            resumes += 1
        proc = launch(run, fault)
        if timed:
            early = rng.random() < 0.25
            time.sleep(rng.uniform(0.2, start) if early else rng.uniform(start, seconds))
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
        if proc.returncode == 0:
            return kills, resumes
        if proc.returncode != -signal.SIGKILL:
            raise SystemExit(f"run {run} failed (exit {proc.returncode}): {err.strip()}")
        kills += 1
        landed[f"fault hook: {fault.split(':')[0]}" if fault
               else f"timed: {where(run, launched, log_size)}"] += 1


def reference(run: Path) -> tuple[float, float]:
    """Train uninterrupted; (seconds until training starts, seconds in all)."""
    t0, start = time.perf_counter(), None
    proc = launch(run)
    while proc.poll() is None:
        if start is None and (run / "train.log").exists():
            start = time.perf_counter() - t0
        time.sleep(0.02)
    if proc.returncode != 0:
        raise SystemExit(f"reference run failed: {proc.stderr.read()}")
    seconds = time.perf_counter() - t0
    return start or seconds / 2, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="vaekit-kill-"))
    t0 = time.perf_counter()
    start, seconds = reference(tmp / "reference")
    landed: Counter = Counter()
    kills = resumes = survived = 0
    for i in range(args.trials):
        run = tmp / f"trial-{i}"
        k, r = trial(run, rng, start, seconds, landed)
        ok = same(run / "checkpoint" / "model.safetensors",
                  tmp / "reference" / "checkpoint" / "model.safetensors")
        kills, resumes, survived = kills + k, resumes + r, survived + ok
        print(f"trial {i}: {k} kill(s), {r} resume(s): {'identical' if ok else 'DIFFERENT'}",
              flush=True)
    print(f"\n{args.trials} trials, {kills} kills (SIGKILL), {resumes} resumes: "
          f"{survived} of {args.trials} ended with weights identical to the uninterrupted run")
    for what, n in sorted(landed.items()):
        print(f"  {n:4d} kills {what}")
    print(f"({time.perf_counter() - t0:.0f} s; reference run {seconds:.1f} s, training from "
          f"{start:.1f} s" + (f"; folders in {tmp})" if args.keep else ")"))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if survived == args.trials else 1)


if __name__ == "__main__":
    main()
