"""The CLI's CPU runtime defaults: set before torch loads, never over a user's choice."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = "import os, vaekit.cli, torch; print(os.environ.get('OMP_WAIT_POLICY'))"


def _run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env_extra
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_cli_sets_active_wait_policy_by_default():
    assert _run({}) == "ACTIVE"


def test_users_setting_is_kept():
    assert _run({"OMP_WAIT_POLICY": "PASSIVE"}) == "PASSIVE"


def test_no_effect_once_torch_is_loaded(monkeypatch):
    from vaekit.runtime import configure_cpu_runtime

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert "torch" in sys.modules
    assert configure_cpu_runtime() == {"OMP_WAIT_POLICY": ""}
