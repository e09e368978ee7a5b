"""Process-level CPU settings that must be in place before torch loads its OpenMP runtime.

``vaekit`` (the CLI) calls :func:`configure_cpu_runtime` first thing. The choice is the
OpenMP wait policy: what a worker thread does between the many short parallel regions of
a VAE step. Spinning (``OMP_WAIT_POLICY=ACTIVE``) avoids a wake-up per region (up to
~1.1x faster on this project's quiet 2-core host, 1.5x on an earlier one), but a spinning
thread steals the core that another busy process (or vaekit's own other thread) needs:
with 2 busy processes ACTIVE was 2.2x slower than ``PASSIVE`` for training (3-8x on an
earlier host). So vaekit spins only
when it has the machine to itself: :func:`choose_settings` measures the idle cores (of
those it may run on) over 0.1 s at start and picks ACTIVE when at least as many are idle as
torch will use threads (less 0.5 for the measurement's noise), else PASSIVE
(``benchmarks/bench_runtime.py`` measures every choice, quiet and loaded).
A value already set in the environment (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``) is kept.

The CLI also calls :func:`keep_freed_memory`: glibc's malloc reuses freed memory instead of
mapping and unmapping every large tensor (``benchmarks/bench_malloc.py``).

:func:`check_precision` (called by ``vaekit.train.step.make_step``) refuses ``bf16`` on a
CPU without bf16 matrix instructions, where torch emulates it several times slower than
fp32, and on a GPU without bf16.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from vaekit.errors import ConfigError

KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
SAMPLE_S = 0.1  # how long the idle cores are measured at start


def _cpu_times() -> dict[int, tuple[float, float]] | None:
    """Per CPU: (idle + iowait, total) jiffies from /proc/stat (total: user .. steal, the
    first 8 fields; guest time is already inside user); None where unavailable."""
    out = {}
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *values = line.split()
                if not (name.startswith("cpu") and name[3:].isdigit()):
                    continue
                v = [float(x) for x in values[:8]]
                out[int(name[3:])] = (v[3] + (v[4] if len(v) > 4 else 0.0), sum(v))
    except (OSError, ValueError, IndexError):
        return None
    return out or None


def allowed_cpus() -> set[int] | None:
    """The CPUs this process may run on (taskset, cpusets); None where unknown."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def idle_cores(seconds: float = SAMPLE_S) -> float | None:
    """Idle cores, summed over the CPUs this process may run on, averaged over
    ``seconds``; None where unknown."""
    a = _cpu_times()
    time.sleep(seconds)
    b = _cpu_times()
    if a is None or b is None:
        return None
    cpus = (allowed_cpus() or set(b)) & set(a) & set(b)
    idle = 0.0
    for c in cpus:
        total = b[c][1] - a[c][1]
        idle += (b[c][0] - a[c][0]) / total if total > 0 else 1.0
    return idle if cpus else None


