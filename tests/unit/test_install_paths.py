"""The install paths for a cluster's drivers: ``make venv`` passes the variant's constraints and torch
index to pip; the CUDA 12 constraints agree with the default on every pin but torch's CUDA build;
the image carries the MLflow server's clients and records the code revision."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pins(name: str) -> dict[str, str]:
    lines = (REPO / name).read_text().splitlines()
    found = dict(line.split("==", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {package.lower(): version for package, version in found.items()}


def planned_pip(tmp_path: Path, *variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-n", "-B", "venv", f"VENV={tmp_path / 'venv'}", *variables],
        cwd=REPO,
        capture_output=True,
        text=True,
    )


def test_make_venv_passes_the_variant_to_pip(tmp_path: Path) -> None:
    default = planned_pip(tmp_path)
    assert default.returncode == 0, default.stderr
    pip = [line for line in default.stdout.splitlines() if "pip install" in line]
    assert len(pip) == 1 and " -c constraints.txt " in pip[0] and "index-url" not in pip[0]

    cu126 = planned_pip(tmp_path, "TORCH_VARIANT=cu126")
    assert cu126.returncode == 0, cu126.stderr
    pip = [line for line in cu126.stdout.splitlines() if "pip install" in line]
    assert len(pip) == 1
    assert " -c constraints-cu126.txt --extra-index-url https://download.pytorch.org/whl/cu126 " in pip[0]
    assert f"touch {tmp_path / 'venv'}/.prometar-installed-cu126" in cu126.stdout

    mirror = planned_pip(tmp_path, "TORCH_VARIANT=cu126", "TORCH_INDEX_URL=https://mirror.example/cu126")
    assert "--extra-index-url https://mirror.example/cu126 " in mirror.stdout


def test_an_unknown_variant_is_refused(tmp_path: Path) -> None:
    refused = planned_pip(tmp_path, "TORCH_VARIANT=cu99")
    assert refused.returncode != 0 and "TORCH_VARIANT=cu99: one of cu126" in refused.stderr
    assert "pip install" not in refused.stdout


def test_the_cuda12_constraints_agree_on_every_other_pin() -> None:
    default, cu126 = pins("constraints.txt"), pins("constraints-cu126.txt")
    assert cu126["torch"] == default["torch"] + "+cu126"
    assert cu126["torchvision"] == default["torchvision"] + "+cu126"
    others = set(cu126) - {"torch", "torchvision"}
    assert {name: cu126[name] for name in others} == {name: default[name] for name in others}
    left_out = set(default) - set(cu126)  # CUDA 13's runtime libraries: the cu126 wheels pin theirs
    assert left_out and all(re.match(r"(nvidia-|cuda-)", name) for name in left_out)
    assert not any(name.endswith("-cu12") for name in cu126)


def test_the_image_installs_the_server_clients_and_records_the_revision() -> None:
    server = re.search(r"^server = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), flags=re.M).group(1)
    assert set(re.findall(r'"([^"]+)"', server)) == {"psycopg2-binary", "boto3"}
    default = pins("constraints.txt")
    assert {"psycopg2-binary", "boto3"} <= set(default)  # pinned like everything else
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "['optional-dependencies']['server']" in dockerfile
    assert re.search(r"^ARG GIT_SHA=unknown$", dockerfile, flags=re.M)
    assert re.search(r"^ENV PROMETAR_GIT_SHA=\$\{GIT_SHA\}$", dockerfile, flags=re.M)
    assert (
        "import prometar, orchestration.cli, ray, mlflow, open_clip, pyarrow.fs, psycopg2, boto3"
        in dockerfile
    )
