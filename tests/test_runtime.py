"""The CLI's CPU runtime settings: chosen before torch loads from the idle cores, never
over a user's choice."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

from vaekit import runtime
from vaekit.runtime import choose_settings, configure_cpu_runtime

CODE = ("import os, vaekit.cli, torch; "
        "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")


def _run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", CODE], env=env | env_extra, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_spin_only_with_the_cores_to_ourselves():
    def idle(v):
        return lambda: v

    assert choose_settings(2, idle(2.0)) == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert choose_settings(2, idle(1.6)) == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert choose_settings(2, idle(1.2)) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert choose_settings(2, idle(0.0)) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert choose_settings(2, idle(None)) == {"OMP_WAIT_POLICY": "PASSIVE"}  # unknown
    assert choose_settings(1, idle(0.0)) == {}  # one thread never waits for another


def test_idle_cores_count_only_the_cpus_we_may_run_on(monkeypatch):
    """cpu0 idle the whole time, cpu1 half, cpu2 busy (and not ours): 1.5 idle cores of 0-1,
    from the per-CPU lines of /proc/stat (idle + iowait over user .. steal)."""
    readings = iter([{0: (0, 0), 1: (0, 0), 2: (0, 0)},
                     {0: (100, 100), 1: (50, 100), 2: (0, 100)}])
    monkeypatch.setattr(runtime, "_cpu_times", lambda: next(readings))
    monkeypatch.setattr(runtime, "allowed_cpus", lambda: {0, 1})
    assert runtime.idle_cores(0) == 1.5


def test_proc_stat_is_read_per_cpu():
    times = runtime._cpu_times()
    if times is None:  # no /proc/stat: the policy falls back to PASSIVE (tested above)
        return
    assert set(times) >= (runtime.allowed_cpus() or set())
    assert all(0 <= idle <= total for idle, total in times.values())


def test_the_cli_chooses_a_policy_before_torch_loads():
    policy, spin = _run({"OMP_NUM_THREADS": "2"}).split()
    assert policy in ("ACTIVE", "PASSIVE") and spin == "None"


def test_users_setting_is_kept():
    assert _run({"OMP_WAIT_POLICY": "PASSIVE"}) == "PASSIVE None"
    assert _run({"GOMP_SPINCOUNT": "1000"}) == "None 1000"


def test_no_effect_once_torch_is_loaded(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert "torch" in sys.modules
    assert configure_cpu_runtime() == {}


def test_malloc_keeps_freed_memory_on_glibc_unless_the_user_set_malloc(monkeypatch):
    for key in [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]:
        monkeypatch.delenv(key)
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert runtime.keep_freed_memory() is glibc  # mallopt accepted every setting
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert runtime.keep_freed_memory() is False  # the user's malloc settings win
