"""The cells of a campaign table: our estimate per (method, dataset, shots, setting, metric) and its verdict.

Every final metric of the table's runs is a cell: its per-seed values give the mean and interval
(``verdicts.seed_interval``). Base-to-new tables also get the Average cells (per seed: the mean
over the table's datasets of base and new accuracy, and the HM of those two; only seeds that have
every dataset). Ablation tables tell their arms apart by the config keys that differ
(``results.ablation.ablation_params``), shown as the cell's *setting*. A cell is joined with the
published value of the same (method, dataset, metric) where the table cites one — at the
resource's shot count, for the published (non-ablation) configuration — and judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pandas as pd

from orchestration.campaign.published import PublishedValue
from orchestration.campaign.verdicts import (
    NOT_COMPARABLE,
    CellVerdict,
    Estimate,
    judge_cell,
    seed_interval,
)
from orchestration.errors import ResultsError
from orchestration.ledger.runs import RunsTable, attach_params
from orchestration.results import ablation, base2new
from orchestration.results.comparison import compare_summary
from orchestration.results.labels import AVERAGE
from prometar.protocols import harmonic_mean

PUBLISHED_SHOTS = 16
"""The shot count of the published base-to-new numbers."""


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One judged cell of a campaign table."""

    method: str
    dataset: str
    shots: int
    setting: str
    metric: str
    ours: Estimate | None
    published: PublishedValue | None
    verdict: CellVerdict


def estimate_cells(runs: RunsTable, *, kind: str, datasets: Sequence[str]) -> pd.DataFrame:
    """Per (method, dataset, shots, setting, metric): the per-seed values of a table's runs (runs
    reporting the same cell and seed, as a source model and its evaluations do, give one value).

    Returns:
        Columns ``method, dataset, shots, setting, metric, values`` (``values``: a tuple, seed order).
    """
    frame = runs.runs.copy()
    if frame.empty:
        return pd.DataFrame(columns=["method", "dataset", "shots", "setting", "metric", "values"])
    frame["setting"] = ""
    if kind == ablation.KIND:
        by = ablation.ablation_params(frame, runs.params)
        if by:
            frame = attach_params(frame, runs.params, by)
            frame["setting"] = (
                frame[by]
                .astype(str)
                .apply(lambda row: ", ".join(f"{k}={v}" for k, v in zip(by, row, strict=True)), axis=1)
            )
    frame["shots"] = frame["shots"].astype(int)
    frame["seed"] = frame["seed"].astype(int)
    keys = ["method", "dataset", "shots", "setting", "metric"]
    # one value per seed: a transfer's source accuracy is reported by its source model's run and by
    # each evaluation of that model (the same number), never counted twice
    rows = [
        (*key, tuple(group.groupby("seed")["value"].mean().sort_index().astype(float)))
        for key, group in frame.groupby(keys, sort=True)
    ]
    cells = pd.DataFrame(rows, columns=[*keys, "values"])
    if kind in (base2new.KIND, ablation.KIND):
        cells = pd.concat([cells, _average_cells(frame, datasets)], ignore_index=True)
    return cells


def _average_cells(frame: pd.DataFrame, datasets: Sequence[str]) -> pd.DataFrame:
    """Per (method, shots, setting) and seed: mean base and new over ``datasets``, and their HM."""
    rows = []
    wanted = frame[frame["dataset"].isin(datasets) & frame["metric"].isin(["base_acc", "new_acc"])]
    for (method, shots, setting), group in wanted.groupby(["method", "shots", "setting"], sort=True):
        per_seed = group.pivot_table(index="seed", columns=["metric", "dataset"], values="value")
        bases, news, hms = [], [], []
        for _, row in per_seed.iterrows():
            try:
                base = [row[("base_acc", d)] for d in datasets]
                new = [row[("new_acc", d)] for d in datasets]
            except KeyError:
                continue
            if any(pd.isna(v) for v in (*base, *new)):
                continue
            bases.append(sum(base) / len(base))
            news.append(sum(new) / len(new))
            hms.append(harmonic_mean(bases[-1], news[-1]))
        for metric, values in (("base_acc", bases), ("new_acc", news), ("hm", hms)):
            if values:
                rows.append((method, AVERAGE, int(shots), setting, metric, tuple(values)))
    return pd.DataFrame(rows, columns=["method", "dataset", "shots", "setting", "metric", "values"])


