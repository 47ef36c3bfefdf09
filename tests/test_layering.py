"""Convention 1: the training core imports without the application layer's dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = r"""
import importlib, importlib.abc, pkgutil, sys
BLOCKED = {"ray", "mlflow", "click", "orchestration", "optuna", "pandas"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {name}")
        return None
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
