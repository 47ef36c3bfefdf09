"""What the seeds support: confidence intervals over seeds and paired method comparisons.

Pure functions of plain numbers (no tables), so each can be checked by hand:

- :func:`mean_interval`: the seed mean, sample std and a Student-t 95% interval on n − 1 degrees
  of freedom.
- :func:`bootstrap_hm_interval`: a percentile bootstrap interval for the harmonic mean of the mean
  base and mean new accuracy. Seeds are resampled as (base, new) pairs — one seed's two numbers
  stay together — and, over several datasets (the Average row), independently within each dataset.
- :func:`paired_comparison`: the difference B − A over seeds paired by seed number (which also
  pairs the few-shot subsets): its mean, a Student-t 95% interval, the paired t p-value, the exact
  sign-flip permutation p-value (never below 2 / 2^n with n pairs), a verdict and the seeds a
  paired t test would need to separate the observed difference at the observed spread.

The Student t distribution is computed here rather than imported: its two-sided CDF for an integer
number of degrees of freedom is a finite sum (Abramowitz & Stegun 26.7.3 and 26.7.4), and a
quantile is found by bisection on it. ``tests/unit/test_uncertainty.py`` checks both against
textbook table values.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
"""The level of every interval and the test size (1 − CONFIDENCE) of every verdict."""
POWER = 0.80
"""The power the seeds-needed note asks of a paired t test at level 1 − CONFIDENCE."""
MIN_PAIRS = 3
"""Fewer pairs than this: the verdict is always "not separable"."""
BOOTSTRAP_DRAWS = 2000
"""Bootstrap resamples per interval."""
BOOTSTRAP_SEED = 0
"""The bootstrap's RNG seed: the same runs give the same interval."""
EXACT_SIGN_FLIP_MAX = 16
"""Up to this many pairs the sign-flip test enumerates all 2^n sign patterns; beyond, it draws
:data:`SIGN_FLIP_DRAWS` random patterns from a seeded RNG."""
SIGN_FLIP_DRAWS = 65536
MAX_SEEDS_NEEDED = 1000
"""The seeds-needed note stops counting here ("more than 1000")."""


