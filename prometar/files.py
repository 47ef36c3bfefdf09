"""Writing files atomically: a temporary file in the same folder, flushed, then renamed over the target.

A reader never sees a half-written file, and a killed writer leaves the old one (or none) behind:
run artifacts, few-shot caches and text-teacher caches are written this way.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["write_atomic", "write_json_atomic"]


def write_atomic(path: Path, write: Callable[[IO[Any]], None], *, binary: bool = False) -> None:
    """Write ``path`` through ``write(handle)`` atomically; the folder is created if missing.

    Raises:
        OSError: The folder cannot be created or written (nothing is left behind).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(
    path: Path, payload: Any, *, indent: int | None = None, sort_keys: bool = False
) -> None:
    """Write ``payload`` as JSON to ``path`` atomically (a trailing newline when indented)."""

    def dump(handle: IO[str]) -> None:
        json.dump(payload, handle, indent=indent, sort_keys=sort_keys)
        if indent is not None:
            handle.write("\n")

    write_atomic(path, dump)
