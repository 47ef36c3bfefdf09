"""The layering: the core imports no application, no toy world, and no module imports in a cycle.

Convention 1: the training core (``prometar/``) imports without the application layer's
dependencies and never imports ``orchestration``; nothing in the core outside ``prometar/toy``
imports the toy world; no two modules import each other, directly or through others (module-level
and function-level imports alike).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("prometar", "orchestration")
APPLICATION = {"ray", "mlflow", "click", "orchestration", "optuna", "pandas"}

BLOCKER = r"""
import importlib, importlib.abc, importlib.machinery, pkgutil, sys
BLOCKED = {"ray", "mlflow", "click", "orchestration", "optuna", "pandas"}
class Block(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # a blocked package looks present to find_spec (torch probes for pandas) but fails to import
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)
        return None
    def create_module(self, spec):
        raise ImportError(f"blocked import of {spec.name}")
    def exec_module(self, module):
        raise ImportError(f"blocked import of {module.__name__}")
sys.meta_path.insert(0, Block())
import prometar
mods = [m.name for m in pkgutil.walk_packages(prometar.__path__, "prometar.")]
for m in mods:
    importlib.import_module(m)
print("\n".join(sorted(mods)))
"""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def imported(path: Path, *, type_checking: bool = False) -> set[str]:
    """Every module an import statement names (``from a import b``: ``a`` and ``a.b``), anywhere
    in the file except under ``if TYPE_CHECKING:`` (those too with ``type_checking``)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree if type_checking else _without_type_checking(tree)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _without_type_checking(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = [ast.Pass()]
    return tree


def test_core_imports_without_application_dependencies():
    out = subprocess.run([sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    on_disk = {name for name in modules("prometar") if name != "prometar"}
    assert set(out.stdout.split()) == on_disk  # every core module imported, with the application blocked


def test_core_sources_never_import_the_application():
    offenders = [
        f"{name}: {target}"
        for name, path in modules("prometar").items()
        for target in imported(path)
        if target.split(".")[0] in APPLICATION
    ]
    assert offenders == []


def test_nothing_in_the_core_outside_the_toy_world_imports_it():
    offenders = [
        f"{name}: {target}"
        for name, path in modules("prometar").items()
        if not name.startswith("prometar.toy")
        for target in imported(path)
        if target == "prometar.toy" or target.startswith("prometar.toy.")
    ]
    assert offenders == []


@pytest.mark.parametrize("type_checking", [False, True], ids=["runtime", "with-type-checking"])
def test_no_import_cycles(type_checking: bool):
    """No cycle among the imports, module- and function-level, ``TYPE_CHECKING`` imports included."""
    known = {name: path for package in PACKAGES for name, path in modules(package).items()}
    graph = {
        name: {t for t in imported(path, type_checking=type_checking) if t in known and t != name}
        for name, path in known.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, path)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert cycles == []
    assert sum(len(targets) for targets in graph.values()) > 100  # the graph was read, not empty


DRIVER = r"""
import sys
from orchestration.sweeps.planning import load_plan
trials = load_plan("sweeps/base2new.yaml").trials
import prometar.data.catalog
assert prometar.data.catalog.get_dataset("eurosat").folder
print(len(trials), "torch" in sys.modules)
"""


def test_sweep_validation_in_the_driver_does_not_import_torch():
    """The launch driver plans trials from the catalog alone; torch loads only in the trial workers."""
    out = subprocess.run([sys.executable, "-c", DRIVER], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    count, torch_loaded = out.stdout.split()
    assert int(count) == 33 and torch_loaded == "False"


PACKAGE_IMPORTS: dict[str, set[str]] = {
    "sweeps": set(),
    "ledger": {"sweeps"},
    "results": {"ledger", "sweeps"},
    "launch": {"sweeps", "ledger", "results"},
    "cluster": {"sweeps"},
}
"""orchestration package → the sibling packages it may import (docs/internals.md, "The map"); the
top-level modules (``errors``, ``layout``, ``provenance``, ``environment``) serve every package."""


def test_orchestration_packages_import_only_what_the_map_allows():
    offenders = []
    for name, path in modules("orchestration").items():
        parts = name.split(".")
        if len(parts) < 3 or parts[1] not in PACKAGE_IMPORTS:
            continue
        package = parts[1]
        for target in imported(path):
            other = target.split(".")
            if other[0] == "orchestration" and len(other) > 1 and other[1] in PACKAGE_IMPORTS:
                if other[1] != package and other[1] not in PACKAGE_IMPORTS[package]:
                    offenders.append(f"{name}: {target}")
    assert offenders == []
