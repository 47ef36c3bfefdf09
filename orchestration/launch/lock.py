"""The launch lock: one launch per (sweep, output folder) at a time.

A second launch of the same sweep into the same output folder would close the first one's RUNNING
runs as KILLED and run its trials twice; it is refused instead (``LaunchError``, exit 2), naming
the process holding the lock. The lock is an ``flock`` on an open file: the kernel drops it when
the holding process ends, however it ends, so a killed launch never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestration import layout
from orchestration.errors import LaunchError


@contextmanager
def launch_lock(output: Path, sweep: str, *, source: str = "") -> Iterator[None]:
    """Hold ``<output>/.launch-<sweep>.lock`` for the duration of a launch.

    Args:
        output: The launch's output folder (must exist).
        sweep: The sweep's name.
        source: The sweep file, for the error message.

    Raises:
        LaunchError: Another process holds the lock (the message names it: pid, host, since when).
    """
    path = layout.lock_file(output, sweep)
    handle = open(path, "a+")  # noqa: SIM115 (held open for the whole launch)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
                if holder
                else "another process"
            )
            raise LaunchError(
                f"{source or sweep}: sweep {sweep!r} is already being launched into {output} "
                f"({who}); wait for it to end or stop it (lock: {path})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                }
            )
        )
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock
