"""A search sweep's launch: one Optuna search per search group, resumed, then the best written.

Each group's samples are Tune trials searched by the group's own Optuna searcher (optionally with
ASHA early stopping on epoch rungs), seeded and fed the group's FINISHED samples first, so a
relaunch resumes the search instead of restarting it. All groups run in one Tuner
(``orchestration.launch.grouped_search``): their samples run side by side, bounded only by the
cluster's resources. A group with samples to run is claimed in the ledger first (by its
search-group key, ``TrialLedger.claim``), so two launches sharing a ledger never search the same
group at once; the claims are released when the search ends, also on failure or interruption.
Samples a live launch elsewhere is running count as taken: a group never gets more than
``num_samples``. The best sample of each group is reported
and, with ``--write-best``, written as a sweep file for the sweep's real protocol.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.search.optuna import OptunaSearch

from orchestration.environment import temporary_environment
from orchestration.launch.grouped_search import GroupedScheduler, GroupedSearch
from orchestration.launch.preflight import check_cluster
from orchestration.launch.progress import ProgressLine
from orchestration.launch.ray_session import ray_session
from orchestration.launch.signals import sigterm_as_interrupt
from orchestration.launch.trial_table import TrialTable
from orchestration.launch.tuner import parent_run, run_tuner, tune_config
from orchestration.sweeps.planning import SearchGroup, SweepPlan
from orchestration.sweeps.spec import SweepSpec, spec_to_yaml

if TYPE_CHECKING:
    from orchestration.launch.state import Launch


class FinalMetricOptunaSearch(OptunaSearch):
    """Optuna through Tune, fed only the results that carry the searched metric.

    A searched trial reports per-epoch training metrics (with its checkpoints) before its final
    ``val_*`` metrics; Tune's ``OptunaSearch`` would read the metric from every report.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric in result:
            super().on_trial_result(trial_id, result)


def launch_search(launch: Launch, busy_groups: Mapping[str, int]) -> None:
    """One Optuna search per group, resumed from the group's FINISHED samples; then the best.

    Args:
        launch: The launch in progress (a search sweep's plan).
        busy_groups: Search-group key → samples a live launch elsewhere is running; they count as
            taken, so the group never gets more than ``num_samples`` samples.
    """
    plan, report, out, options = launch.plan, launch.report, launch.out, launch.options
    search = plan.spec.search
    assert search is not None
    with ExitStack() as stack:
        stack.enter_context(temporary_environment(TUNE_DISABLE_STRICT_METRIC_CHECKING="1"))  # val_* come last
        pending: Pending = []
        for group in plan.groups:
            prior = [] if options.force else launch.ledger.finished_in_group(group.key)
            prior = [r for r in prior if search.metric in r.data.metrics]
            busy = busy_groups.get(group.key, 0)
            samples = search.num_samples - len(prior) - busy
            report.done_before += min(len(prior), search.num_samples)
            running = f", {busy} running in another live launch" if busy else ""
            if samples <= 0:
                print(f"[{plan.name}] {group.label}: search done ({len(prior)} samples{running})", file=out)
                continue
            report.to_run += samples
            points = [{k: _param_value(r.data.params[k]) for k in search.space} for r in prior]
            rewards = [r.data.metrics[search.metric] for r in prior]
            print(
                f"[{plan.name}] {group.label}: {samples} sample(s) to run, {len(prior)} done{running}",
                file=out,
            )
            pending.append((group, samples, points, rewards))
        pending = _claim_groups(launch, pending, stack)
        if pending:
            stack.enter_context(ray_session(options.address))
            stack.enter_context(sigterm_as_interrupt())  # after ray.init (Ray's handler aborts)
            check_cluster(
                plan,
                (g.dataset for g in plan.groups),
                joined=options.address is not None,
                gpu_check=options.gpu_check,
                stream=sys.stderr,
            )
            _search_groups(launch, pending)
    report.best = best_samples(plan, launch.ledger)
    for best in report.best:
        values = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items()
        )
        print(f"[{plan.name}] best {best['label']}: {search.metric}={best['value']:.2f}  {values}", file=out)
    if options.write_best and report.best:
        for written in write_best_sweeps(plan.spec, report.best, Path(options.write_best)):
            print(f"[{plan.name}] wrote {written}", file=out)


Pending = list[tuple[SearchGroup, int, list[dict[str, Any]], list[float]]]
"""Search groups with samples to run: (group, samples to run, prior points, their rewards)."""


def _claim_groups(launch: Launch, pending: Pending, stack: ExitStack) -> Pending:
    """Claim the pending groups in the ledger (``TrialLedger.claim``, by search-group key) for the
    search; the groups another live launch holds are not searched here. The claims are released
    when ``stack`` closes (also on failure or interruption)."""
    if not pending:
        return pending
    report, ledger = launch.report, launch.ledger
    claims = ledger.claim([group.key for group, *_ in pending], parent_run(launch))
    stack.enter_context(_releasing(ledger, claims.held))
    launch.say_claimed_elsewhere(claims.elsewhere, "search group(s)", "not searched here")
    report.to_run -= sum(samples for group, samples, *_ in pending if group.key not in claims.held)
    return [entry for entry in pending if entry[0].key in claims.held]


