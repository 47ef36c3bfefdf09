"""A launch's state: how it was asked for (:class:`LaunchOptions`), what it did so far
(:class:`LaunchReport`), and the launch in progress (:class:`Launch`) that the runner, the grid's
Tune run (``tuner``) and the searches (``search``) share. Its own module, imported by all three, so
none of them imports another for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from orchestration.launch.reserve import SpaceReserve
from orchestration.launch.signals import INTERRUPTED_EXIT
from orchestration.layout import DEFAULT_DATA_ROOT, DEFAULT_OUTPUT
from orchestration.ledger.store import TrialLedger
from orchestration.sweeps.planning import SweepPlan


@dataclass(frozen=True)
class LaunchOptions:
    """How to launch a sweep (the ``launch`` verb's options)."""

    data_root: Path = DEFAULT_DATA_ROOT
    output: Path = DEFAULT_OUTPUT
    storage: str | None = None
    """Ray storage: a folder or a URI (``s3://...``); ``None``: ``<output>/ray``."""
    address: str | None = None
    tracking_uri: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    force: bool = False
    max_concurrent: int | None = None
    write_best: Path | None = None
    tables: bool = True
    report: bool = True
    gpu_check: bool = True
    """Check before any trial that torch can use the GPUs the sweep asks for (``--no-gpu-check``)."""


@dataclass
class LaunchReport:
    """What a launch did; ``exit_code`` is 0 when every trial it ran FINISHED, 1 when a trial
    failed or was killed, a transfer trial waits for a source model that did not finish
    (``blocked``) or its tables and report could not be written (``results_error``), 130 when the
    launch was interrupted (Ctrl-C, SIGTERM) before its trials ended (``interrupted`` counts those
    never ended or never started).

    ``plan`` is the sweep as the launch planned it (callers read the planned runs from it).
    """

    sweep: str
    total: int
    done_before: int
    to_run: int
    finished: int = 0
    failed: int = 0
    killed: int = 0
    interrupted: int = 0
    blocked: int = 0
    """Transfer trials not run because their source model did not finish."""
    parent_run_id: str | None = None
    best: list[dict[str, Any]] = field(default_factory=list)
    plan: SweepPlan | None = field(default=None, repr=False, compare=False)
    results_error: str = ""
    checks_failed: int = 0
    """A dry run: the ``doctor`` checks that failed."""
    disk_full: int = 0
    """Trials that failed because a disk was full (counted in ``failed`` too)."""
    unrecorded: int = 0
    """Ledger writes a full disk prevented (a relaunch closes the runs they left RUNNING)."""

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return INTERRUPTED_EXIT
        failures = self.failed or self.killed or self.blocked or self.disk_full or self.unrecorded
        return 1 if failures or self.results_error or self.checks_failed else 0


@dataclass
class Launch:
    """One launch in progress: the plan, the ledger, the report, where it writes, how, and to whom.

    Attributes:
        plan: The sweep, planned once.
        ledger: The sweep's ledger store.
        report: What the launch did so far.
        output: The output folder (absolute).
        options: The launch's options.
        out: Where progress and summaries go.
        reserve: The room kept for the launch's records should the disk fill (``reserve``).
    """

    plan: SweepPlan
    ledger: TrialLedger
    report: LaunchReport
    output: Path
    options: LaunchOptions
    out: IO[str]
    reserve: SpaceReserve | None = None

    def say_claimed_elsewhere(self, elsewhere: Mapping[str, str], what: str, left: str) -> None:
        """One line naming the live launches that hold ``elsewhere`` (key → holder), if any:
        ``[sweep] N <what> are claimed by another live launch (<holders>); <left>``."""
        if elsewhere:
            holders = ", ".join(sorted(set(elsewhere.values())))
            print(
                f"[{self.plan.name}] {len(elsewhere)} {what} are claimed by another live launch "
                f"({holders}); {left}",
                file=self.out,
            )
