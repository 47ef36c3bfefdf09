"""Room a launch keeps for its records should the disk fill while its trials run.

A launch holds a small file of reserved blocks in its output folder (``layout.space_reserve``)
while it runs. When a write finds the disk full — a trial's checkpoint, the ledger's SQLite file,
an artifact — the launch deletes it, so that the ledger can still end the affected runs FAILED
with their reason and the launch can close its own run; the file is removed when the launch ends
either way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RESERVE_BYTES = 16 * 2**20
"""Room kept: enough for SQLite to end every run of a launch and for its last tags (16 MiB)."""


@dataclass(frozen=True)
class SpaceReserve:
    """The reserve file of one launch (plain data: Tune pickles the callback holding it)."""

    path: Path

    def hold(self, size: int = RESERVE_BYTES) -> None:
        """Reserve ``size`` bytes of disk in :attr:`path` (none when the disk is full already)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError:
            return
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:  # no room even for the reserve (or no fallocate here): keep none
            os.close(fd)
            self.release()
            return
        os.close(fd)

    def release(self) -> bool:
        """Give the reserved room back to the disk; True when there was some to give."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        except OSError:
            return False
        return True


@contextmanager
def space_reserve(path: Path) -> Iterator[SpaceReserve]:
    """Hold a :class:`SpaceReserve` at ``path`` for the block; it is removed when the block ends."""
    reserve = SpaceReserve(path)
    reserve.hold()
    try:
        yield reserve
    finally:
        with contextlib.suppress(OSError):
            reserve.release()
