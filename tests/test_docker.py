"""docker/Dockerfile agrees with constraints.txt and keeps its layers in the cheap order (read as
text: no docker daemon is needed, and none is run here)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[name.strip().lower()] = version.strip()
    return pins


def _instructions() -> list[str]:
    return [line.strip() for line in DOCKERFILE.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_base_image_tag_is_pinned_to_the_constrained_torch() -> None:
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert base, "BASE_IMAGE has a default"
    image, _, tag = base.group(1).partition(":")
    assert tag and tag != "latest", f"the base image {base.group(1)} is pinned to a tag"
    assert tag.split("-", 1)[0] == _pins()["torch"], (
        f"the base image's torch ({tag}) is the torch of constraints.txt ({_pins()['torch']}): "
        "otherwise pip replaces it inside the image")


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    steps = _instructions()
    deps = next(i for i, s in enumerate(steps) if "pip install -c constraints.txt -r /tmp/requirements.txt" in s)
    first_source = next(i for i, s in enumerate(steps) if re.match(r"COPY (--\S+ )*(prometar|orchestration)\b", s))
    copies_before = [s for s in steps[:deps] if s.startswith("COPY")]
    assert deps < first_source
    assert copies_before == ["COPY pyproject.toml constraints.txt ./"]
    assert any("pip install --no-deps" in s for s in steps[first_source:])


def test_the_user_owns_the_work_folder() -> None:
    steps = _instructions()
    user = steps.index("USER prometar")
    workdirs = [i for i, s in enumerate(steps) if s.startswith("WORKDIR")]
    assert steps[workdirs[-1]] == "WORKDIR /work" and workdirs[-1] > user
    assert any("chown -R prometar:prometar /work" in s for s in steps[:user])
