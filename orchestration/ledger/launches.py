"""A sweep's launches as the ledger records them: each parent run, with the ``--set`` overrides it
planned the sweep with (:data:`~orchestration.ledger.vocabulary.OVERRIDES_TAG`, a JSON object).

The reading verbs (``status``, ``table``, ``plot``, ``report``) given a sweep file and no ``--set``
select the runs of the sweep's **latest** launch: they plan the sweep with the overrides that launch
recorded (:func:`latest_overrides`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestration.ledger.vocabulary import LAUNCH_ROLE, OVERRIDES_TAG, ROLE_TAG

MAX_TAG_CHARS = 5000
"""Longest tag value every MLflow store keeps: longer overrides are not recorded."""


def overrides_tag(overrides: Mapping[str, Any]) -> dict[str, str]:
    """The parent run's tag recording ``overrides`` (none when it would not fit in a tag)."""
    text = json.dumps(dict(overrides), sort_keys=True, default=str)
    return {OVERRIDES_TAG: text} if len(text) <= MAX_TAG_CHARS else {}


@dataclass(frozen=True)
class LaunchRecord:
    """One launch of a sweep.

    Attributes:
        run_id: Its parent run.
        start: Its start time (milliseconds since the epoch, MLflow's).
        overrides: The ``--set`` overrides it recorded; None when it recorded none (older launches).
    """

    run_id: str
    start: int
    overrides: dict[str, Any] | None

    def shown(self) -> str:
        """The overrides as a command line gives them (``--set k=v ...``), or what is known."""
        if self.overrides is None:
            return "(overrides not recorded)"
        if not self.overrides:
            return "no --set"
        return " ".join(
            f"--set {key}={value if isinstance(value, str) else json.dumps(value)}"
            for key, value in self.overrides.items()
        )


def launches(records: Iterable[Any]) -> list[LaunchRecord]:
    """The launches (parent runs) among an experiment's runs, oldest first."""
    found = []
    for run in records:
        tags = run.data.tags
        if tags.get(ROLE_TAG) != LAUNCH_ROLE:
            continue
        overrides: dict[str, Any] | None = None
        if OVERRIDES_TAG in tags:
            try:
                loaded = json.loads(tags[OVERRIDES_TAG])
            except ValueError:
                loaded = None
            overrides = loaded if isinstance(loaded, dict) else None
        found.append(LaunchRecord(run.info.run_id, run.info.start_time or 0, overrides))
    return sorted(found, key=lambda launch: launch.start)


def latest_overrides(records: Iterable[Any]) -> dict[str, Any] | None:
    """The overrides the latest launch planned with (None: no launch, or it recorded none)."""
    found = launches(records)
    return found[-1].overrides if found else None
