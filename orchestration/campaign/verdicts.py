"""Verdicts: is a published number reproduced by ours? Pure functions of (mean, interval, n) and a value.

A cell of a campaign's table holds our estimate (:class:`Estimate`: the mean over seeds, a 95 %
interval, n) and, where the paper reports the same setting, the published value. Its verdict:

- *reproduced*: the published value lies within our interval;
- *not reproduced*: it lies outside, ``by`` points beyond the nearer end of the interval;
- *not comparable*: a deviation (recipe, precision, backbone) named with its source, no reference
  value (published, or the toy world's expectation), no finished run, or one seed (no interval).

A toy-world expectation is a floor instead (``relation="above"``: chance level): *reproduced* when
our whole interval lies above it, *not reproduced* when our whole interval lies below it (``by``
points below its upper end), and *inconclusive* when the interval spans it — with two seeds the
95% t interval is ±12.7 standard errors wide, and a cell whose seeds disagree says nothing either
way; more seeds decide it.

A table is *reproduced* when every decided cell (reproduced or not) is, *not reproduced* when one
is not, *inconclusive* when no cell is decided but some are inconclusive, and *not comparable*
when none is comparable. The interval is Student's t over the seeds
(:func:`seed_interval`: the tables' own ``results.uncertainty.mean_interval``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from orchestration.results.uncertainty import mean_interval

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_COMPARABLE = "not comparable"
INCONCLUSIVE = "inconclusive"
Verdict = Literal["reproduced", "not reproduced", "inconclusive", "not comparable"]
VERDICTS: tuple[str, ...] = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_COMPARABLE)


@dataclass(frozen=True)
class Estimate:
    """Our number for a cell: the mean over seeds and its interval (NaN ends with one seed)."""

    mean: float
    low: float
    high: float
    n: int


def seed_interval(values: Sequence[float]) -> Estimate:
    """Mean and 95 % t-interval of per-seed values; one value has no interval (NaN ends).

    Raises:
        ValueError: No value.
    """
    if not values:
        raise ValueError("no value to estimate from")
    interval = mean_interval(values)
    return Estimate(interval.mean, interval.low, interval.high, interval.n)


@dataclass(frozen=True, kw_only=True)
class CellVerdict:
    """The verdict on one cell.

    Attributes:
        verdict: reproduced / not reproduced / inconclusive / not comparable.
        difference: Our mean minus the published value (None without both).
        by: How far the published value lies outside our interval (not reproduced only).
        reason: Why it is not comparable (the deviation and its source, or what is missing), or
            why it is inconclusive.
    """

    verdict: Verdict
    difference: float | None = None
    by: float | None = None
    reason: str = ""


Relation = Literal["within", "above"]


def judge_cell(
    ours: Estimate | None, published: float | None, *, deviation: str = "", relation: Relation = "within"
) -> CellVerdict:
    """The verdict on one cell (see the module's rules).

    Args:
        ours: Our estimate, or None (no finished run).
        published: The paper's value (or the toy world's expectation), or None (none reported).
        deviation: A named deviation with its source; non-empty makes the cell not comparable.
        relation: ``within``: the value should lie within our interval (a published number);
            ``above``: our interval should lie above it (a floor such as chance).
    """
    difference = ours.mean - published if ours is not None and published is not None else None
    if deviation:
        return CellVerdict(verdict=NOT_COMPARABLE, difference=difference, reason=deviation)
    if published is None:
        return CellVerdict(verdict=NOT_COMPARABLE, reason="no reference value (published or expected)")
    if ours is None:
        return CellVerdict(verdict=NOT_COMPARABLE, reason="no finished run")
    if ours.n < 2 or math.isnan(ours.low):
        return CellVerdict(verdict=NOT_COMPARABLE, difference=difference, reason=f"n={ours.n}: no interval")
    if relation == "above":
        if ours.low > published:
            return CellVerdict(verdict=REPRODUCED, difference=difference)
        if ours.high < published:
            return CellVerdict(verdict=NOT_REPRODUCED, difference=difference, by=published - ours.high)
        return CellVerdict(
            verdict=INCONCLUSIVE,
            difference=difference,
            reason=f"our 95% interval (n={ours.n}) spans the reference: more seeds would decide",
        )
    if ours.low <= published <= ours.high:
        return CellVerdict(verdict=REPRODUCED, difference=difference)
    by = published - ours.high if published > ours.high else ours.low - published
    return CellVerdict(verdict=NOT_REPRODUCED, difference=difference, by=by)


@dataclass(frozen=True)
class TableVerdict:
    """A table's verdict and its cells' counts per verdict."""

    verdict: Verdict
    counts: dict[str, int]

    @property
    def comparable(self) -> int:
        """Cells decided either way (reproduced or not)."""
        return self.counts[REPRODUCED] + self.counts[NOT_REPRODUCED]

    def line(self) -> str:
        """``3 of 4 comparable cells reproduced; 1 inconclusive; 2 not comparable``."""
        text = f"{self.counts[REPRODUCED]} of {self.comparable} comparable cells reproduced"
        if self.counts[INCONCLUSIVE]:
            text += f"; {self.counts[INCONCLUSIVE]} inconclusive"
        if self.counts[NOT_COMPARABLE]:
            text += f"; {self.counts[NOT_COMPARABLE]} not comparable"
        return text


def judge_table(cells: Iterable[CellVerdict]) -> TableVerdict:
    """The table's verdict from its cells' (see the module's rules)."""
    seen = Counter(cell.verdict for cell in cells)
    counts = {verdict: seen.get(verdict, 0) for verdict in VERDICTS}
    if counts[NOT_REPRODUCED]:
        verdict: Verdict = NOT_REPRODUCED
    elif counts[REPRODUCED]:
        verdict = REPRODUCED
    elif counts[INCONCLUSIVE]:
        verdict = INCONCLUSIVE
    else:
        verdict = NOT_COMPARABLE
    return TableVerdict(verdict, counts)
