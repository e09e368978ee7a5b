"""Fuzz vaekit's run directories and command-line flags: every hostile run file, output
path or flag value must end in exit 0 or in one ``error:`` line with exit 2, never in a
traceback, an internal error (exit 1), a hang or a memory blow-up, and no file outside the
run directory may change.

    .venv/bin/python scripts/fuzz.py --runs 3000 [--seed 0] [--jobs 2]

Each case copies one of three small trained runs (a ring VAE with a Gaussian decoder, a
digits VAE with a Bernoulli one, a two-stage manifold run) into a case folder beside an
untouched second run and a user's files, applies one to three mutations, and runs one
command through ``vaekit.cli.main`` in a child forked from a process that has already
imported vaekit (so that a case costs the command, not Python's start-up), with its
address space capped (``RLIMIT_AS``) and a wall-clock bound:

- run files (config.json, trainer.json, manifest.json, the safetensors, metrics.jsonl,
  eval-test.json, command.txt, train.log, stage 2's) replaced by a FIFO, a socket, a folder,
  a link to /dev/zero, a dangling or looping link, a link to another run's file, an empty,
  truncated, bit-flipped or 3 GiB sparse file, invalid UTF-8; JSON values replaced by
  strings, nulls, huge or negative numbers, deep nesting, lists; keys deleted or added;
  tensors of the safetensors renamed or reshaped;
- outputs (--json, --out, the default samples.png/gradients.png/figures/) pointing at the
  other run's state, at a user's file, through symbolic links, into folders that do not
  exist;
- flags: the train/evaluate/sample/gradients flags with values beyond any range (2**63,
  1e308, -1, 0, nan, inf, text), and WORLD_SIZE garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ["config.json", "checkpoint/trainer.json", "checkpoint/manifest.json",
             "checkpoint/model.safetensors", "checkpoint/trainer.safetensors", "metrics.jsonl",
             "eval-test.json", "command.txt", "train.log", "checkpoint.1/manifest.json",
             "stage2/config.json", "stage2/checkpoint/manifest.json", "stage2/metrics.jsonl"]
HOSTILE_NUMBERS = ["9223372036854775808", "99999999999999999999", "2147483648", "-1", "0",
                   "1e308", "-1e308", "nan", "inf", "1e-320", "abc", "", "1.5", "٣"]
COMMANDS = ["evaluate", "sample", "reconstruct", "report", "gradients", "resume", "train"]
FLAGS = {
    "evaluate": ["--k", "--loglik", "--naive", "--kde-max-train", "--generation", "--limit",
                 "--memory-mb", "--seed", "--split"],
    "sample": ["-n", "--seed", "--label"],
    "reconstruct": ["-n"],
    "gradients": ["--samples", "--repeats", "--batch-size", "--reference", "--seed"],
    "resume": ["--epochs", "--checkpoint-every", "--keep-checkpoints"],
    "train": ["--latent-dim", "--hidden", "--epochs", "--batch-size", "--lr", "--beta",
              "--warmup-steps", "--warmup-fraction", "--iwae-k", "--seed", "--val-fraction",
              "--limit", "--grad-clip", "--sigma", "--adam-eps", "--beta-warmup-steps"],
}
SMALL = {"evaluate": ["--k", "2"], "gradients": ["--samples", "1", "2", "--repeats", "2",
                                                  "--reference", "4", "--batch-size", "8"],
         "sample": ["-n", "4"], "reconstruct": ["-n", "4"], "resume": ["--epochs", "2"]}


# ------------------------------------------------------------------ the base runs


def base_runs(folder: Path) -> dict[str, Path]:
    """Three small trained runs (in a child: the fork server itself runs no torch op)."""
    specs = {
        "ring": ["--data", "ring:n=200", "--likelihood", "gaussian", "--hidden", "8",
                 "--latent-dim", "2", "--epochs", "1", "--checkpoint-every", "2"],
        "digits": ["--data", "digits", "--limit", "120", "--hidden", "16", "--latent-dim",
                   "2", "--epochs", "1"],
        "twostage": ["--data", "manifold:r=1,d=4,n=200", "--likelihood", "gaussian-gamma",
                     "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--two-stage",
                     "--stage2-epochs", "1"],
    }
    out = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name, args in specs.items():
        run = folder / name
        code = _child(lambda a=args, r=run: _main(["train", *a, "--device", "cpu",
                                                    "--no-progress", "--out", str(r)]),
                      folder / f"{name}.log", 600, 4096)
        if code != 0:
            raise SystemExit(f"fuzz_runs: could not train the base run {name}: "
                             f"{(folder / f'{name}.log').read_text()[-400:]}")
        _main_in_child(["evaluate", str(run), "--k", "2"], folder / f"{name}-eval.log")
        out[name] = run
    return out


def _main(argv: list[str]) -> int:
    from vaekit.cli import main

    return main(argv)


def _main_in_child(argv: list[str], log: Path) -> int:
    return _child(lambda: _main(argv), log, 600, 4096)


def _child(fn, log: Path, timeout_s: float, cap_mb: int) -> int:
    """Run ``fn`` in a forked child with stdout/stderr into ``log``, the address space
    capped at its size plus ``cap_mb`` and a wall-clock bound; its exit code, or -1 for a
    hang (killed at the bound)."""
    pid = os.fork()
    if pid == 0:  # the child
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            vm = _vm_bytes()
            if vm:
                resource.setrlimit(resource.RLIMIT_AS, (vm + cap_mb * 2**20,) * 2)
            code = fn()
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        except BaseException:  # a traceback through main is a finding
            import traceback

            traceback.print_exc()
            code = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -1


def _vm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# ------------------------------------------------------------------ mutations


def _json_paths(value, prefix=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from _json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            yield (*prefix, i)
            yield from _json_paths(v, (*prefix, i))


def _hostile_value(rng: random.Random):
    return rng.choice([None, "x", -1, 0, 2**63, 10**30, -(10**30), 1e308, float("nan"),
                       True, [], {}, [1, "a"], {"a": {"b": {}}}, "\xff", 1.5, 2**31])


def edit_json(path: Path, rng: random.Random) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    paths = list(_json_paths(data))
    if not paths:
        return
    *parents, key = rng.choice(paths)
    node = data
    for p in parents:
        node = node[p]
    action = rng.random()
    if action < 0.2 and isinstance(node, dict):
        del node[key]
    elif action < 0.3 and isinstance(node, dict):
        node[f"unknown_{rng.randrange(99)}"] = 1
    else:
        node[key] = _hostile_value(rng)
    text = json.dumps(data)
    if rng.random() < 0.05:
        text = "[" * 3000 + text + "]" * 3000
    path.write_text(text)


def edit_tensors(path: Path, rng: random.Random) -> None:
    from safetensors.torch import load_file, save_file

    try:
        tensors = load_file(str(path))
    except Exception:  # already broken by another mutation
        return
    key = rng.choice(sorted(tensors))
    if rng.random() < 0.5:
        tensors[key + "_renamed"] = tensors.pop(key)
    else:
        import torch

        tensors[key] = torch.zeros(rng.choice([(3, 3), (1,), (0,), (2, 2, 2)]))
    save_file(tensors, str(path))


def replace_file(path: Path, rng: random.Random, other: Path, sockets: list) -> None:
    """Put something hostile where ``path`` was."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = rng.choice(["fifo", "socket", "folder", "zero", "dangling", "loop", "other", "empty",
                       "truncate", "flip", "sparse", "utf8"])
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket" and len(str(path)) < 100:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        sockets.append(s)
    elif kind == "folder":
        path.mkdir()
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "dangling":
        path.symlink_to(path.parent / "nowhere" / "x")
    elif kind == "loop":
        path.symlink_to(path)
    elif kind == "other":
        target = other / path.name
        path.symlink_to(target if target.exists() else other / "config.json")
    elif kind == "sparse":
        with open(path, "wb") as f:
            f.truncate(3 * 2**30)
    else:
        data = (other / "config.json").read_bytes()
        data = {"empty": b"", "truncate": data[: rng.randrange(len(data))],
                "flip": bytes(b ^ (1 << rng.randrange(8)) if rng.random() < 0.02 else b
                              for b in data), "utf8": b"\xff\xfe" + data}.get(kind, data)
        path.write_bytes(data)