@contextmanager
def _releasing(ledger: Any, held: Mapping[str, str]) -> Iterator[None]:
    """Release this launch's claims when the block ends (a failure's own error is the one raised)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            ledger.release(held)
        raise
    ledger.release(held)


def _search_groups(launch: Launch, pending: Pending) -> None:
    """One Tuner for every group with samples to run: each group's own Optuna searcher, warm-started
    with its prior samples, and its own scheduler (``grouped_search``)."""
    from ray.tune.schedulers import FIFOScheduler

    spec = launch.plan.spec
    search = spec.search
    assert search is not None
    space = {k: _domain(kind, args) for k, (kind, args) in search.space.items()}
    searchers = {group.key: _searcher(spec, points, rewards, space) for group, _, points, rewards in pending}
    samples = {group.key: count for group, count, _, _ in pending}
    search_alg = GroupedSearch(searchers, samples, metric=search.metric, mode=search.mode)
    scheduler = (
        GroupedScheduler({group.key: _scheduler(spec, group) for group, *_ in pending})
        if search.scheduler == "asha"
        else FIFOScheduler()
    )
    total = search.num_samples * len(pending)
    progress = ProgressLine(launch.plan.name, total, total - sum(samples.values()), launch.out)
    config = tune_config(
        launch, search_alg=search_alg, scheduler=scheduler, num_samples=sum(samples.values())
    )
    # Tune keeps one trial of a custom searcher pending at a time; one per group lets every group
    # start at once
    pending_trials = os.environ.get("TUNE_MAX_PENDING_TRIALS_PG") or str(len(pending))
    with temporary_environment(TUNE_MAX_PENDING_TRIALS_PG=pending_trials):
        run_tuner(
            launch, TrialTable(groups={group.key: group for group, *_ in pending}), {}, config, progress
        )


def _domain(kind: str, args: list[Any]) -> Any:
    from ray import tune

    if kind == "uniform":
        return tune.uniform(args[0], args[1])
    if kind == "loguniform":
        return tune.loguniform(args[0], args[1])
    if kind == "randint":
        return tune.randint(int(args[0]), int(args[1]) + 1)  # the sweep's bounds are inclusive
    return tune.choice(list(args))


def _searcher(
    spec: SweepSpec, points: list[dict[str, Any]], rewards: list[float], space: dict[str, Any]
) -> Any:
    """One group's Optuna searcher over ``space`` (Tune domains), warm-started with its prior samples."""
    assert spec.search is not None
    optuna_space = OptunaSearch.convert_search_space(dict(space))  # Tune domains → Optuna distributions
    return FinalMetricOptunaSearch(
        space=optuna_space,
        metric=spec.search.metric,
        mode=spec.search.mode,
        seed=spec.search.seed,
        points_to_evaluate=points or None,
        evaluated_rewards=rewards or None,
    )


def _scheduler(spec: SweepSpec, group: SearchGroup) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    assert spec.search is not None
    if spec.search.scheduler != "asha":
        return FIFOScheduler()
    epochs = int(group.base_config["optim"]["epochs"])
    # stops trials on the searched metric at epoch rungs (needs it in the per-epoch reports)
    return ASHAScheduler(
        metric=spec.search.metric,
        mode=spec.search.mode,
        time_attr="training_iteration",
        grace_period=1,
        max_t=max(2, epochs + 1),
    )


def _param_value(text: str) -> Any:
    from prometar.yamlio import parse_yaml

    return parse_yaml(text)


def best_samples(plan: SweepPlan, ledger: Any) -> list[dict[str, Any]]:
    """The best FINISHED sample of each search group: group, label, dataset, shots, value, params."""
    search = plan.spec.search
    assert search is not None
    sign = 1 if search.mode == "max" else -1
    best = []
    for group in plan.groups:
        runs = [r for r in ledger.finished_in_group(group.key) if search.metric in r.data.metrics]
        if not runs:
            continue
        top = max(runs, key=lambda r: sign * r.data.metrics[search.metric])
        best.append(
            {
                "group": group.key,
                "label": group.label,
                "dataset": group.dataset,
                "shots": group.base.shots,
                "value": top.data.metrics[search.metric],
                "params": {k: _param_value(top.data.params[k]) for k in search.space},
            }
        )
    return best


def write_best_sweeps(spec: SweepSpec, best: list[dict[str, Any]], target: Path) -> list[Path]:
    """Write the best configuration as sweep file(s) for the real protocol.

    One search group: ``target`` itself. Several: ``<stem>.<dataset>-<shots>shots.yaml`` beside it,
    one per group (each best configuration applies to its own dataset and shots).
    """
    written = []
    for entry in best:
        sub = replace(
            spec, grid={**spec.grid, "data.dataset": [entry["dataset"]], "data.shots": [entry["shots"]]}
        )
        path = (
            target
            if len(best) == 1
            else target.with_name(f"{target.stem}.{entry['dataset']}-{entry['shots']}shots.yaml")
        )
        name = (
            f"{spec.name}_best"
            if len(best) == 1
            else f"{spec.name}_best_{entry['dataset']}_{entry['shots']}shots"
        )
        header = (
            f"# Best configuration of {spec.source} for {entry['label']}: "
            f"{spec.search.metric if spec.search else 'metric'}={entry['value']:.2f} "
            "(validation, base classes)\n"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            header + spec_to_yaml(sub, name=name, overrides={**spec.overrides, **entry["params"]})
        )
        written.append(path)
    return written
