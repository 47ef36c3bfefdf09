"""The error family of bad user input (:class:`InputError`), and the core's other run failures.

Everything a user can get wrong — a run config, a dataset folder, a backbone name or checkpoint,
a checkpoint to resume from — raises a subclass of :class:`InputError` whose message names the
file, key or path. The command line maps the whole family to one message and exit code 2 in one
place (``orchestration.cli``); the application's own input errors (sweep files, launch options,
tracking stores, result files, clusters) subclass it too (``orchestration.errors``).

Every error here survives a pickle round trip with its message and attributes intact: an error
raised inside a Ray trial is pickled to reach the driver, and an exception whose ``__init__``
takes other arguments than its ``args`` would otherwise fail to unpickle and hide the real reason
behind a ``TypeError``. :class:`PicklableError` does that for any constructor signature.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackboneError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DiskFullError",
    "InputError",
    "NonFiniteLossError",
    "PicklableError",
]


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    """Recreate an exception from its ``args`` and attributes without calling its ``__init__``."""
    error = cls.__new__(cls, *args)
    BaseException.__init__(error, *args)
    error.__dict__.update(state)
    return error


class PicklableError(Exception):
    """Pickles by ``args`` and attributes, whatever the subclass's ``__init__`` takes."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class InputError(PicklableError, ValueError):
    """Bad user input; the message names the file, key or path (the CLI: one line, exit 2)."""


class ConfigError(InputError):
    """An invalid run configuration.

    Attributes:
        key: Dotted key of the offending value (``optim.lr``), or ``""`` for the whole config.
        source: Where the value came from: a file path, ``"<dict>"`` or ``"<overrides>"``.
        reason: Why it is invalid.
    """

    def __init__(self, key: str, reason: str, *, source: str = "<dict>") -> None:
        self.key = key
        self.source = source
        self.reason = reason
        where = f"{key}: " if key else ""
        super().__init__(f"{source}: {where}{reason}")


class InputFileError(InputError):
    """An input file that cannot be read: missing, not a regular file, too large or unreadable.

    Attributes:
        path: The file, as given.
        reason: Why it cannot be read.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class MissingInputFileError(InputFileError):
    """An input file that does not exist (a cache another process just removed is a plain miss)."""


class DataError(InputError):
    """Bad or missing dataset input; the message names the path (and the entry when there is one)."""


class BackboneError(InputError):
    """A backbone name, pretrained tag or checkpoint that cannot be used; the message names it."""


class CheckpointError(InputError):
    """A checkpoint that cannot be resumed from; the message names its path."""


class NonFiniteLossError(PicklableError, FloatingPointError):
    """A step returned a non-finite metric; the message names the epoch, step and metric.

    Not an input error: the run diverged (a trial ends FAILED with this message).
    """

    def __init__(self, epoch: int, step: int, name: str, value: float) -> None:
        self.epoch = epoch
        self.step = step
        super().__init__(f"non-finite {name} ({value}) at epoch {epoch}, step {step}")


class DiskFullError(PicklableError, RuntimeError):
    """A file could not be written because its disk (or quota) is full; the message names it.

    Not an input error: the run stops (a trial ends FAILED with this one line), and runs again once
    space is freed. Raised by :func:`prometar.files.writing` for ``ENOSPC`` and ``EDQUOT``.

    Attributes:
        path: The file (or folder) that could not be written.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"cannot write {path}: no space left on device")
