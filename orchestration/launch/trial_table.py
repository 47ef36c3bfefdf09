"""The trial table: how a Tune trial's config maps onto the sweep's trials.

A grid trial's Tune config is ``{"trial_key": key}``; a searched trial's is ``{"group": key,
<dotted key>: sampled value, ...}``, resolved by its search group (``SearchGroup.resolve``, the
one place a searched trial is resolved). The table travels to the trainable with the trials, so a
worker never re-plans the sweep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestration.sweeps.planning import SearchGroup, Trial

GRID_KEY = "trial_key"
"""The Tune config key of a grid trial (its trial key)."""
GROUP_KEY = "group"
"""The Tune config key of a searched trial (its search group's key)."""


@dataclass(frozen=True)
class SourceModel:
    """The trained source model a transfer trial evaluates: a FINISHED run in the ledger.

    Attributes:
        run_id: Its MLflow run (artifact ``prompts.pt``).
        tracking_uri: The store holding the run.
        metrics: Its final metrics (``acc/<source>``: the transfer tables' source column).
    """

    run_id: str
    tracking_uri: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialTable:
    """Grid trials by key, search groups by key.

    ``resume``: trial key → URI of the checkpoint an earlier launch registered for it (its MLflow
    run's ``prometar.checkpoint`` tag), resumed from when Tune has none of its own.
    ``sources``: transfer trial key → the source model whose prompts it evaluates.
    """

    trials: dict[str, Trial] = field(default_factory=dict)
    groups: dict[str, SearchGroup] = field(default_factory=dict)
    resume: dict[str, str] = field(default_factory=dict)
    sources: dict[str, SourceModel] = field(default_factory=dict)

    def resolve(self, config: Mapping[str, Any]) -> Trial:
        """The trial a Tune config stands for."""
        if GRID_KEY in config:
            return self.trials[config[GRID_KEY]]
        group = self.groups[config[GROUP_KEY]]
        return group.resolve({k: v for k, v in config.items() if k != GROUP_KEY})

    def dataset(self, config: Mapping[str, Any]) -> str:
        """The dataset of the trial a Tune config stands for (without resolving a searched trial)."""
        if GRID_KEY in config:
            return self.trials[config[GRID_KEY]].dataset
        return self.groups[config[GROUP_KEY]].dataset


def trial_name(trial: Any) -> str:
    """Tune's short name of a trial: ``t_<key>`` or ``s_<group>_<id>`` (its folder: ``<name>-<launch>``)."""
    config = trial.config
    if GRID_KEY in config:
        return f"t_{config[GRID_KEY]}"
    return f"s_{config.get(GROUP_KEY, 'x')[:6]}_{trial.trial_id[-5:]}"