class Expectation(Protocol):
    """The toy world's expectations of a cell: (method, dataset, shots, metric) → the reference
    values it is judged against (none: not comparable)."""

    def __call__(self, method: str, dataset: str, shots: int, metric: str) -> Sequence[PublishedValue]: ...

    def with_runs(self, runs: pd.DataFrame) -> Expectation:
        """The expectations that need the campaign's own runs (zero-shot), bound to them."""
        ...


def judge_cells(
    estimates: pd.DataFrame,
    published: Sequence[PublishedValue],
    *,
    deviation: str = "",
    expectation: Expectation | None = None,
) -> list[Cell]:
    """Join our cells with the published values and judge each; a published value we have no run
    for is a cell too (``no finished run``). With ``expectation`` (the toy world), every cell is
    judged against each reference it gives instead, one cell per reference (published values and
    deviations are the paper's: unused)."""
    cited = {(v.method, v.dataset, v.metric): v for v in published} if expectation is None else {}
    deviation = deviation if expectation is None else ""
    cells: list[Cell] = []
    seen: set[tuple[str, str, str]] = set()
    for row in estimates.itertuples(index=False):
        key = (row.method, row.dataset, row.metric)
        if expectation is not None:
            values: Sequence[PublishedValue | None] = expectation(
                row.method, row.dataset, int(row.shots), row.metric
            ) or [None]
        else:
            found = cited.get(key) if row.setting == "" and int(row.shots) == PUBLISHED_SHOTS else None
            values = [found]
            if found is not None:
                seen.add(key)
        ours = seed_interval(list(row.values))
        for value in values:
            cells.append(
                Cell(
                    method=row.method,
                    dataset=row.dataset,
                    shots=int(row.shots),
                    setting=row.setting,
                    metric=row.metric,
                    ours=ours,
                    published=value,
                    verdict=judge_cell(
                        ours,
                        value.value if value else None,
                        deviation=deviation,
                        relation=value.relation if value else "within",
                    ),
                )
            )
    for key, value in cited.items():
        if key not in seen:
            cells.append(
                Cell(
                    method=value.method,
                    dataset=value.dataset,
                    shots=PUBLISHED_SHOTS,
                    setting="",
                    metric=value.metric,
                    ours=None,
                    published=value,
                    verdict=judge_cell(None, value.value, deviation=deviation),
                )
            )
    return cells


PAIRED = "paired by seed"
"""The setting of a paired-difference cell."""


def paired_cells(
    runs: RunsTable, published: Sequence[PublishedValue], *, lead: str, deviation: str = ""
) -> list[Cell]:
    """Our paired difference ``lead`` − each other cited method beside the paper's difference.

    Per (dataset, metric) the paper reports for both methods (at its shot count): the per-seed
    differences over the seeds both methods have give the mean and interval; the published
    difference is judged against them like a published value. Cells without a common seed are
    not comparable (``no finished run``).
    """
    cited = {(v.method, v.dataset, v.metric): v for v in published}
    frame = runs.runs
    if not frame.empty:
        frame = frame[frame["shots"].astype(int) == PUBLISHED_SHOTS]
    cells: list[Cell] = []
    others = sorted({v.method for v in published} - {lead})
    for other in others:
        for (method, dataset, metric), ours_lead in cited.items():
            if method != lead or dataset == AVERAGE or (other, dataset, metric) not in cited:
                continue
            theirs = cited[(other, dataset, metric)]
            value = PublishedValue(
                method=f"{lead} − {other}",
                dataset=dataset,
                metric=metric,
                value=ours_lead.value - theirs.value,
                source=f"{ours_lead.source}; {theirs.source}",
            )
            estimate = None
            if not frame.empty:
                rows = frame[(frame["dataset"] == dataset) & (frame["metric"] == metric)]
                a = rows[rows["method"] == lead].groupby("seed")["value"].mean()
                b = rows[rows["method"] == other].groupby("seed")["value"].mean()
                common = sorted(set(a.index) & set(b.index))
                if common:
                    estimate = seed_interval([float(a[s] - b[s]) for s in common])
            cells.append(
                Cell(
                    method=value.method,
                    dataset=dataset,
                    shots=PUBLISHED_SHOTS,
                    setting=PAIRED,
                    metric=metric,
                    ours=estimate,
                    published=value,
                    verdict=judge_cell(estimate, value.value, deviation=deviation),
                )
            )
    return cells


