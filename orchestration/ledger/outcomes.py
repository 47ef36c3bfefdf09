"""Where each trial key stands in the ledger: the one place outcomes are counted.

A trial key's *outcome* is decided by its runs, in one rule that ``status``, the launch and the
report all read:

- ``FINISHED`` when any of its runs FINISHED (the latest FINISHED run is its result);
- otherwise the status of its **latest** run (by start time): ``RUNNING`` (or ``SCHEDULED``,
  counted as running), ``FAILED`` or ``KILLED``. A newer FAILED run therefore outranks an older
  run still marked RUNNING: the trial was tried again and failed.

:func:`trial_outcomes` maps keys to outcomes; :func:`count_outcomes` counts them over the keys a
sweep plans.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestration.ledger.vocabulary import ACTIVE, FAILED, FINISHED, KILLED, RUNNING, TRIAL_KEY_TAG


@dataclass(frozen=True)
class Outcome:
    """One trial key's standing.

    Attributes:
        status: ``FINISHED``, ``RUNNING``, ``FAILED`` or ``KILLED`` (SCHEDULED reads as RUNNING).
        run: The deciding run: its latest FINISHED run, else its latest run.
    """

    status: str
    run: Any


@dataclass(frozen=True)
class OutcomeCounts:
    """How many of the planned keys stand where (keys without a run are in none of these)."""

    finished: int = 0
    running: int = 0
    failed: int = 0
    killed: int = 0


def _start(run: Any) -> int:
    return run.info.start_time or 0


def trial_outcomes(runs: Iterable[Any], *, key_tag: str = TRIAL_KEY_TAG) -> dict[str, Outcome]:
    """Trial key → its :class:`Outcome`, from a snapshot of the ledger's runs (module docstring).

    ``key_tag``: the tag naming a run's key (runs without it — the launches' parent runs — are
    skipped).
    """
    by_key: dict[str, list[Any]] = {}
    for run in runs:
        key = run.data.tags.get(key_tag)
        if key:
            by_key.setdefault(key, []).append(run)
    outcomes: dict[str, Outcome] = {}
    for key, key_runs in by_key.items():
        finished = [r for r in key_runs if r.info.status == FINISHED]
        if finished:
            outcomes[key] = Outcome(FINISHED, max(finished, key=_start))
            continue
        latest = max(key_runs, key=_start)
        status = RUNNING if latest.info.status in ACTIVE else latest.info.status
        outcomes[key] = Outcome(status if status in (RUNNING, FAILED, KILLED) else FAILED, latest)
    return outcomes


def count_outcomes(outcomes: Mapping[str, Outcome], keys: Iterable[str] | None = None) -> OutcomeCounts:
    """Count the outcomes of ``keys`` (default: every key in ``outcomes``)."""
    wanted = outcomes.keys() if keys is None else keys
    tally = {FINISHED: 0, RUNNING: 0, FAILED: 0, KILLED: 0}
    for key in wanted:
        found = outcomes.get(key)
        if found is not None:
            tally[found.status] += 1
    return OutcomeCounts(tally[FINISHED], tally[RUNNING], tally[FAILED], tally[KILLED])
