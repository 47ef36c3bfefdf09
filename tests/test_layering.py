"""Convention 1: the training core imports without the application layer's dependencies."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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
print(len(mods))
"""


def test_core_imports_without_application_dependencies():
    out = subprocess.run([sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 0


def test_core_sources_never_import_application_layer():
    offenders = []
    for path in (ROOT / "prometar").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")):
                head = stripped.split()[1].split(".")[0]
                if head in {"ray", "mlflow", "click", "orchestration"}:
                    offenders.append(f"{path}: {stripped}")
    assert offenders == []


def test_core_never_imports_the_toy_package():
    """The toy world is a client of the core: only the application, tests and benchmarks import it."""
    core = [path for path in (ROOT / "prometar").rglob("*.py") if (ROOT / "prometar" / "toy") not in path.parents]
    offenders = []
    for path in core:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names
                          if name == "prometar.toy" or name.startswith("prometar.toy.")]
            if isinstance(node, ast.ImportFrom) and node.module == "prometar":
                offenders += [f"{path.relative_to(ROOT)}: prometar.{a.name}" for a in node.names if a.name == "toy"]
    assert len(core) > 20 and offenders == []


DRIVER = r"""
import sys
from orchestration.runner import validate_sweep
spec, trials = validate_sweep("sweeps/base2new.yaml")
import prometar.data
assert prometar.data.get_dataset("eurosat").folder
print(len(trials), "torch" in sys.modules)
"""


def test_sweep_validation_in_the_driver_does_not_import_torch():
    """The launch driver plans trials from the catalog alone; torch loads only in the trial workers."""
    out = subprocess.run([sys.executable, "-c", DRIVER], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    count, torch_loaded = out.stdout.split()
    assert int(count) == 33 and torch_loaded == "False"
