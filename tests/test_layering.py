"""Convention 1: the training core imports without the application layer's dependencies."""

from __future__ import annotations

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