PAIR_METRICS = {"base": base2new.BASE_METRIC, "new": base2new.NEW_METRIC, "hm": "hm"}
"""The paired comparison's metrics (``results.comparison.METRICS``) → our final metric names."""


def pair_cells(
    runs: RunsTable,
    pairs: Sequence[tuple[str, str]],
    published: Sequence[PublishedValue],
    *,
    datasets: Sequence[str],
    deviation: str = "",
    no_reference: str = "",
) -> tuple[list[Cell], list[pd.DataFrame]]:
    """Per (base, treated) pair: our paired difference ``treated − base`` beside the paper's.

    Per dataset, metric and shots (and on Average), the paired comparison of the results wing
    (``results.comparison.compare_summary``: per-seed differences, Student-t interval, paired t and
    sign-flip tests) gives our estimate; the paper's difference is that of the two methods'
    published values where both exist (the Average only when ours covers all of ``datasets``), else
    the cell is not comparable, saying which published value is missing (``no_reference``: the
    reason instead, on the toy world). The paired test's verdict is the cell's setting.

    Returns:
        The cells, and each pair's comparison summary (``COMPARISON_COLUMNS``) for the tables.
    """
    cited = {(v.method, v.dataset, v.metric): v for v in published}
    cells: list[Cell] = []
    summaries: list[pd.DataFrame] = []
    for base, treated in pairs:
        name = f"{treated} − {base}"
        try:
            summary = compare_summary(runs.runs, base, treated, datasets=datasets)
        except ResultsError as err:
            cells.append(
                Cell(
                    method=name,
                    dataset=AVERAGE,
                    shots=PUBLISHED_SHOTS,
                    setting=PAIRED,
                    metric="hm",
                    ours=None,
                    published=None,
                    verdict=CellVerdict(verdict=NOT_COMPARABLE, reason=f"no finished runs to pair ({err})"),
                )
            )
            continue
        summaries.append(summary)
        for row in summary.itertuples(index=False):
            metric = PAIR_METRICS[str(row.metric)]
            ours = Estimate(float(row.difference), float(row.low), float(row.high), int(row.n))
            value = None
            missing = [m for m in (treated, base) if (m, row.dataset, metric) not in cited]
            whole = row.dataset != AVERAGE or int(row.datasets) == len(set(datasets))
            if not missing and whole and int(row.shots) == PUBLISHED_SHOTS:
                lead, other = cited[(treated, row.dataset, metric)], cited[(base, row.dataset, metric)]
                value = PublishedValue(
                    method=name,
                    dataset=str(row.dataset),
                    metric=metric,
                    value=lead.value - other.value,
                    source=f"{lead.source}; {other.source}",
                )
            if value is not None:
                verdict = judge_cell(ours, value.value, deviation=deviation)
            else:
                reason = no_reference or (
                    f"no published value of {' or '.join(missing)}"
                    if missing
                    else "the published values are not of this setting"
                )
                verdict = CellVerdict(verdict=NOT_COMPARABLE, reason=reason)
            cells.append(
                Cell(
                    method=name,
                    dataset=str(row.dataset),
                    shots=int(row.shots),
                    setting=f"{PAIRED}: {row.verdict}",
                    metric=metric,
                    ours=ours,
                    published=value,
                    verdict=verdict,
                )
            )
    return cells, summaries
