"""Paired method comparisons: B − A per dataset and on average, over seeds paired by seed number.

Seeds are paired by their number, which also pairs the few-shot subsets (a seed draws its subset).
Per dataset and metric (base, new, HM) the per-seed differences go to
``orchestration.results.uncertainty.paired_comparison``: mean difference, Student-t 95% interval,
paired t and sign-flip p-values, a verdict and the seeds needed. A seed's HM is HM(its base, its
new). The Average compares, per seed, the mean over datasets of each method's base and new (and the
HM of those two), over the datasets and seeds both methods have everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from orchestration.errors import ResultsError
from orchestration.results.base2new import BASE_METRIC, NEW_METRIC, PROTOCOL
from orchestration.results.display import Cell, DisplayTable
from orchestration.results.labels import AVERAGE, dataset_label, method_label, order_datasets, order_methods
from orchestration.results.statistics import per_run_table
from orchestration.results.uncertainty import (
    CONFIDENCE,
    MAX_SEEDS_NEEDED,
    MIN_PAIRS,
    POWER,
    PairedComparison,
    paired_comparison,
)
from prometar.protocols import harmonic_mean

KIND = "compare"
METRICS: tuple[str, ...] = ("base", "new", "hm")

COMPARISON_COLUMNS: tuple[str, ...] = (
    "method_a",
    "method_b",
    "shots",
    "dataset",
    "datasets",
    "metric",
    "n",
    "difference",
    "std",
    "low",
    "high",
    "p_t",
    "p_sign",
    "p_sign_floor",
    "verdict",
    "reason",
    "seeds_needed",
)


def _per_seed(per_run: pd.DataFrame, method: str, shots: int, dataset: str) -> dict[int, tuple[float, float]]:
    rows = per_run[
        (per_run["method"] == method) & (per_run["shots"] == shots) & (per_run["dataset"] == dataset)
    ]
    return {int(r.seed): (float(r[BASE_METRIC]), float(r[NEW_METRIC])) for _, r in rows.iterrows()}


def _record(
    a: str, b: str, shots: int, dataset: str, datasets: int, metric: str, result: PairedComparison
) -> dict[str, object]:
    return {
        "method_a": a,
        "method_b": b,
        "shots": shots,
        "dataset": dataset,
        "datasets": datasets,
        "metric": metric,
        "n": result.n,
        "difference": result.difference,
        "std": result.std,
        "low": result.low,
        "high": result.high,
        "p_t": result.p_t,
        "p_sign": result.p_sign,
        "p_sign_floor": result.p_sign_floor,
        "verdict": result.verdict,
        "reason": result.reason,
        "seeds_needed": result.seeds_needed,
    }


def _average(
    seeds: dict[str, tuple[dict[int, tuple[float, float]], dict[int, tuple[float, float]]]],
    side: int,
    common: set[int],
) -> dict[int, tuple[float, float]]:
    """Per seed, one side's mean base and mean new over the datasets (side 0: A, 1: B)."""
    means: dict[int, tuple[float, float]] = {}
    for seed in sorted(common):
        pairs = [sides[side][seed] for sides in seeds.values()]  # one (base, new) per dataset
        means[seed] = (sum(p[0] for p in pairs) / len(pairs), sum(p[1] for p in pairs) / len(pairs))
    return means


def _compare(
    a_seeds: dict[int, tuple[float, float]], b_seeds: dict[int, tuple[float, float]], labels: tuple[str, str]
) -> dict[str, PairedComparison]:
    return {
        "base": paired_comparison(
            {s: v[0] for s, v in a_seeds.items()}, {s: v[0] for s, v in b_seeds.items()}, labels=labels
        ),
        "new": paired_comparison(
            {s: v[1] for s, v in a_seeds.items()}, {s: v[1] for s, v in b_seeds.items()}, labels=labels
        ),
        "hm": paired_comparison(
            {s: harmonic_mean(*v) for s, v in a_seeds.items()},
            {s: harmonic_mean(*v) for s, v in b_seeds.items()},
            labels=labels,
        ),
    }


