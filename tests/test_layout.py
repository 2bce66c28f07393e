"""The package layout: no import cycles, and the modules that moved still import from their old paths.

The import graph is read from the source (``ast``), not by importing: an edge ``a -> b`` for every
``import``/``from ... import`` in ``a`` that names a module ``b`` of ``agents``, ``contenv``,
``contenv_cli`` or ``scenarios``. Imports under ``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "contenv", "contenv_cli", "scenarios")


def module_files() -> dict[str, Path]:
    mods = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], lazy: bool, type_checking: bool):
    """The import statements of ``body``: module level, plus those inside functions when ``lazy``."""
    for node in body:
        if isinstance(node, ast.If) and _type_checking(node):
            if type_checking:
                yield from _imports(node.body, lazy, type_checking)
            yield from _imports(node.orelse, lazy, type_checking)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if lazy:
                yield from _imports(node.body, lazy, type_checking)
        else:  # class bodies, try/if/with blocks at module level
            for field in ("body", "orelse", "finalbody", "handlers"):
                sub = getattr(node, field, None)
                if isinstance(sub, list):
                    yield from _imports(sub, lazy, type_checking)


def import_graph(lazy: bool = False, type_checking: bool = False) -> dict[str, set[str]]:
    """``module -> modules it imports`` over the repository's packages."""
    mods = module_files()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path)).body, lazy, type_checking):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in mods:  # `from a.b import name`: the module a.b
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_graph_sees_the_known_edges():
    graph = import_graph()
    assert "contenv.evaluation.rundir" in graph["agents.training.run"]
    assert "agents.training.run_common" in graph["agents.training.population_run"]
    assert "agents.training.population_run" in graph["agents.training.run"]
    assert "agents.sac" not in graph["agents.training.plasticity"]  # only under TYPE_CHECKING
    assert "agents.sac" in import_graph(type_checking=True)["agents.training.plasticity"]


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_at_module_level():
    assert cycles(import_graph()) == []


def test_no_import_cycles_with_lazy_imports():
    """Imports inside functions count too: agents.training.run <-> agents.training.population_run was one (issue 13)."""
    assert cycles(import_graph(lazy=True)) == []


def test_no_import_cycles_with_type_hints():
    """agents.sac <-> agents.protection was one through the protections' type hints (issue 13)."""
    assert cycles(import_graph(lazy=True, type_checking=True)) == []


def test_protection_does_not_know_sac():
    """agents.sac imports agents.protection; the methods are typed against the ``Agent`` protocol instead."""
    graph = import_graph(lazy=True, type_checking=True)
    users = sorted(name for name, targets in graph.items()
                   if name.startswith("agents.protection") and "agents.sac" in targets)
    assert users == []


def test_evaluation_is_its_own_subpackage():
    """The data path reads from the folders: scenarios -> contenv (environments) -> agents -> contenv.evaluation."""
    graph = import_graph(lazy=True)
    evaluation = {name for name in graph if name.startswith("contenv.evaluation")}
    assert {"contenv.evaluation.evaluator", "contenv.evaluation.episode_pool", "contenv.evaluation.metrics",
            "contenv.evaluation.report", "contenv.evaluation.rundir", "contenv.evaluation.sb3"} <= evaluation
    for name in evaluation:  # evaluation never reaches into the agents
        assert not any(target.startswith("agents") for target in graph[name]), name


@pytest.mark.parametrize("old, new", [
    ("contenv.episode_pool", "contenv.evaluation.episode_pool"),
    ("contenv.metrics", "contenv.evaluation.metrics"),
    ("contenv.report", "contenv.evaluation.report"),
    ("contenv.rundir", "contenv.evaluation.rundir"),
    ("contenv.sb3", "contenv.evaluation.sb3"),
])
def test_old_import_paths_still_work(old, new):
    if old.endswith("sb3"):
        pytest.importorskip("stable_baselines3")
    shim, moved = importlib.import_module(old), importlib.import_module(new)
    assert moved.__all__ and list(shim.__all__) == list(moved.__all__)
    for name in moved.__all__:
        assert getattr(shim, name) is getattr(moved, name), name
    public = [name for name in vars(moved) if not name.startswith("_")]
    for name in public:  # constants outside __all__ too (contenv.metrics.FINAL_POINTS)
        assert getattr(shim, name) is getattr(moved, name), name


def test_evaluation_package_keeps_its_names():
    from contenv.evaluation import Evaluator, ScriptedPolicy, evaluate, evaluate_sequential
    from contenv.evaluation.evaluator import evaluate as moved

    assert evaluate is moved and Evaluator and ScriptedPolicy and evaluate_sequential


@pytest.mark.parametrize("old", sorted(__import__("agents").MOVED))
def test_modules_moved_into_nets_and_training_import_from_their_old_paths(old):
    import sys
    import warnings

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shim = importlib.import_module(old)
    moved = importlib.import_module(__import__("agents").MOVED[old])
    assert shim is moved and moved.__name__ != old
    assert any(issubclass(w.category, DeprecationWarning) and "moved to" in str(w.message) for w in caught)
