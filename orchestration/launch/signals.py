"""Stopping a launch: SIGTERM (a scheduler, ``kill``, a pod's termination) acts like Ctrl-C.

Ray Tune stops an experiment gracefully on SIGINT: its controller ends the trials, saves their
state, and the tracker closes the runs that did not end as KILLED. SIGTERM's default action ends
the process without any of that: Ray aborts, the parent run ends FAILED and child runs are left
RUNNING until the next launch closes them. :func:`sigterm_as_interrupt` makes SIGTERM deliver
SIGINT to the launch itself, so both take the same path. A second signal stops it at once, as a
second Ctrl-C does.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["INTERRUPTED_EXIT", "sigterm_as_interrupt"]

INTERRUPTED_EXIT = 130
"""Exit code of an interrupted launch (128 + SIGINT, the shell's convention)."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM interrupts the launch as SIGINT does (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
