"""The application's input errors: each subclasses :class:`prometar.errors.InputError`.

Bad sweep files, launch options, tracking stores, result files and cluster requests are user
input like a bad run config; the command line maps the whole family to one message and exit code
2 in one place (``orchestration.cli``). Like every error of the family they pickle with their
message and attributes intact. :class:`LaunchStoppedError` is the failure that is not input: a tracking
store lost during a launch (:class:`TrackingLostError`), a disk that filled
(:class:`DiskFullLaunchError`): one line, exit 1.
"""

from __future__ import annotations

from prometar.errors import InputError, PicklableError

__all__ = [
    "ClusterError",
    "DiskFullLaunchError",
    "InputError",
    "LaunchError",
    "LaunchStoppedError",
    "ResultsError",
    "SpecError",
    "StorageError",
    "TrackingError",
    "TrackingLostError",
]


class SpecError(InputError):
    """A bad sweep file; the message names the file and the key.

    Attributes:
        source: The sweep file (or ``<dict>``).
        key: The offending key, dotted (``grid.dataset``), or ``""`` for the whole file.
    """

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)


class LaunchError(InputError):
    """Bad launch input other than the sweep file (data root, overrides); names the path or key."""


class TrackingError(InputError, RuntimeError):
    """The tracking store cannot be used (unreachable server, bad URI); names the URI."""


class StorageError(InputError):
    """A Ray storage location that cannot be used (malformed or unsupported URI, nothing there); names it."""


class ResultsError(InputError):
    """Bad input to the results layer; the message names the file, experiment or key."""


class ClusterError(InputError, RuntimeError):
    """The cluster cannot take the request (bad address, refused token, duplicate submission,
    sweep outside the shipped folder); the message names the address, option or file."""


class LaunchStoppedError(PicklableError, RuntimeError):
    """A launch that could not go on, not for bad input (the CLI: one line, exit 1). What the
    ledger holds stays; a relaunch continues the sweep."""


class TrackingLostError(LaunchStoppedError):
    """The tracking store stopped answering while a launch ran."""


class DiskFullLaunchError(LaunchStoppedError):
    """The disk filled while a launch ran and the launch itself could not go on; the message names
    the output folder."""