def mutate(run: Path, other: Path, user: Path, rng: random.Random, sockets: list) -> list[str]:
    """One to three mutations of ``run``; returns what they were (for the report)."""
    done = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        name = rng.choice([f for f in RUN_FILES if (run / f).exists()] or ["config.json"])
        kind = rng.random()
        if kind < 0.35 and name.endswith((".json", ".jsonl")):
            edit_json(run / name, rng)
            done.append(f"json:{name}")
        elif kind < 0.45 and name.endswith(".safetensors"):
            edit_tensors(run / name, rng)
            done.append(f"tensors:{name}")
        elif kind < 0.8:
            replace_file(run / name, rng, other, sockets)
            done.append(f"replace:{name}")
        else:
            out = run / rng.choice(["samples.png", "samples.npy", "gradients.png",
                                    "gradients.json", "figures"])
            if out.exists() or out.is_symlink():
                shutil.rmtree(out) if out.is_dir() and not out.is_symlink() else out.unlink()
            out.symlink_to(rng.choice([other / "config.json", user / "notes.txt", user,
                                       other / "checkpoint" / "manifest.json",
                                       other / "checkpoint"]))
            done.append(f"output-link:{out.name}")
    return done


def command(run: Path, other: Path, user: Path, rng: random.Random) -> list[str]:
    """A command on ``run``, with hostile flag values and output paths now and then."""
    cmd = rng.choice(COMMANDS)
    name = "train" if cmd in ("resume", "train") else cmd
    if cmd == "train":
        data = rng.choice(["ring:n=100", "digits"])
        argv = ["train", "--data", data, "--hidden", "8", "--epochs", "1", "--out",
                str(run.parent / f"new{rng.randrange(9)}"),
                *(["--likelihood", "gaussian"] if data.startswith("ring") else [])]
    elif cmd == "resume":
        argv = ["train", "--resume", str(run), *SMALL["resume"]]
    else:
        argv = [name, str(run), *SMALL.get(cmd, [])]
    for _ in range(rng.choice([0, 1, 1, 2])):
        flag = rng.choice(FLAGS[cmd if cmd != "report" else "sample"] if cmd != "report"
                          else ["--out"])
        argv += [flag, rng.choice(HOSTILE_NUMBERS)] if flag != "--out" else []
    if rng.random() < 0.2 and cmd not in ("train", "resume"):
        flag = "--json" if cmd in ("evaluate", "gradients") else "--out"
        argv += [flag, str(rng.choice([other / "config.json", other / "checkpoint" /
                                       "manifest.json", user / "notes.txt", user / "x.png",
                                       user / "no" / "such" / "out.png"]))]
        argv += ["--force"] if rng.random() < 0.5 else []
    argv += ["--device", "cpu"] if name in ("evaluate", "gradients") else []
    argv += ["--no-progress"] if name in ("train", "report") else []
    if rng.random() < 0.3:
        argv.append("--allow-unverified")
    return [a for a in argv if a is not None]


