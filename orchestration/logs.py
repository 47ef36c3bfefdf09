"""Where the core's log records and a trial's console output go.

The core never prints: it logs through ``logging.getLogger(__name__)``. The application decides
where that goes: :func:`records_to` shows one logger's records on a stream for a while (the toy
build's progress on the console); :func:`trial_log` writes a trial's stdout, stderr and every log
record to its ``trial.log`` (appended: a retried trial's attempts follow one another), which the
trainable ships with its checkpoints and the ledger keeps as an artifact; :func:`quoting_log_tail`
makes an exception leaving a trial quote the log's last lines (:func:`split_error` separates them);
:func:`quiet` silences loggers whose tracebacks say what the caller reports in one line.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TAIL_LINES = 20
"""Lines of a trial's log quoted in its error when it fails."""
TAIL_HEADER = "--- the last lines of trial.log ---"
"""Opens the quoted lines in a failed trial's error text (what precedes it is the error itself)."""
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OUR_LOGGERS = ("prometar", "orchestration")
"""The loggers whose INFO records a trial's log keeps (other libraries': their warnings)."""


@contextmanager
def records_to(stream: IO[str], name: str, level: int = logging.INFO) -> Iterator[None]:
    """Show the records of logger ``name`` (and its children) at ``level`` and above on ``stream``."""
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(level)
    saved = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


class _Tee:
    """A text stream writing to a file and to the stream it replaces; a file that cannot be
    written any more (a full disk) is left alone, and the stream goes on."""

    def __init__(self, file: IO[str], original: IO[str]) -> None:
        self.file: IO[str] | None = file
        self.original = original

    def write(self, text: str) -> int:
        if self.file is not None:
            try:
                self.file.write(text)
                self.file.flush()
            except (OSError, ValueError):  # full, or closed: the log loses the rest, not the trial
                self.file = None
        return self.original.write(text)

    def flush(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError, ValueError):
                self.file.flush()
        self.original.flush()


class _LogFileHandler(logging.StreamHandler):
    """Log records to a trial's log file; a record that cannot be written (a full disk) is dropped
    without the traceback ``logging`` would print for it."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


@contextmanager
def trial_log(path: Path, level: int = logging.INFO) -> Iterator[Path]:
    """Write this process's stdout, stderr and log records to ``path`` too: the core's and the
    application's from ``level`` up, other libraries' as their loggers let through. A log that
    cannot be written any more (a full disk) loses its last lines, never the block's own error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    file = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 (closed quietly below)
    handler = _LogFileHandler(file)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(level)
    root = logging.getLogger()
    ours = [logging.getLogger(name) for name in OUR_LOGGERS]
    saved = [logger.level for logger in ours]
    root.addHandler(handler)
    for logger in ours:
        if logger.getEffectiveLevel() > level:
            logger.setLevel(level)
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(file, out), _Tee(file, err)
    try:
        yield path
    finally:
        sys.stdout, sys.stderr = out, err
        root.removeHandler(handler)
        for logger, old in zip(ours, saved, strict=True):
            logger.setLevel(old)
        with contextlib.suppress(OSError, ValueError):
            file.close()


@contextmanager
def quoting_log_tail(path: Path, lines: int = TAIL_LINES) -> Iterator[None]:
    """An exception leaving the block carries the last ``lines`` lines of ``path`` as a note (after
    :data:`TAIL_HEADER`), so the error Ray records for the trial quotes them."""
    try:
        yield
    except BaseException as error:
        quoted = tail(path, lines)
        if quoted:
            error.add_note(f"{TAIL_HEADER}\n{quoted}")
        raise


@contextmanager
def quiet(*names: str) -> Iterator[None]:
    """Silence the loggers ``names`` (below CRITICAL) for the block: their records say, with a
    traceback, what the caller reports itself in one line."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def split_error(text: str) -> tuple[str, str]:
    """A trial's error text → (the error, the quoted log lines; empty without them)."""
    error, _, quoted = text.partition(TAIL_HEADER)
    return error.rstrip(), quoted.strip("\n")


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file (empty if it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


__all__ = [
    "TAIL_HEADER",
    "TAIL_LINES",
    "quiet",
    "quoting_log_tail",
    "records_to",
    "split_error",
    "tail",
    "trial_log",
]
