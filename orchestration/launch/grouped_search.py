"""Several search groups in one Tuner: one searcher (and one early-stopping scheduler) per group.

A search sweep has one Optuna search per (dataset, shots, seed, ...) group. Run one Tuner after
another, a cluster waits for each group's slowest sample before the next group starts; in one
Tuner the groups' samples run side by side, bounded only by the cluster's resources (and
``--max-concurrent``). :class:`GroupedSearch` asks the groups' own searchers in turn for samples
(each until its group has its samples) and routes every result back to the searcher of the
sample's group; :class:`GroupedScheduler` does the same for the groups' ASHA schedulers, so early
stopping compares a sample only with samples of its own group.

A sample's Tune config is ``{"group": <group key>, <dotted key>: value, ...}``, as for one group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from orchestration.launch.trial_table import GROUP_KEY


class GroupedSearch(Searcher):
    """Round-robin over the groups' searchers, each until its group has ``samples[group]`` samples.

    Args:
        searchers: Group key → that group's searcher (its own space, warm start and seed).
        samples: Group key → how many new samples the group gets.
        metric: The searched metric.
        mode: ``min`` or ``max``.
    """

    def __init__(
        self, searchers: Mapping[str, Searcher], samples: Mapping[str, int], *, metric: str, mode: str
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.searchers = dict(searchers)
        self.left = {key: int(samples[key]) for key in self.searchers}
        self.owner: dict[str, str] = {}  # Tune trial id -> group key
        self._turn = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # every group's searcher has its space, metric and mode already

    def suggest(self, trial_id: str) -> dict | str | None:
        keys = list(self.searchers)
        for _ in keys:
            key = keys[self._turn % len(keys)]
            self._turn += 1
            if self.left[key] <= 0:
                continue
            config = self.searchers[key].suggest(trial_id)
            if config == Searcher.FINISHED:
                self.left[key] = 0
                continue
            if config is None:  # this group cannot suggest now; ask the next
                continue
            self.left[key] -= 1
            self.owner[trial_id] = key
            return {GROUP_KEY: key, **config}
        return Searcher.FINISHED if all(left <= 0 for left in self.left.values()) else None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.owner:
            self.searchers[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.owner:
            self.searchers[self.owner.pop(trial_id)].on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: a later launch resumes each group's search from the ledger, not from Tune."""


class GroupedScheduler(TrialScheduler):
    """Each sample's scheduling decisions come from its own group's scheduler.

    Args:
        schedulers: Group key → that group's scheduler (ASHA on the group's epochs).
    """

    def __init__(self, schedulers: Mapping[str, TrialScheduler]) -> None:
        self.schedulers = dict(schedulers)

    def _of(self, trial: Any) -> TrialScheduler:
        return self.schedulers[trial.config[GROUP_KEY]]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return all(s.set_search_properties(metric, mode, **spec) for s in self.schedulers.values())

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        for scheduler in self.schedulers.values():
            trial = scheduler.choose_trial_to_run(tune_controller)
            if trial is not None:
                return trial
        return None

    def debug_string(self) -> str:
        return "; ".join(f"{key[:6]}: {s.debug_string()}" for key, s in self.schedulers.items())
