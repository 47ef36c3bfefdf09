"""Test-only fault injection into Ray trials, installed by the tests in the Ray workers.

Nothing in the product knows about it. A test starts its local Ray with this module's
:func:`install` as Ray's ``worker_process_setup_hook`` (:func:`runtime_env`): every worker process
then wraps ``prometar.run.run`` — what the trainable calls — so that after each epoch event (the
epoch's checkpoint is reported to Tune by then) a trial listed in the JSON file named by
:data:`FAULTS_ENV` raises :class:`InjectedFault`: ``{trial_key: "once" | "always"}`` (``once``: only
on its first attempt, marked by a ``<key>.failed`` file beside the JSON). ``"hold"`` holds the trial
instead: it creates ``<key>.held`` beside the JSON, then waits until a file ``release`` (every
trial) or ``<key>.release`` (that trial) exists there (a test holds its victims deterministically,
and releases them when it is ready). ``"enospc"`` fills the trial's disk after its first epoch:
from then on (a ``<key>.full`` file beside the JSON, so retries too) every ``torch.save`` in the
trial — its next checkpoint — raises ``OSError(ENOSPC)`` without a file name, as a failed write does.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FAULTS_ENV = "PROMETAR_TEST_FAULTS"
"""Names the faults JSON in the workers' environment (read by this module only)."""


class InjectedFault(RuntimeError):
    """The failure a listed trial raises."""


def runtime_env(faults: Path, **env_vars: str) -> dict[str, Any]:
    """A Ray ``runtime_env`` whose workers import this module and inject the faults in ``faults``."""
    path = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")) if p
    )
    return {
        "worker_process_setup_hook": f"{__name__}.install",
        "env_vars": {FAULTS_ENV: str(faults), "PYTHONPATH": path, **env_vars},
    }


def maybe_fail(faults: Path, key: str) -> None:
    """Raise :class:`InjectedFault` if ``faults`` lists trial ``key`` (``once``: first attempt only)."""
    if not faults.is_file():
        return
    mode = json.loads(faults.read_text()).get(key)
    marker = faults.with_name(f"{key}.failed")
    if mode == "always" or (mode == "once" and not marker.exists()):
        marker.touch()
        raise InjectedFault(f"injected failure in trial {key} ({mode})")


HOLD_GUARD_S = 600.0
"""A held trial fails after this long without a release (a fail-fast guard, never reached)."""


def maybe_hold(faults: Path, key: str) -> None:
    """``hold``: mark ``<key>.held`` beside ``faults``, then wait for ``release`` or ``<key>.release``.

    ``{"*": "hold"}`` holds every trial (a search sample's key is not known before it is drawn).
    """
    listed = json.loads(faults.read_text()) if faults.is_file() else {}
    if listed.get(key, listed.get("*")) != "hold":
        return
    faults.with_name(f"{key}.held").touch()
    deadline = time.monotonic() + HOLD_GUARD_S
    while not (faults.with_name("release").exists() or faults.with_name(f"{key}.release").exists()):
        if time.monotonic() > deadline:
            raise InjectedFault(f"trial {key} was held and never released")
        time.sleep(0.1)


@contextmanager
def disk_filling(faults: Path, key: str) -> Iterator[None]:
    """``enospc``: while the block runs, ``torch.save`` raises ``ENOSPC`` once ``<key>.full`` exists."""
    if not faults.is_file() or json.loads(faults.read_text()).get(key) != "enospc":
        yield
        return
    import torch

    real = torch.save

    def save(*args: Any, **kwargs: Any) -> Any:
        if faults.with_name(f"{key}.full").exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    torch.save = save
    try:
        yield
    finally:
        torch.save = real  # the worker process runs other trials next


def fill_disk(faults: Path, key: str) -> None:
    """``enospc``: the disk is full from now on for trial ``key`` (marks ``<key>.full``)."""
    if faults.is_file() and json.loads(faults.read_text()).get(key) == "enospc":
        faults.with_name(f"{key}.full").touch()


def install() -> None:
    """Ray's worker setup hook: wrap ``prometar.run.run`` in this worker process."""
    faults = os.environ.get(FAULTS_ENV)
    if not faults:
        return
    import prometar.run

    real = prometar.run.run

    @functools.wraps(real)
    def run(config: Any, *, output_dir: Path, callback: Any = None, **kwargs: Any) -> Any:
        key = Path(output_dir).name  # <output>/trials/<trial key>

        def on_event(event: dict[str, Any]) -> None:
            if callback is not None:
                callback(event)
            if event.get("event") == "epoch":
                maybe_hold(Path(faults), key)
                maybe_fail(Path(faults), key)
                fill_disk(Path(faults), key)

        with disk_filling(Path(faults), key):
            return real(config, output_dir=output_dir, callback=on_event, **kwargs)

    prometar.run.run = run
