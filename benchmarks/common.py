"""Shared helpers of the benchmark scripts: isolated contenders, the classic MLP VAE of
pytorch/examples, timing, tables and the JSON record.

Every contender runs in a fresh ``spawn`` subprocess so that its peak RSS (``ru_maxrss``)
is its own and no state (threads, allocator, compiled graphs) leaks between contenders.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
D, H, L = 784, 400, 20  # the classic architecture: 784-400-20 (encoder 400 -> 2L)


# ----------------------------------------------------------------------------- processes


def rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(conn, threads: int, fn: Callable[..., dict[str, Any]], kwargs: dict[str, Any]) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
        base = rss_mb()
        out = fn(**kwargs)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out["rss_after_import_mb"] = round(base, 1)
        out["peak_rss_mb"] = round(ru.ru_maxrss / 1024, 1)
        out["cpu_user_s"], out["cpu_sys_s"] = round(ru.ru_utime, 2), round(ru.ru_stime, 2)
        out["minor_page_faults"] = ru.ru_minflt
        conn.send(out)
    except BaseException as err:  # report everything to the parent, then exit
        conn.send({"error": f"{type(err).__name__}: {err}",
                   "traceback": traceback.format_exc()})
    finally:
        conn.close()


def isolated(fn: Callable[..., dict[str, Any]], threads: int = 2,
             env: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run ``fn(**kwargs)`` in a fresh spawned interpreter with ``threads`` torch threads and
    extra environment variables ``env`` (e.g. the OpenMP settings the vaekit CLI uses).

    Returns its dict plus ``peak_rss_mb`` (the child's ru_maxrss) and ``wall_s`` (including
    interpreter start and imports), or ``{"error": ...}`` when it failed.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    t0 = time.perf_counter()
    proc = ctx.Process(target=_child, args=(child, threads, fn, kwargs))
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})  # inherited by the child at start
    try:
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    child.close()
    try:
        out = parent.recv()
    except EOFError:
        out = {"error": f"worker died (exit code {proc.exitcode})"}
    proc.join()
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    if "error" in out:
        print(f"  !! {fn.__name__} failed: {out['error']}", file=sys.stderr)
        if "traceback" in out:
            print(out["traceback"], file=sys.stderr)
    return out


# ----------------------------------------------------------------------------- the model


def classic_vae():
    """The pytorch/examples VAE with the two 400->20 heads merged into one 400->40 layer
    (identical nn.Linear default init distribution: it depends on fan_in only)."""
    import torch
    from torch import nn

    class ClassicVAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, 2 * L))
            self.dec = nn.Sequential(nn.Linear(L, H), nn.ReLU(), nn.Linear(H, D))

        def forward(self, x: torch.Tensor):
            """-> (decoder logits, mu, log_var); x (B, 784)."""
            mu, log_var = self.enc(x).chunk(2, dim=-1)
            z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
            return self.dec(z), mu, log_var

    return ClassicVAE()


def kld_sum(mu, log_var):
    """sum over batch and latents of KL(N(mu, sigma^2) || N(0, I)) (pytorch/examples form)."""
    return -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum()


def linear_shapes(d: int = D, h: int = H, latent: int = L) -> list[tuple[str, int, int]]:
    """(name, in, out) of the four Linear layers of the classic VAE."""
    return [("enc1", d, h), ("enc2", h, 2 * latent), ("dec1", latent, h), ("dec2", h, d)]


def train_flops_per_image(d: int = D, h: int = H, latent: int = L) -> dict[str, float]:
    """Matmul FLOPs per image of one training step (2 FLOPs per multiply-add).

    forward y = x W^T for every layer; backward dW = gy^T x for every layer and dx = gy W
    for every layer except the first (autograd skips the input's gradient): 3x forward
    minus the first layer's dx.
    """
    layers = linear_shapes(d, h, latent)
    fwd = sum(2 * i * o for _, i, o in layers)
    first = 2 * layers[0][1] * layers[0][2]
    return {"forward": fwd, "train_step": 3 * fwd - first}


# ----------------------------------------------------------------------------- timing


def timed_steps(batches: Callable[[], Any], step: Callable[[Any], Any], warmup: int,
                steps: int | None = None, epochs: int | None = None,
                chunks: int = 4) -> dict[str, Any]:
    """Warm up for ``warmup`` steps, then time ``steps`` steps or ``epochs`` full epochs.

    ``batches()`` returns a fresh iterable over one epoch of batches (tensors, or tuples
    whose first element is the batch). The timed span is split into pieces (each epoch, or
    ``chunks`` equal runs of steps); ``images_per_s`` is the median piece's rate (robust to
    a busy machine), ``images_per_s_mean`` the rate over the whole span.
    """

    def first(b):
        return b[0] if isinstance(b, (tuple, list)) else b

    def forever():
        while True:
            yield from batches()

    done = 0
    while done < warmup:
        for b in batches():
            step(first(b))
            done += 1
            if done >= warmup:
                break
    pieces: list[tuple[int, float]] = []  # (images, seconds)
    n_step = 0
    for _ in range(epochs or 0):
        n, t0 = 0, time.perf_counter()
        for b in batches():
            x = first(b)
            step(x)
            n, n_step = n + len(x), n_step + 1
        pieces.append((n, time.perf_counter() - t0))
    steps = 0 if epochs is not None else (steps or 0)
    it = forever()
    per = max(1, steps // max(1, chunks))
    while n_step < steps:
        n, t0 = 0, time.perf_counter()
        for _ in range(min(per, steps - n_step)):
            x = first(next(it))
            step(x)
            n += len(x)
            n_step += 1
        pieces.append((n, time.perf_counter() - t0))
    n_img, sec = sum(p[0] for p in pieces), sum(p[1] for p in pieces)
    rates = [p[0] / p[1] for p in pieces]
    return {"images": n_img, "steps": n_step, "seconds": round(sec, 3),
            "images_per_s": round(median(rates), 1), "images_per_s_best": round(max(rates), 1),
            "images_per_s_mean": round(n_img / sec, 1),
            "piece_images_per_s": [round(r, 1) for r in rates]}


def interleaved(contenders: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]],
                cycles: int, chunk_steps: int, warmup: int,
                sync: Callable[[], Any] | None = None) -> dict[str, dict[str, Any]]:
    """Time contenders that live in one process by turns: each cycle runs ``chunk_steps``
    steps of every contender (the order rotating from cycle to cycle), so a machine whose
    speed drifts over seconds slows all of them alike. ``contenders[name] = (batches, step)``
    as for ``timed_steps`` (loading a batch counts as part of the step). ``sync``: waits for
    queued device work (e.g. ``torch.cuda.synchronize``), called before each turn's clock
    starts and before it stops.

    Returns per contender the images/s of every cycle and their median.
    """
    def first(b):
        return b[0] if isinstance(b, (tuple, list)) else b

    def forever(batches):
        while True:
            yield from batches()

    sync = sync or (lambda: None)
    streams = {name: forever(batches) for name, (batches, _) in contenders.items()}
    for name, (_, step) in contenders.items():
        for _ in range(warmup):
            step(first(next(streams[name])))
    names, rates = list(contenders), {name: [] for name in contenders}
    for c in range(cycles):
        for name in names[c % len(names):] + names[: c % len(names)]:
            step, it, n = contenders[name][1], streams[name], 0
            sync()
            t0 = time.perf_counter()
            for _ in range(chunk_steps):
                x = first(next(it))
                step(x)
                n += len(x)
            sync()
            rates[name].append(n / (time.perf_counter() - t0))
    return {name: {"images_per_s": round(median(r), 1),
                   "cycle_images_per_s": [round(v, 1) for v in r]} for name, r in rates.items()}


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over cycles of a[c] / b[c]: two contenders compared cycle by cycle."""
    return round(median([x / y for x, y in zip(a, b, strict=True)]), 3)