def t_two_sided_cdf(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's T with ``df`` degrees of freedom (A&S 26.7.3, 26.7.4).

    With θ = atan(t / √df): for odd df, (2/π)(θ + sin θ·(cos θ + (2/3) cos³θ + … +
    (2·4⋯(df−3))/(1·3⋯(df−2)) cos^(df−2) θ)); for even df, sin θ·(1 + (1/2) cos²θ + … +
    (1·3⋯(df−3))/(2·4⋯(df−2)) cos^(df−2) θ).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be ≥ 1, got {df}")
    if math.isinf(t):
        return 1.0
    theta = math.atan(abs(t) / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        term, total = math.cos(theta), math.cos(theta)
        for k in range(3, df - 1, 2):  # term k: (2·4⋯(k−1))/(1·3⋯k) cos^k θ
            term *= cos2 * (k - 1) / k
            total += term
        return 2.0 / math.pi * (theta + sin * total)
    term, total = 1.0, 1.0
    for k in range(2, df - 1, 2):  # term k: (1·3⋯(k−1))/(2·4⋯k) cos^k θ
        term *= cos2 * (k - 1) / k
        total += term
    return sin * total


def t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for Student's T with ``df`` degrees of freedom."""
    half = t_two_sided_cdf(t, df) / 2.0
    return 0.5 + half if t >= 0 else 0.5 - half


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's T with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


def t_critical(n: int) -> float:
    """The two-sided Student-t factor of a :data:`CONFIDENCE` interval over n values (n − 1 df)."""
    return t_quantile(0.5 + CONFIDENCE / 2.0, n - 1)


@dataclass(frozen=True)
class MeanInterval:
    """A seed mean with its spread and :data:`CONFIDENCE` interval (NaN where n is too small).

    Attributes:
        mean: The mean over seeds.
        std: The sample standard deviation (n − 1; NaN with one seed).
        n: The number of seeds.
        half_width: t_(n−1) · std / √n (NaN with one seed).
    """

    mean: float
    std: float
    n: int
    half_width: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_interval(values: Sequence[float]) -> MeanInterval:
    """The mean, sample std and Student-t interval of ``values`` (NaNs are dropped)."""
    finite = [float(v) for v in values if not math.isnan(float(v))]
    n = len(finite)
    if n == 0:
        return MeanInterval(mean=math.nan, std=math.nan, n=0, half_width=math.nan)
    mean = math.fsum(finite) / n
    if n == 1:
        return MeanInterval(mean=mean, std=math.nan, n=1, half_width=math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (n - 1))
    return MeanInterval(mean=mean, std=std, n=n, half_width=t_critical(n) * std / math.sqrt(n))


@dataclass(frozen=True)
class BootstrapIntervals:
    """Percentile bootstrap :data:`CONFIDENCE` intervals (low, high) of an Average-style cell."""

    base: tuple[float, float]
    new: tuple[float, float]
    hm: tuple[float, float]


def bootstrap_intervals(
    groups: Sequence[Sequence[tuple[float, float]]],
    *,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = BOOTSTRAP_SEED,
) -> BootstrapIntervals:
    """Percentile bootstrap intervals for mean base, mean new and HM(mean base, mean new).

    Args:
        groups: One sequence of (base, new) seed pairs per dataset; one group for a cell, all the
            datasets' groups for an Average row (whose base and new are the means over datasets of
            each dataset's seed means).
        draws: Resamples.
        seed: The RNG seed.

    Each draw resamples, within every group independently, as many seeds as the group has (with
    replacement, keeping each seed's base and new together), takes each group's mean base and mean
    new, averages them over groups and takes the HM. Each interval is the 2.5 and 97.5 percentiles
    of its draws (NaN when a group has fewer than two seeds).
    """
    nothing = (math.nan, math.nan)
    if not groups or any(len(group) < 2 for group in groups):
        return BootstrapIntervals(base=nothing, new=nothing, hm=nothing)
    rng = np.random.default_rng(seed)
    base_means = np.zeros(draws)
    new_means = np.zeros(draws)
    for group in groups:
        pairs = np.asarray(group, dtype=float)  # [n_seeds, 2]
        picks = rng.integers(0, len(pairs), size=(draws, len(pairs)))  # [draws, n_seeds]
        base_means += pairs[picks, 0].mean(axis=1)
        new_means += pairs[picks, 1].mean(axis=1)
    base_means /= len(groups)
    new_means /= len(groups)
    total = base_means + new_means
    hm = np.divide(2.0 * base_means * new_means, total, out=np.zeros(draws), where=total > 0)
    tail = (1.0 - CONFIDENCE) / 2.0

    def percentiles(values: np.ndarray) -> tuple[float, float]:
        low, high = np.quantile(values, [tail, 1.0 - tail])
        return (float(low), float(high))

    return BootstrapIntervals(base=percentiles(base_means), new=percentiles(new_means), hm=percentiles(hm))


def bootstrap_hm_interval(
    groups: Sequence[Sequence[tuple[float, float]]],
    *,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """The HM interval of :func:`bootstrap_intervals`."""
    return bootstrap_intervals(groups, draws=draws, seed=seed).hm


def sign_flip_p(differences: Sequence[float], *, seed: int = BOOTSTRAP_SEED) -> float:
    """The two-sided sign-flip permutation p-value of a mean paired difference.

    Under "no difference" each pair's difference is as likely with either sign; the p-value is
    the share of the 2^n sign patterns whose |sum| is at least the observed |sum| (the observed
    pattern and its mirror included, so it is never below 2 / 2^n). Exact (every pattern) up to
    :data:`EXACT_SIGN_FLIP_MAX` pairs, else :data:`SIGN_FLIP_DRAWS` seeded random patterns.
    """
    values = np.asarray(differences, dtype=float)
    n = len(values)
    if n == 0:
        return math.nan
    observed = abs(values.sum())
    tolerance = 1e-9 * max(1.0, float(np.abs(values).sum()))
    if n <= EXACT_SIGN_FLIP_MAX:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))  # [2^n, n]
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(SIGN_FLIP_DRAWS, n))
    sums = np.abs(signs @ values)
    return float(np.mean(sums >= observed - tolerance))


