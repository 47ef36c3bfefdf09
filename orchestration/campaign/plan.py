"""A campaign planned once: each sweep's plan and ledger status, the cost per table, what is missing.

:func:`plan_campaign` plans every sweep of the chosen tables once (a sweep two tables share is
planned, counted and costed once, under the first), reads done / to do from the ledger of the
output folder (reading only: an absent store means nothing ran), and estimates the cost of the
trials to do from measured epoch times (``orchestration.campaign.calibration``): epochs × seconds
per epoch × the trial's GPU share. Zero-shot trials train no epoch (their evaluation is not
counted). A table with a trial no measurement covers has an *unknown* cost: never a guess.

:func:`missing_inputs` lists what a launch on this machine would lack (data folders, weights),
each named once, without starting anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestration.campaign.calibration import Calibration, ledger_epoch_times, read_benchmark_csv
from orchestration.campaign.spec import Campaign, CampaignTable
from orchestration.launch.status import SweepStatus, ledger_status
from orchestration.ledger.store import TrialLedger
from orchestration.sweeps.planning import SweepPlan, Trial, load_plan
from prometar.errors import InputError


@dataclass(frozen=True, kw_only=True)
class Cost:
    """The cost of a set of trials to do.

    Attributes:
        gpu_hours: Known GPU-hours (trial time × GPU share), summed over the costed trials.
        trial_hours: Known trial wall-hours (on whatever device the trials ask for).
        unknown: Trials to do that train and have no measured epoch time.
        bases: Where the epoch times came from (``ledger``, a benchmark file's source).
    """

    gpu_hours: float = 0.0
    trial_hours: float = 0.0
    unknown: int = 0
    bases: tuple[str, ...] = ()

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            gpu_hours=self.gpu_hours + other.gpu_hours,
            trial_hours=self.trial_hours + other.trial_hours,
            unknown=self.unknown + other.unknown,
            bases=tuple(dict.fromkeys((*self.bases, *other.bases))),
        )

    def text(self) -> str:
        """``12.5 GPU-h (basis: ledger)``, or ``unknown (3 trials without a measured epoch time)``."""
        if self.unknown:
            return f"unknown ({self.unknown} trial(s) without a measured epoch time)"
        if not self.bases:
            return "0 GPU-h (nothing to train)"
        return f"{self.gpu_hours:.1f} GPU-h (basis: {'; '.join(self.bases)})"


@dataclass(frozen=True, kw_only=True)
class SweepState:
    """One sweep of the campaign: its plan, its ledger status, and the cost of what it has to do."""

    name: str
    path: Path
    plan: SweepPlan
    status: SweepStatus
    cost: Cost


@dataclass(frozen=True, kw_only=True)
class TablePlan:
    """One table: its sweeps (those it owns; shared ones are listed under their first table)."""

    table: CampaignTable
    sweeps: tuple[SweepState, ...]
    shared: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(s.status.total for s in self.sweeps)

    @property
    def done(self) -> int:
        return sum(s.status.done for s in self.sweeps)

    @property
    def cost(self) -> Cost:
        total = Cost()
        for sweep in self.sweeps:
            total = total + sweep.cost
        return total


@dataclass(frozen=True)
class CampaignPlan:
    """The campaign as planned for one output folder."""

    campaign: Campaign
    tables: tuple[TablePlan, ...]
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sweeps(self) -> tuple[SweepState, ...]:
        """Every sweep of the chosen tables, once, in launch order."""
        return tuple(s for t in self.tables for s in t.sweeps)

    def sweep(self, name: str) -> SweepState:
        """The state of a sweep the chosen tables name."""
        return next(s for s in self.sweeps if s.name == name)

    @property
    def cost(self) -> Cost:
        total = Cost()
        for table in self.tables:
            total = total + table.cost
        return total

    def lines(self) -> list[str]:
        """The dry run's plan: per table trials, done / to do and cost; then the total."""
        lines = [f"campaign {self.campaign.name}: {len(self.tables)} table(s)"]
        for table in self.tables:
            lines.append(
                f"  {table.table.name} ({table.table.kind}): trials {table.total} · done {table.done} · "
                f"to do {table.total - table.done} · cost {table.cost.text()}"
            )
            for sweep in table.sweeps:
                lines.append(f"    {sweep.status.line()} [{sweep.path.name}]")
            if table.shared:
                lines.append(f"    also reads: {', '.join(table.shared)} (counted under an earlier table)")
        total = sum(t.total for t in self.tables)
        done = sum(t.done for t in self.tables)
        lines.append(f"total: trials {total} · done {done} · to do {total - done} · cost {self.cost.text()}")
        return lines


def load_calibration(ledger_runs: Sequence[Any], benchmark: Path | None) -> Calibration:
    """Measured epoch times: the ledger's runs of the campaign's sweeps, then a benchmark CSV."""
    return Calibration(
        ledger=ledger_epoch_times(ledger_runs),
        benchmark=read_benchmark_csv(benchmark) if benchmark else {},
        benchmark_file=str(benchmark or ""),
    )


def trial_cost(trial: Trial, plan: SweepPlan, calibration: Calibration) -> Cost:
    """Epochs × measured seconds per epoch × GPU share of one trial to do (unknown without a figure)."""
    config = trial.config
    from prometar.methods import get_method

    if not get_method(trial.method).trains:
        return Cost()
    found = calibration.lookup(trial.method, trial.dataset, str(config["backbone"]["name"]))
    if found is None:
        return Cost(unknown=1)
    hours = int(config["optim"]["epochs"]) * found.seconds / 3600.0
    gpu = plan.spec.resources_for(trial.dataset).gpu
    return Cost(gpu_hours=hours * gpu, trial_hours=hours, bases=(found.basis,))


def plan_campaign(
    campaign: Campaign,
    *,
    output: Path,
    tracking_uri: str | None = None,
    only: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    calibration_file: Path | None = None,
) -> CampaignPlan:
    """Plan the chosen tables' sweeps once and read their state from the output's ledger (reads only).

    Raises:
        InputError: A bad sweep file (``SpecError`` naming it), an unreadable calibration file, an
            unknown table in ``only``.
    """
    tables = campaign.select(only)
    overrides = dict(overrides or {})
    plans = {
        name: load_plan(campaign.sweep_path(name), overrides=overrides or None)
        for name in campaign.sweeps(tables)
    }
    exists = TrialLedger.exists(output, tracking_uri)
    ledgers: dict[str, TrialLedger] = {}
    runs: list[Any] = []
    if exists:
        for plan in plans.values():
            if plan.name not in ledgers:
                ledger = TrialLedger.for_output(plan.name, output, tracking_uri)
                ledger.check_reachable()
                ledgers[plan.name] = ledger
                runs.extend(ledger.runs())
    calibration = load_calibration(runs, calibration_file)
    owned: set[str] = set()
    table_plans: list[TablePlan] = []
    for table in tables:
        states: list[SweepState] = []
        shared: list[str] = []
        for name in table.sweeps:
            if name in owned:
                shared.append(name)
                continue
            owned.add(name)
            plan = plans[name]
            if exists:
                status = ledger_status(plan, ledgers[plan.name])
            else:
                status = SweepStatus(plan.name, plan.total, 0, 0, 0, plan.total)
            states.append(
                SweepState(
                    name=name,
                    path=campaign.sweep_path(name),
                    plan=plan,
                    status=status,
                    cost=_todo_cost(plan, ledgers.get(plan.name), calibration),
                )
            )
        table_plans.append(TablePlan(table=table, sweeps=tuple(states), shared=tuple(shared)))
    return CampaignPlan(campaign, tuple(table_plans), overrides)


def _todo_cost(plan: SweepPlan, ledger: TrialLedger | None, calibration: Calibration) -> Cost:
    """The cost of a sweep's trials not FINISHED (a search sweep: every planned sample not yet run)."""
    from orchestration.ledger.vocabulary import FINISHED

    statuses = ledger.statuses() if ledger is not None else {}
    cost = Cost()
    if plan.groups:
        search = plan.spec.search
        samples = search.num_samples if search else 1
        done = {g.key: len(ledger.finished_in_group(g.key)) if ledger else 0 for g in plan.groups}
        for group in plan.groups:
            for _ in range(max(0, samples - done[group.key])):
                cost = cost + trial_cost(group.base, plan, calibration)
        return cost
    for trial in plan.trials:
        if FINISHED not in statuses.get(trial.key, set()):
            cost = cost + trial_cost(trial, plan, calibration)
    return cost


def missing_inputs(plan: CampaignPlan, data_root: Path, *, weights: bool = True) -> list[str]:
    """What a local launch of the campaign would lack: each missing data folder and unusable input once.

    Nothing is started: the data folders are looked up in the catalog's layout, and the trials'
    inputs go through the launch's own preflight (``orchestration.launch.preflight.check_inputs``).
    """
    from orchestration.launch.preflight import check_inputs
    from prometar.data.catalog import get_dataset

    missing: list[str] = []
    root = Path(data_root)
    if not root.is_dir():
        missing.append(f"data root {root} does not exist (--data-root)")
    else:
        needed = sorted(
            {d for s in plan.sweeps for d in {t.dataset for t in s.plan.trials} | set(s.plan.targets)}
        )
        for key in needed:
            folder = root / get_dataset(key).folder
            if not folder.is_dir():
                missing.append(f"dataset {key!r}: {folder} does not exist")
    for sweep in plan.sweeps:
        try:
            check_inputs(sweep.plan, root if root.is_dir() and not missing else None, weights=weights)
        except InputError as err:
            message = str(err)
            if not any(message.split(": ", 1)[-1] == m.split(": ", 1)[-1] for m in missing):
                missing.append(message)
    return missing
