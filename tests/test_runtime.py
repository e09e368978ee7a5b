"""The CLI's CPU runtime settings: chosen before torch loads from the idle cores, never
over a user's choice."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from vaekit.runtime import choose_settings, configure_cpu_runtime, idle_cores

CODE = ("import os, vaekit.cli, torch; "
        "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")


def _run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", CODE], env=env | env_extra, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_spin_only_with_the_cores_to_ourselves():
    assert choose_settings(idle=2.0, threads=2) == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert choose_settings(idle=1.6, threads=2) == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert choose_settings(idle=1.2, threads=2) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert choose_settings(idle=0.0, threads=2) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert choose_settings(idle=None, threads=2) == {"OMP_WAIT_POLICY": "PASSIVE"}  # unknown
    assert choose_settings(idle=0.0, threads=1) == {}  # one thread never waits for another


def test_idle_cores_see_a_busy_process():
    quiet = idle_cores(0.2)
    if quiet is None:  # no /proc/stat: the policy falls back to PASSIVE (tested above)
        return
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        loaded = idle_cores(0.3)
    finally:
        spin.kill()
    assert 0 <= loaded <= (os.cpu_count() or 1)
    assert loaded <= quiet + 0.5  # a whole core busier (allowing for others' noise)


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
