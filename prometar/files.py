"""Reading input files with limits, and writing files atomically.

:func:`read_input_bytes` reads what a user points the tools at (presets, sweep files, split files,
runs CSVs): a regular file only (a FIFO, a device such as ``/dev/zero`` or a folder is refused
without blocking) and at most a given size, checked before reading and while reading.

:func:`write_atomic` writes through a temporary file in the same folder, flushed, then renamed over
the target: a reader never sees a half-written file, and a killed writer leaves the old one (or
none) behind. Run artifacts, few-shot caches and text-teacher caches are written this way.

:func:`writing` turns a full disk (``ENOSPC``, ``EDQUOT``) while a file is written into one
:class:`~prometar.errors.DiskFullError` naming the file (a failed ``write`` names none itself);
:func:`is_disk_full` recognises one in an exception's chain, :func:`out_of_space` a disk with no room left.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from prometar.errors import DiskFullError, InputFileError, MissingInputFileError

__all__ = [
    "MAX_DATA_FILE_BYTES",
    "MAX_TEXT_FILE_BYTES",
    "disk_full_path",
    "is_disk_full",
    "out_of_space",
    "read_input_bytes",
    "writing",
    "write_atomic",
    "write_json_atomic",
]

MAX_TEXT_FILE_BYTES = 16 * 2**20
"""Largest YAML file read (a preset, a run config, a sweep file): 16 MiB."""

MAX_DATA_FILE_BYTES = 1024 * 2**20
"""Largest data file read (a split file, a class list, a runs CSV, a few-shot cache): 1 GiB."""


def _size_text(size: int) -> str:
    return f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size} bytes"


def read_input_bytes(path: str | os.PathLike, *, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    The file is opened without blocking (a FIFO with no writer is refused, not waited on), must be
    a regular file, and must not grow past ``max_bytes`` while it is read.

    Raises:
        InputFileError: Missing (:class:`MissingInputFileError`), a folder, not a regular file
            (FIFO, device, socket), larger than ``max_bytes`` or unreadable; the message names the
            path and, for size, the limit.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise MissingInputFileError(name, "no such file") from None
    except IsADirectoryError:
        raise InputFileError(name, "is a folder, not a file") from None
    except OSError as error:
        raise InputFileError(name, f"cannot be read ({error.strerror or error})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputFileError(name, "is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(name, "is not a regular file (a FIFO, device or socket); give a file")
        too_large = f"is larger than the limit of {_size_text(max_bytes)}"
        if info.st_size > max_bytes:
            raise InputFileError(name, f"{too_large} ({_size_text(info.st_size)})")
        os.set_blocking(fd, True)
        chunks, total = [], 0
        while chunk := os.read(fd, min(2**20, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise InputFileError(name, too_large)
        return b"".join(chunks)
    except OSError as error:
        raise InputFileError(name, f"cannot be read ({error.strerror or error})") from None
    finally:
        os.close(fd)


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""The errors of a write that found no space: the disk is full, or the user's quota is."""
SQLITE_FULL = 13
"""SQLite's result code for a write that found the disk full (``sqlite3.Error.sqlite_errorcode``)."""


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` or an exception it was raised from (or during) is a full disk: a
    :class:`DiskFullError`, an ``OSError`` with ``ENOSPC``/``EDQUOT``, or SQLite's ``SQLITE_FULL``."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError):
            return True
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        if getattr(error, "sqlite_errorcode", None) == SQLITE_FULL:
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_path(error: BaseException | None) -> str | None:
    """The file a full disk kept ``error`` (or an exception in its chain) from writing, if named."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError):
            return error.path
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS and error.filename:
            return str(error.filename)
        error = error.__cause__ or error.__context__
    return None


LOW_SPACE_BYTES = 2**20
"""Free space under which a disk counts as full (:func:`out_of_space`): 1 MiB."""


def out_of_space(path: str | os.PathLike) -> bool:
    """Whether the disk holding ``path`` (or its nearest existing folder) has less than
    :data:`LOW_SPACE_BYTES` free for this user: how to tell a full disk when the file that would
    say so could not be written."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < LOW_SPACE_BYTES


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """A full disk while the block writes ``path`` raises :class:`DiskFullError` naming ``path``.

    Other errors pass unchanged.
    """
    try:
        yield
    except OSError as error:
        if error.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(str(path)) from error
        raise


def write_atomic(path: Path, write: Callable[[IO[Any]], None], *, binary: bool = False) -> None:
    """Write ``path`` through ``write(handle)`` atomically; the folder is created if missing.

    Raises:
        OSError: The folder cannot be created or written (nothing is left behind).
        DiskFullError: The disk is full (nothing is left behind; the message names ``path``).
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            text = {} if binary else {"encoding": "utf-8"}
            with os.fdopen(fd, "wb" if binary else "w", **text) as handle:
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