# ------------------------------------------------------------------ one case


def state(folder: Path) -> dict[str, str]:
    """Every entry below ``folder``: its type and, for a regular file, a hash."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        if stat.S_ISREG(st.st_mode):
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(folder))] = stat.filemode(st.st_mode)
    return out


def classify(code: int, log: str) -> str:
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    if code == -1:
        return "hang"
    if "Traceback" in log or code == 99:
        return "traceback"
    if "out of memory" in log or code in (-9, 137):
        return "memory"
    if code == 1 or "internal error" in log:
        return "internal"
    if code == 0:
        return "ok"
    if code == 2 and len(errors) == 1:
        return "refused"
    return "bad-line"


def one_case(i: int, seed: int, bases: dict[str, Path], work: Path, timeout_s: float,
             cap_mb: int) -> tuple[str, str]:
    rng = random.Random(seed * 1_000_003 + i)
    case = work / f"case{i}"
    names = sorted(bases)
    base = rng.choice(names)
    run = Path(shutil.copytree(bases[base], case / "run", symlinks=True))
    other = Path(shutil.copytree(bases[rng.choice(names)], case / "other", symlinks=True))
    user = case / "user"
    user.mkdir()
    (user / "notes.txt").write_text("a user's file\n")
    sockets: list = []
    done = mutate(run, other, user, rng, sockets)
    argv = command(run, other, user, rng)
    outside = {"other": state(other), "user": state(user)}
    env = {"VAEKIT_NO_REPORT": "0" if rng.random() < 0.15 else "1"}
    if rng.random() < 0.05:
        env["WORLD_SIZE"] = rng.choice(["abc", "-1", "2", "99999999999999999999"])

    def call() -> int:
        os.environ.update(env)
        os.chdir(case)
        return _main(argv)

    code = _child(call, case / "log.txt", timeout_s, cap_mb)
    for s in sockets:
        s.close()
    log = (case / "log.txt").read_text(errors="replace")
    outcome = classify(code, log)
    if outcome in ("ok", "refused") and {"other": state(other), "user": state(user)} != outside:
        outcome = "changed-outside"
    detail = f"{base} {' '.join(done)} :: vaekit {' '.join(argv[:12])} -> {code}: " + \
        (log.strip().splitlines() or [""])[-1][:200]
    shutil.rmtree(case, ignore_errors=True)
    return outcome, detail


def campaign(n: int, seed: int, jobs: int = 1, timeout_s: float = 60, cap_mb: int = 3072,
             show: int = 10) -> int:
    """``n`` cases (``jobs`` at a time); prints the counts; 1 if any case went wrong."""
    import torch  # noqa: F401 (imported once here, before the forks)

    import vaekit.api  # noqa: F401

    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="vaekit-fuzz-runs-"))
    bases = base_runs(work / "bases")
    counts: Counter[str] = Counter()
    bad: list[str] = []
    pending = list(range(n))
    if jobs > 1:  # a simple fork pool: each job runs every jobs-th case
        pids = []
        for j in range(jobs):
            pid = os.fork()
            if pid == 0:
                out = [one_case(i, seed, bases, work, timeout_s, cap_mb) for i in pending[j::jobs]]
                (work / f"job{j}.json").write_text(json.dumps(out))
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        results = [tuple(r) for j in range(jobs)
                   for r in json.loads((work / f"job{j}.json").read_text())]
    else:
        results = [one_case(i, seed, bases, work, timeout_s, cap_mb) for i in pending]
    for outcome, detail in results:
        counts[outcome] += 1
        if outcome not in ("ok", "refused"):
            bad.append(f"{outcome}: {detail}")
    secs = time.perf_counter() - t0
    print(f"run-directory and flag fuzz: {n} cases, seed {seed}, {jobs} jobs, {secs:.0f} s")
    for key in ("ok", "refused", "traceback", "internal", "bad-line", "hang", "memory",
                "changed-outside"):
        print(f"  {key:16s} {counts.get(key, 0)}")
    for line in bad[:show]:
        print(f"  {line}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0
