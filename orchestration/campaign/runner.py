"""``reproduce``: a campaign's sweeps launched in dependency order into one output, then the report.

:func:`reproduce` reads and plans the campaign once (``orchestration.campaign.plan``). A dry run
prints the plan — trials per table, done / to do, the cost and its basis — and what a launch here
would lack, and writes nothing. Otherwise every input of every chosen sweep is checked first
(a missing dataset or weight file is one error listing all of them, exit 2, before any trial),
then each table's sweeps not yet done go through the launch verb's own function
(``orchestration.launch.runner.launch``: the ledger skips finished trials, so a relaunch resumes)
into the one output folder and tracking store; a table whose ``after`` tables did not finish is
skipped. Last, the reproduction report (``orchestration.campaign.report``) is written under
``<output>/reports/<campaign>/`` and logged on a run of the campaign's MLflow experiment.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from orchestration import layout
from orchestration.campaign.cells import Expectation
from orchestration.campaign.plan import CampaignPlan, missing_inputs, plan_campaign
from orchestration.campaign.report import ReproductionFiles, build_reproduction, write_reproduction
from orchestration.campaign.spec import read_campaign
from orchestration.campaign.toy import prepare_toy
from orchestration.errors import LaunchError
from orchestration.launch.runner import LaunchOptions, LaunchReport, launch
from orchestration.launch.signals import INTERRUPTED_EXIT
from orchestration.ledger.store import TrialLedger
from orchestration.ledger.vocabulary import CAMPAIGN_ROLE, FINISHED, ROLE_TAG


@dataclass(frozen=True, kw_only=True)
class ReproduceOptions:
    """How to reproduce a campaign (the ``reproduce`` verb's options)."""

    data_root: Path = layout.DEFAULT_DATA_ROOT
    output: Path = layout.DEFAULT_OUTPUT
    storage: str | None = None
    address: str | None = None
    tracking_uri: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    only: Sequence[str] = ()
    dry_run: bool = False
    max_concurrent: int | None = None
    calibration: Path | None = None
    toy: bool = False
    """Run the campaign on the toy world (``orchestration.campaign.toy``); ``data_root`` is unused."""
    toy_options: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``prometar.toy.build.build_toy`` (reduced builds in tests)."""


@dataclass
class ReproduceOutcome:
    """What ``reproduce`` did: the plan, each sweep's launch, the tables skipped, the report."""

    plan: CampaignPlan
    launches: dict[str, LaunchReport] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    files: ReproductionFiles | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def started(self) -> int:
        """Trials the launches started."""
        return sum(r.to_run for r in self.launches.values())

    @property
    def exit_code(self) -> int:
        codes = [r.exit_code for r in self.launches.values()]
        if INTERRUPTED_EXIT in codes:
            return INTERRUPTED_EXIT
        return 1 if any(codes) or self.skipped else 0


def reproduce(
    path: str | Path, options: ReproduceOptions, *, stream: IO[str] | None = None
) -> ReproduceOutcome:
    """Launch what a campaign has not done yet, in dependency order, then write its report.

    Raises:
        InputError: A bad campaign or sweep file, an unknown ``--only`` table, a missing input
            (every one listed), an unusable store; all before any trial starts.
    """
    out = stream or sys.stdout
    campaign = read_campaign(path)
    output = Path(options.output)
    expectation: Expectation | None = None
    description = ""
    if options.toy:
        if options.address is not None:
            raise LaunchError("--toy runs on this machine: leave out --address")
        toy = prepare_toy(campaign, output, toy_options=options.toy_options, stream=out)
        campaign, expectation, description = toy.campaign, toy.expectation, toy.description
        options = dataclasses.replace(options, data_root=toy.data_root)
    plan = plan_campaign(
        campaign,
        output=output,
        tracking_uri=options.tracking_uri,
        only=options.only,
        overrides=options.overrides,
        calibration_file=options.calibration,
    )
    outcome = ReproduceOutcome(plan)
    local = options.address is None
    if options.dry_run:
        for line in plan.lines():
            print(line, file=out)
        outcome.missing = missing_inputs(plan, Path(options.data_root), weights=local) if local else []
        if outcome.missing:
            print("missing here (a launch would stop before its first trial):", file=out)
            for item in outcome.missing:
                print(f"  {item}", file=out)
        return outcome
    if local:
        missing = missing_inputs(plan, Path(options.data_root))
        if missing:
            raise LaunchError(f"{campaign.source}: missing input(s), nothing launched: " + "; ".join(missing))
    finished_tables: set[str] = set()
    for table in plan.tables:
        blocked = [name for name in table.table.after if name not in finished_tables]
        if blocked:
            outcome.skipped[table.table.name] = f"waits for {', '.join(blocked)}"
            print(
                f"[{campaign.name}] {table.table.name}: skipped, {', '.join(blocked)} did not finish",
                file=out,
            )
            continue
        ok = True
        for sweep in table.sweeps:
            if sweep.status.total and sweep.status.done == sweep.status.total:
                print(f"[{campaign.name}] {sweep.name}: all {sweep.status.total} trials FINISHED", file=out)
                continue
            report = launch(
                sweep.path,
                LaunchOptions(
                    data_root=Path(options.data_root),
                    output=output,
                    storage=options.storage,
                    address=options.address,
                    tracking_uri=options.tracking_uri,
                    overrides=dict(options.overrides),
                    max_concurrent=options.max_concurrent,
                    # on the toy world the sweeps' own tables and reports would set toy numbers
                    # beside the paper's: the campaign's report judges them against chance instead
                    tables=not options.toy,
                    report=not options.toy,
                ),
                stream=out,
            )
            outcome.launches[sweep.name] = report
            if report.exit_code == INTERRUPTED_EXIT:
                return outcome
            ok = ok and report.exit_code == 0
        if ok:
            finished_tables.add(table.table.name)
    outcome.files = write_campaign_report(
        plan, options, out, expectations=description, expectation=expectation
    )
    return outcome


def write_campaign_report(
    plan: CampaignPlan,
    options: ReproduceOptions,
    out: IO[str],
    *,
    expectations: str = "",
    expectation: Expectation | None = None,
) -> ReproductionFiles:
    """The reproduction report of the planned tables, logged on a new run of the campaign's experiment."""
    name = plan.campaign.name
    ledger = TrialLedger.for_output(name, Path(options.output), options.tracking_uri)
    ledger.check_reachable()
    report = build_reproduction(plan, ledger.tracking_uri, expectations=expectations, expectation=expectation)
    run_id = ledger.start_launch({ROLE_TAG: CAMPAIGN_ROLE})
    try:
        files = write_reproduction(
            report, layout.reports_folder(options.output, name), log_to=(ledger, run_id)
        )
    finally:
        ledger.end_run(run_id, FINISHED)
    print(f"[{name}] {report.summary_line()}", file=out)
    print(f"[{name}] report: {files.html}", file=out)
    return files
