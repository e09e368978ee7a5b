"""The shape of the code: imports go one way (data -> model -> objective -> trainer ->
evaluation -> report -> API -> CLI), with no cycle, and one command opens a run directory
once (config parsed, checkpoint hashed, model built and data prepared once each)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vaekit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Nodes inside ``if TYPE_CHECKING:`` blocks (annotations only: no import at run time)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for n in ast.walk(node)}
    return out


def imports() -> dict[str, list[tuple[str, bool]]]:
    """module -> [(imported vaekit module, inside a function)] for every module."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    out: dict[str, list[tuple[str, bool]]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        funcs = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
        in_func = {id(n) for f in funcs for n in ast.walk(f) if n is not f}
        edges = []
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                target = resolve(t) if t.startswith("vaekit") else None
                if target and target != name:
                    edges.append((target, id(node) in in_func))
        out[name] = edges
    return out


def _graph() -> dict[str, set[str]]:
    """Import edges, with the parent packages a cross-package import executes first."""
    graph: dict[str, set[str]] = {}
    for name, edges in imports().items():
        targets = set()
        for target, _ in edges:
            targets.add(target)
            parent = target.rpartition(".")[0]
            while parent.count(".") >= 1 and not name.startswith(parent + "."):
                targets.add(parent)  # importing vaekit.a.b runs vaekit/a/__init__.py first
                parent = parent.rpartition(".")[0]
        graph[name] = targets - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert len(graph) > 50  # the walk found the package
    assert _cycles(graph) == []


def test_a_cycle_is_found_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _edges_from(prefix: str) -> list[tuple[str, str, bool]]:
    return [(m, t, inner) for m, edges in imports().items() if m == prefix
            or m.startswith(prefix + ".") for t, inner in edges]


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("vaekit.data", ("vaekit.config", "vaekit.registry", "vaekit.models", "vaekit.train",
                     "vaekit.evaluation", "vaekit.report", "vaekit.distributions")),
    ("vaekit.nn", ("vaekit.config", "vaekit.train", "vaekit.evaluation", "vaekit.report")),
    ("vaekit.distributions", ("vaekit.config", "vaekit.train", "vaekit.evaluation",
                              "vaekit.report")),
    ("vaekit.models", ("vaekit.train", "vaekit.evaluation", "vaekit.report")),
    ("vaekit.objectives", ("vaekit.train", "vaekit.evaluation", "vaekit.report")),
    ("vaekit.train", ("vaekit.evaluation", "vaekit.report", "vaekit.rundir", "vaekit.api")),
    ("vaekit.evaluation", ("vaekit.train", "vaekit.report", "vaekit.rundir", "vaekit.api",
                           "matplotlib")),
    ("vaekit.report", ("vaekit.api", "vaekit.cli")),
    ("vaekit.limits", ("vaekit.models",)),
    ("vaekit.config", ("vaekit.data", "vaekit.models", "vaekit.train")),
])
def test_imports_go_one_way(layer, forbidden):
    """Nothing downstream reaches back upstream (shared/DESIGN.md's data path)."""
    bad = [(m, t) for m, t, _ in _edges_from(layer) if t.startswith(forbidden)]
    assert bad == []
    if layer == "vaekit.evaluation":  # no figures in the estimators either
        sources = "".join(p.read_text() for p in (PACKAGE / "evaluation").glob("*.py"))
        assert "matplotlib" not in sources


def test_nothing_under_train_imports_inside_a_function():
    assert [(m, t) for m, t, inner in _edges_from("vaekit.train") if inner] == []


def test_only_the_cli_and_its_demo_use_the_api():
    users = {m for m, edges in imports().items() for t, _ in edges if t == "vaekit.api"}
    assert users <= {"vaekit.cli", "vaekit.demo"}


def test_cli_is_thin():
    assert len((PACKAGE / "cli.py").read_text().splitlines()) < 300


def test_vaekit_help_needs_no_torch():
    code = ("import sys; from vaekit.cli import main; rc = main(['--help']); "
            "sys.exit(3 if 'torch' in sys.modules else rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "train" in res.stdout and "evaluate" in res.stdout


# ------------------------------------------------------------------ a run directory, once

def _tracer():
    spec = importlib.util.spec_from_file_location("trace_command",
                                                  ROOT / "scripts" / "trace_command.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.trace


def test_a_command_opens_the_run_directory_once(tmp_path, monkeypatch):
    """``train --two-stage`` keeps stage 1 in memory for stage 2 and the report;
    ``evaluate`` parses the config once, hashes each checkpoint file once, builds each
    stage's model once (nothing on the meta device) and prepares the data once, the
    report after it included."""
    monkeypatch.setenv("VAEKIT_NO_REPORT", "0")  # the report is part of each command
    trace = _tracer()
    run = tmp_path / "ts"
    args = ["--data", "manifold:r=1,d=8,n=300", "--likelihood", "gaussian-gamma",
            "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--device", "cpu",
            "--no-progress", "--two-stage", "--stage2-epochs", "1", "--out", str(run)]
    t0 = time.perf_counter()
    code, counts = trace(["train", *args])
    assert code == 0
    assert counts == {"config parses": 1, "checkpoint file hashes": 0, "model builds": 2,
                      "data preparations": 1, "dataset loads": 1,
                      "model builds on the meta device": 2}  # size checks of new models
    code, counts = trace(["evaluate", str(run), "--loglik", "20", "--k", "5"])
    assert code == 0
    assert counts == {"config parses": 2, "checkpoint file hashes": 6, "model builds": 2,
                      "data preparations": 1, "dataset loads": 1,
                      "model builds on the meta device": 0}  # 2: stage 1's and stage 2's
    assert time.perf_counter() - t0 < 120