def compare_summary(
    runs: pd.DataFrame, method_a: str, method_b: str, *, datasets: Sequence[str] | None = None
) -> pd.DataFrame:
    """B − A per dataset and on average, for each shots value both methods ran.

    Args:
        runs: The tidy runs table (base-to-new runs are used).
        method_a, method_b: The methods compared (the difference is B − A).
        datasets: The datasets to compare on; default: every dataset both methods have.

    Returns:
        Columns :data:`COMPARISON_COLUMNS`, one row per (shots, dataset, metric), the Average
        (dataset ``average``, ``datasets`` = how many it covers) first. The Average is over the
        datasets both methods have, on the seeds both have on every one of them.

    Raises:
        ResultsError: A method has no base-to-new runs, or the two share no dataset.
    """
    rows = runs[runs["protocol"].isin(PROTOCOL.recorded_names)]
    keys = ["method", "shots", "dataset"]
    per_run = per_run_table(rows, [BASE_METRIC, NEW_METRIC], keys, what="comparison")
    per_run = per_run.dropna(subset=[BASE_METRIC, NEW_METRIC])
    for method in (method_a, method_b):
        if not (per_run["method"] == method).any():
            found = ", ".join(sorted(per_run["method"].unique())) or "none"
            raise ResultsError(f"--compare: no base-to-new runs of method {method!r} (methods: {found})")
    labels = (method_label(method_a), method_label(method_b))
    records: list[dict[str, object]] = []
    shots_a = set(per_run.loc[per_run["method"] == method_a, "shots"])
    shots_b = set(per_run.loc[per_run["method"] == method_b, "shots"])
    for shots in sorted(shots_a & shots_b):
        have_a = set(per_run.loc[(per_run["method"] == method_a) & (per_run["shots"] == shots), "dataset"])
        have_b = set(per_run.loc[(per_run["method"] == method_b) & (per_run["shots"] == shots), "dataset"])
        shared = order_datasets(sorted((have_a & have_b) & set(datasets) if datasets else have_a & have_b))
        if not shared:
            continue
        seeds = {
            d: (_per_seed(per_run, method_a, shots, d), _per_seed(per_run, method_b, shots, d))
            for d in shared
        }
        common = set.intersection(*(set(sa) & set(sb) for sa, sb in seeds.values()))

        for metric, result in _compare(
            _average(seeds, 0, common), _average(seeds, 1, common), labels
        ).items():
            records.append(_record(method_a, method_b, int(shots), AVERAGE, len(shared), metric, result))
        for dataset in shared:
            for metric, result in _compare(*seeds[dataset], labels).items():
                records.append(_record(method_a, method_b, int(shots), dataset, 1, metric, result))
    if not records:
        raise ResultsError(f"--compare: {method_a} and {method_b} share no dataset and shots")
    frame = pd.DataFrame.from_records(records, columns=list(COMPARISON_COLUMNS))
    return frame.astype({"seeds_needed": "Int64"})


REFERENCE_METHOD = "prometar"
"""The method the report compares every other one with."""


def default_comparisons(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(other, ProMetaR) for every other method with base-to-new runs, in the paper's order."""
    rows = runs[runs["protocol"].isin(PROTOCOL.recorded_names) & runs["metric"].isin(PROTOCOL.set_metrics)]
    methods = order_methods(rows["method"].unique())
    if REFERENCE_METHOD not in methods:
        return []
    return [(method, REFERENCE_METHOD) for method in methods if method != REFERENCE_METHOD]


def _p_text(p: float) -> str:
    """Three decimals; a p-value under 0.001 in two significant digits (``2.3e-05``), never ``0.000``."""
    return "–" if p != p else (f"{p:.1e}" if p < 0.001 else f"{p:.3f}")


def layout_comparison(summary: pd.DataFrame) -> DisplayTable:
    """One row per (dataset, metric): n, B − A with its interval, both p-values and the verdict."""
    first = summary.iloc[0]
    a, b = method_label(str(first["method_a"])), method_label(str(first["method_b"]))
    several_shots = summary["shots"].nunique() > 1
    header = [
        "Dataset",
        "Metric",
        "n",
        f"{b} − {a}",
        f"{CONFIDENCE:.0%} CI",
        "p (paired t)",
        "p (sign flip)",
        "verdict",
    ]
    table = DisplayTable(
        f"Paired comparison {b} − {a} (seeds paired by seed number)", header, label_columns=2
    )
    notes = {
        f"CI: Student t on n − 1 df of the per-seed differences; verdict at level {1 - CONFIDENCE:.2f} "
        "(paired t)",
        "the sign-flip p cannot go below 2/2^n with n pairs (0.25 with 3, 0.0625 with 5)",
    }
    for (shots, dataset), block in summary.groupby(["shots", "dataset"], sort=False):
        table.rules.append(len(table.rows))
        name = dataset_label(str(dataset))
        if dataset == AVERAGE:
            name = f"{name} ({int(block.iloc[0]['datasets'])} datasets)"
        if several_shots:
            name += f" ({shots}-shot)"
        for i, (_, row) in enumerate(block.iterrows()):
            interval = f"[{row['low']:+.2f}, {row['high']:+.2f}]" if row["high"] == row["high"] else "–"
            table.rows.append(
                [
                    Cell(text=name if i == 0 else ""),
                    Cell(text={"base": "Base", "new": "New", "hm": "HM"}[str(row["metric"])]),
                    Cell(text=str(int(row["n"]))),
                    Cell(value=float(row["difference"]), signed=True),
                    Cell(text=interval),
                    Cell(text=_p_text(float(row["p_t"]))),
                    Cell(text=_p_text(float(row["p_sign"]))),
                    Cell(text=str(row["verdict"])),
                ]
            )
            if int(row["n"]) < MIN_PAIRS:
                notes.add(
                    f"fewer than {MIN_PAIRS} paired seeds: always 'not separable' (no test is meaningful)"
                )
            separable = not str(row["verdict"]).startswith("not separable")
            if row["metric"] == "hm" and pd.notna(row["seeds_needed"]) and not separable:
                notes.add(_power_note(name, row))
    table.notes = sorted(notes)
    return table


def _power_note(name: str, row: pd.Series) -> str:
    needed = int(row["seeds_needed"])
    if needed == 0:
        return f"{name}: HM differences identical across seeds"
    count = f"more than {MAX_SEEDS_NEEDED}" if needed > MAX_SEEDS_NEEDED else f"about {needed}"
    return (
        f"{name}: separating an HM difference of {abs(float(row['difference'])):.2f} at a seed spread of "
        f"{float(row['std']):.2f} needs {count} seeds (paired t, {POWER:.0%} power)"
    )