def seeds_needed(difference: float, std: float) -> int | None:
    """Seeds a paired t test needs to separate ``difference`` at spread ``std`` (power 80%).

    The smallest n ≥ 2 with n ≥ ((t_(1−α/2, n−1) + t_(POWER, n−1)) · std / |difference|)², the
    usual sample-size formula with t quantiles in place of normal ones (α = 1 − CONFIDENCE).
    None when there is no difference to separate (zero or NaN); 0 when there is no spread.
    :data:`MAX_SEEDS_NEEDED` + 1 stands for "more than that".
    """
    if math.isnan(difference) or math.isnan(std) or difference == 0:
        return None
    if std == 0:
        return 0
    effect = abs(difference) / std
    for n in range(2, MAX_SEEDS_NEEDED + 1):
        factor = t_quantile(0.5 + CONFIDENCE / 2.0, n - 1) + t_quantile(POWER, n - 1)
        if n >= (factor / effect) ** 2:
            return n
    return MAX_SEEDS_NEEDED + 1


@dataclass(frozen=True, kw_only=True)
class PairedComparison:
    """B − A over seeds paired by seed number.

    Attributes:
        n: Pairs (seeds both sides have).
        difference: Mean of B − A over the pairs.
        std: Sample std of the per-seed differences.
        low, high: The Student-t :data:`CONFIDENCE` interval of the mean difference.
        p_t: Two-sided paired Student t p-value.
        p_sign: Two-sided sign-flip permutation p-value.
        p_sign_floor: The smallest p the sign-flip test can give with n pairs (2 / 2^n).
        verdict: ``"B better"``, ``"A better"`` or ``"not separable with n seeds"``.
        reason: Why the verdict is "not separable" (empty otherwise).
        seeds_needed: See :func:`seeds_needed`.
    """

    n: int
    difference: float
    std: float
    low: float
    high: float
    p_t: float
    p_sign: float
    p_sign_floor: float
    verdict: str
    reason: str
    seeds_needed: int | None


def not_separable(n: int) -> str:
    """The verdict that the seeds cannot tell the two apart."""
    return f"not separable with {n} seed{'s' if n != 1 else ''}"


def paired_comparison(
    a: Mapping[int, float], b: Mapping[int, float], *, labels: tuple[str, str] = ("A", "B")
) -> PairedComparison:
    """Compare B with A over the seeds both have (seed number → value; NaNs dropped).

    The verdict is "<B> better" or "<A> better" when there are at least :data:`MIN_PAIRS` pairs
    and the paired t test rejects "no difference" at level 1 − :data:`CONFIDENCE` (the interval
    excludes 0); else "not separable with n seeds", with the reason.
    """
    seeds = sorted(s for s in set(a) & set(b) if not math.isnan(a[s]) and not math.isnan(b[s]))
    differences = [float(b[s]) - float(a[s]) for s in seeds]
    stats = mean_interval(differences)
    n = stats.n
    if n >= 2 and stats.std > 0:
        t = stats.mean / (stats.std / math.sqrt(n))
        p_t = 1.0 - t_two_sided_cdf(t, n - 1)
    elif n >= 2:
        p_t = 1.0 if stats.mean == 0 else 0.0
    else:
        p_t = math.nan
    floor = 2.0 / 2.0**n if n else math.nan
    if n < MIN_PAIRS:
        verdict = not_separable(n)
        reason = f"fewer than {MIN_PAIRS} paired seeds: no test is meaningful"
    elif p_t < 1.0 - CONFIDENCE:
        verdict = f"{labels[1] if stats.mean > 0 else labels[0]} better"
        reason = ""
    else:
        verdict = not_separable(n)
        reason = (
            f"the {CONFIDENCE:.0%} interval of {labels[1]} − {labels[0]} includes 0 (paired t p = {p_t:.2g})"
        )
    return PairedComparison(
        n=n,
        difference=stats.mean,
        std=stats.std,
        low=stats.low,
        high=stats.high,
        p_t=p_t,
        p_sign=sign_flip_p(differences),
        p_sign_floor=floor,
        verdict=verdict,
        reason=reason,
        seeds_needed=seeds_needed(stats.mean, stats.std) if n >= 2 else None,
    )
