"""The code revision recorded on every run: the checkout's commit, else the one the image or the Ray
Job was given (``$PROMETAR_GIT_SHA``), else ``unknown``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestration import provenance

PROBE = "from orchestration.provenance import git_sha; print(git_sha())"


def sha_without_git(tmp_path, recorded: str | None) -> str:
    """``git_sha()`` in a process where git finds no repository (as in the image or a job's folder)."""
    env = {"PATH": "/usr/bin:/bin", "GIT_DIR": str(tmp_path / "no-repository")}
    if recorded is not None:
        env[provenance.GIT_SHA_ENV] = recorded
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_without_git_the_recorded_revision_is_used(tmp_path) -> None:
    assert sha_without_git(tmp_path, "0123456789ABCDEF0123456789abcdef01234567") == (
        "0123456789abcdef0123456789abcdef01234567"
    )
    assert sha_without_git(tmp_path, "abc1234") == "abc1234"


@pytest.mark.parametrize("recorded", [None, "", "main", "abc123", "abc1234\nrm -rf /", "g" * 40, "a" * 41])
def test_without_git_anything_but_a_commit_id_is_unknown(tmp_path, recorded) -> None:
    assert sha_without_git(tmp_path, recorded) == "unknown"


def test_in_a_checkout_git_wins_over_the_variable(monkeypatch) -> None:
    head = provenance.git_sha()  # the tests run from a clone
    monkeypatch.setenv(provenance.GIT_SHA_ENV, "f" * 40)
    assert provenance.git_sha() == head and len(head) == 40 and head != "f" * 40


def test_a_ray_job_carries_the_revision_of_its_working_directory(tmp_path) -> None:
    from orchestration.cluster.jobs import build_submission

    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "s.yaml").write_text(
        "name: s\ngrid: {method: [ivlp], dataset: [eurosat]}\noverrides: {backbone.name: tiny-test}\n"
    )
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "s"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    _, _, env, _ = build_submission(
        tmp_path / "sweeps" / "s.yaml", working_dir=tmp_path, output="/shared/out"
    )
    assert env["env_vars"][provenance.GIT_SHA_ENV] == head
    assert "/.git/" in env["excludes"]  # what the variable stands in for
