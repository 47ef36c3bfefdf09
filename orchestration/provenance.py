"""Provenance: which code, packages and machine produced a result.

The code version tags every launch and trial run (``prometar.version``, ``prometar.git_sha``);
:func:`environment` is a trial's ``environment.json`` artifact.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import prometar

PACKAGES: tuple[str, ...] = ("prometar", "torch", "torchvision", "open_clip_torch", "numpy", "ray", "mlflow")
"""The packages whose versions ``environment.json`` records."""


def code_version() -> str:
    """The package version of ``prometar``."""
    return prometar.__version__


GIT_SHA_ENV = "PROMETAR_GIT_SHA"
"""The code revision where there is no ``.git``: the Docker image's (its ``GIT_SHA`` build
argument) and a Ray Job's (set by the submitting checkout)."""


def git_sha(root: Path | None = None) -> str:
    """The commit of the checkout ``prometar`` runs from (or of ``root``); outside git,
    ``$PROMETAR_GIT_SHA`` when it is a commit id (7 to 40 hex digits); else ``unknown``."""
    root = root or Path(prometar.__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
        if out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    recorded = os.environ.get(GIT_SHA_ENV, "").strip()
    return recorded.lower() if re.fullmatch(r"[0-9a-fA-F]{7,40}", recorded) else "unknown"


def environment(device: str, git_sha: str) -> dict[str, Any]:
    """Device, CUDA, GPU, host, Python and package versions of this process (imports torch)."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    import torch

    return {
        "device": device,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "packages": packages,
        "git_sha": git_sha,
    }
