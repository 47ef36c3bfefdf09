"""Shared test setup: offline hubs, one torch thread, Ray's temporary folder, and the path to the
shared references."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray >= 2.59 turns token authentication on by itself when a token file exists, and a process keeps
# the auth mode of its first ray.init. The tests' throw-away local instances (127.0.0.1 only) run
# without it, deliberately; the multi-node cluster tests start their nodes with RAY_AUTH_MODE=token
# and a token of their own.
os.environ["RAY_AUTH_MODE"] = "disabled"
# Every Ray the tests start in this process or its subprocesses (the fixtures', the launches') keeps
# its session folders (logs, sockets) in one folder of this test session, removed when it ends
# (pytest_unconfigure), instead of leaving them in /tmp/ray. Short: Ray's socket paths are
# length-limited. The cluster tests give their nodes folders of their own and remove them.
RAY_TEMP = Path(tempfile.mkdtemp(prefix="pmrt", dir="/tmp"))
os.environ["RAY_TMPDIR"] = str(RAY_TEMP)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def server_stack():
    """PostgreSQL, an S3 server and ``mlflow server`` on 127.0.0.1 (``tests/servers.py``), shared by
    the session's tests (each uses its own experiment names and storage prefixes); stopped at the
    end, and the session fails if any of their processes is left."""
    from servers import tracking_stack

    with tracking_stack() as stack:
        yield stack


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(RAY_TEMP, ignore_errors=True)
