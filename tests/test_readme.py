"""The README stays true: its Python example runs, its CLI flags exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vaekit.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "README has no Python examples"
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # a reader may run it twice: a new run directory each time
        namespace: dict = {}
        for block in blocks:  # in order, sharing names, as a reader would run them
            exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "epoch 3: validation KL" in out  # the custom callback ran
    elbo, log_px = map(float, re.findall(r"ELBO (-?[\d.]+), log p\(x\) (-?[\d.]+)", out)[0])
    assert elbo <= log_px + 0.5  # the ELBO is a lower bound (one-sample noise aside)
    runs = sorted((tmp_path / "runs").glob("digits-*/checkpoint/model.safetensors"))
    assert len(runs) == 2


def test_readme_first_commands_are_the_two_scripts():
    text = README.read_text()
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1).splitlines()
    assert [line.split()[:2] for line in first] == [["bash", "scripts/quickstart.sh"],
                                                   ["bash", "scripts/test.sh"]]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_flags_in_the_readme_tables_exist(command):
    text = README.read_text()
    section = text.split(f"### `vaekit {command}")[1].split("###")[0]
    flags = set(re.findall(r"^\| `(--[a-z0-9-]+)", section, flags=re.M))
    sub = build_parser(command)._subparsers._group_actions[0].choices[command]
    known = {s for a in sub._actions for s in a.option_strings}
    assert flags and flags <= known, flags - known