def median(v: Sequence[float]) -> float:
    s = sorted(v)
    n = len(s)
    return float("nan") if n == 0 else (s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2]))


# ----------------------------------------------------------------------------- output


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:  # nan
            return "nan"
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


MARKDOWN: list[str] = []  # every table() also lands here, as Markdown, for the .md file


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "",
          digits: int = 1) -> str:
    """A plain-text table, numbers right-aligned (also kept as Markdown in ``MARKDOWN``)."""
    cells = [[fmt(c, digits) for c in r] for r in rows]
    md = [f"**{title.strip()}**", ""] if title.strip() else []
    md += ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    md += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in cells]
    MARKDOWN.append("\n".join(md))
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
               for i in range(len(headers))]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(vals, widths, numeric, strict=True)).rstrip()

    out = [title] if title else []
    out += [line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    return "\n".join(out)


def machine_info(threads: int) -> dict[str, Any]:
    import torch

    cpu = "unknown"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__,
            "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": threads,
            "load_avg_start": [round(v, 2) for v in os.getloadavg()], "argv": sys.argv[1:]}


def busy_warning(info: dict[str, Any]) -> None:
    """Say so when the machine was not quiet (1-minute load above the threads we use)."""
    load = info.get("load_avg_start", [0])[0]
    if load > 0.5:
        print(f"NOTE: load average was {load:.2f} at the start: other processes were using the"
              " CPU, so these numbers are smoke numbers only.")


def write_json(path: str | Path, record: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record.setdefault("machine", {})["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    m = record["machine"]
    head = (f"`{' '.join(['python', 'benchmarks/' + record['benchmark'] + '.py', *m['argv']])}`"
            f" on {m['cpu']}, {m['torch_threads']} torch thread(s), torch {m['torch']}, "
            f"{m['date']}, load average {m['load_avg_start'][0]} at the start")
    path.with_suffix(".md").write_text("\n\n".join([head, *MARKDOWN]) + "\n")
    print(f"\nwrote {path} and {path.with_suffix('.md').name}")
    return path


def default_json(name: str) -> Path:
    return RESULTS / f"{name}.json"


def ensure_importable() -> None:
    """Make ``import vaekit`` work when run from a checkout without installing."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def vaekit_env(contender: str) -> dict[str, str]:
    """vaekit contenders run with the CPU runtime settings its CLI would choose now
    (``vaekit.runtime.choose_settings``); every other contender runs as its users run it."""
    if not contender.startswith("vaekit"):
        return {}
    from vaekit.runtime import KEYS, choose_settings

    given = {k: os.environ[k] for k in KEYS if k in os.environ}
    return given or choose_settings()