def planned_threads() -> int:
    """Threads torch will use: OMP_NUM_THREADS, else the cores this process may run on."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        pass
    return len(allowed_cpus() or ()) or os.cpu_count() or 1


def choose_settings(threads: int | None = None,
                    measure: Callable[[], float | None] = idle_cores) -> dict[str, str]:
    """``{"OMP_WAIT_POLICY": "ACTIVE"}`` when at least ``threads`` cores are idle (spinning
    then costs nobody anything; 0.5 core of slack for the measurement's own noise), else
    PASSIVE, also when the idle cores cannot be measured. One thread needs no policy (it
    never waits for another)."""
    threads = planned_threads() if threads is None else threads
    if threads <= 1:
        return {}
    idle = measure()
    quiet = idle is not None and idle >= threads - 0.5
    return {"OMP_WAIT_POLICY": "ACTIVE" if quiet else "PASSIVE"}


def configure_cpu_runtime() -> dict[str, str]:
    """Apply :func:`choose_settings` unless a wait policy is already set; returns what is in
    effect. Has no effect on OpenMP once torch has been imported in this process."""
    if "torch" not in sys.modules and not any(k in os.environ for k in KEYS):
        os.environ.update(choose_settings())
    return {key: os.environ[key] for key in KEYS if key in os.environ}


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MALLOC_SETTINGS = ((M_MMAP_THRESHOLD, 32 * 2**20), (M_TRIM_THRESHOLD, 2**31 - 1),
                   (M_TOP_PAD, 2**30))


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed memory instead of handing it back to the kernel.

    By default a block above the (dynamic) mmap threshold is mapped on every allocation and
    unmapped when freed, and the heap top is trimmed: each large tensor of an importance-
    sampling chunk or a conv layer then costs page faults and the kernel zeroing fresh pages.
    Measured on this project's 2-core host, ``vaekit evaluate --loglik 1000 --limit 200`` of
    the ResNet preset: 49.6 s wall (34.2 s system time) before, 30.6 s (2.0 s) after, peak
    resident size 933 -> 1,271 MB; training unchanged (``benchmarks/bench_malloc.py``).
    Only blocks over 32 MB are still mapped; freed memory stays in the process (its resident
    size stays near its peak). glibc only; returns whether it applied. A malloc setting in
    the environment (``MALLOC_*``, ``GLIBC_TUNABLES``) is left as it is."""
    if not sys.platform.startswith("linux") or any(
            key.startswith("MALLOC_") or key == "GLIBC_TUNABLES" for key in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    return all(mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS)


# ----------------------------------------------------------------------------- bf16 support

SLOW_BF16_ENV = "VAEKIT_ALLOW_SLOW_BF16"
# CPU flags of native bf16 matrix instructions: x86 (AVX512-BF16, AMX-BF16), Arm (FEAT_BF16)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16", "svebf16")


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU feature flags of the first processor listed (x86 ``flags``, Arm
    ``Features``); None where they cannot be read (not Linux)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        return None
    return None


def cpu_bf16_matmul() -> bool | None:
    """Whether this CPU has native bf16 matrix instructions (oneDNN then runs bf16 matmuls
    faster than fp32); None where the flags cannot be read. Without them torch emulates
    bf16: on this project's AVX2 host the bf16 MLP VAE trained at 1,575 img/s vs 13,788 in
    fp32 (``benchmarks/bench_train.py --sections interleaved``)."""
    flags = cpu_flags()
    return None if flags is None else bool(flags & set(BF16_CPU_FLAGS))


def cpu_capability() -> str:
    """torch's vector ISA for this CPU (``DEFAULT``, ``AVX2``, ``AVX512``, ``SVE256``...)."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def check_precision(precision: str, device: Any,
                    has_bf16: Callable[[], bool | None] | None = None) -> None:
    """Refuse ``bf16`` where it is not supported (a GPU without bf16) or would be several
    times slower than fp32 (a CPU without bf16 matrix instructions); ``VAEKIT_ALLOW_SLOW_BF16=1``
    lets bf16 run on such a CPU anyway (tests of the bf16 math). A CPU whose flags cannot be
    read is allowed."""
    import torch

    if precision != "bf16":
        return
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            name = torch.cuda.get_device_name(device)
            raise ConfigError(f"--precision bf16: the GPU {name} does not support bfloat16",
                              "use --precision fp32")
        return
    if os.environ.get(SLOW_BF16_ENV, "") not in ("", "0"):
        return
    if (has_bf16 or cpu_bf16_matmul)() is not False:
        return
    raise ConfigError(
        "--precision bf16 on this CPU would run about 7x slower than fp32: it has no bf16 "
        f"matrix instructions (no {' / '.join(BF16_CPU_FLAGS[:2])} flag; torch CPU capability "
        f"{cpu_capability()})",
        f"use --precision fp32 (the default) or a GPU (--device cuda), or set "
        f"{SLOW_BF16_ENV}=1 to run bf16 slowly anyway")
