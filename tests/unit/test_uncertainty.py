"""Intervals over seeds and paired comparisons, checked on numbers worked out by hand.

With 2 degrees of freedom Student's T has a closed form, P(|T| ≤ t) = t / √(t² + 2), so the
3-seed examples below can be followed with a pocket calculator.
"""

from __future__ import annotations

import math

import pytest

from orchestration.results import uncertainty as u


def test_t_distribution_matches_closed_forms_and_table_values():
    """The t CDF and quantile match the closed forms for 1 and 2 df and printed table values."""
    # df = 1 is the Cauchy law: P(|T| ≤ t) = (2/π) atan t.
    assert u.t_two_sided_cdf(1.0, 1) == pytest.approx(0.5)
    # df = 2: P(|T| ≤ t) = t / √(t² + 2); solving t/√(t²+2) = 0.95 gives t² = 1.805 / 0.0975.
    assert u.t_two_sided_cdf(3.0, 2) == pytest.approx(3.0 / math.sqrt(11.0))
    assert u.t_quantile(0.975, 2) == pytest.approx(math.sqrt(1.805 / 0.0975), rel=1e-9)
    assert u.t_quantile(0.975, 1) == pytest.approx(math.tan(0.95 * math.pi / 2), rel=1e-9)
    # Printed tables (t_0.975 with 4, 9, 29 df; t_0.80 with 5 df).
    assert u.t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert u.t_quantile(0.975, 9) == pytest.approx(2.262157, abs=1e-6)
    assert u.t_quantile(0.975, 29) == pytest.approx(2.045230, abs=1e-6)
    assert u.t_quantile(0.80, 5) == pytest.approx(0.919544, abs=1e-6)
    assert u.t_quantile(0.025, 4) == pytest.approx(-2.776445, abs=1e-6)


def test_mean_interval_of_three_seeds():
    """Seeds 10, 12, 14: mean 12, std 2, half-width t_0.975,2 · 2 / √3 = 4.30265 · 1.15470 = 4.9683."""
    stats = u.mean_interval([10.0, 12.0, 14.0])
    assert (stats.mean, stats.std, stats.n) == (pytest.approx(12.0), pytest.approx(2.0), 3)
    assert stats.half_width == pytest.approx(4.9683, abs=1e-4)
    assert (stats.low, stats.high) == (pytest.approx(7.0317, abs=1e-4), pytest.approx(16.9683, abs=1e-4))


def test_mean_interval_of_one_seed_has_no_spread():
    """One seed: a mean, no std and no interval."""
    stats = u.mean_interval([55.0, math.nan])
    assert stats.n == 1 and stats.mean == 55.0
    assert math.isnan(stats.std) and math.isnan(stats.half_width)


def test_bootstrap_keeps_each_seeds_base_and_new_together():
    """Seeds (60, 40) and (40, 60): every paired resample has HM 48 (one seed twice) or 50 (both).

    Each of "seed 1 twice" and "seed 2 twice" has probability 1/4, so the 2.5 and 97.5 percentiles
    are 48 and 50. Resampling base and new apart would reach HM(60, 60) = 60.
    """
    low, high = u.bootstrap_hm_interval([[(60.0, 40.0), (40.0, 60.0)]], seed=3)
    assert (low, high) == (pytest.approx(48.0), pytest.approx(50.0))
    assert u.bootstrap_hm_interval([[(60.0, 40.0), (40.0, 60.0)]], seed=3) == (low, high)


def test_bootstrap_of_an_average_resamples_within_each_dataset():
    """Dataset 1 as above, dataset 2 seeds (80, 80) twice: the Average's base and new are the means.

    Seed 1 twice: base (60 + 80)/2 = 70, new (40 + 80)/2 = 60, HM = 2·70·60/130 = 64.615; seed 2
    twice gives the same by symmetry; both seeds: base 65, new 65, HM 65.
    """
    low, high = u.bootstrap_hm_interval([[(60.0, 40.0), (40.0, 60.0)], [(80.0, 80.0), (80.0, 80.0)]], seed=1)
    assert low == pytest.approx(2 * 70 * 60 / 130)
    assert high == pytest.approx(65.0)


def test_bootstrap_needs_two_seeds_per_dataset():
    """A dataset with one seed gives no interval."""
    assert all(math.isnan(x) for x in u.bootstrap_hm_interval([[(60.0, 40.0), (40.0, 60.0)], [(1.0, 2.0)]]))


def test_paired_comparison_of_three_seeds_not_separable():
    """A = 60, 62, 64 and B = 63, 64, 70 by seed: differences 3, 2, 6.

    Mean 11/3 = 3.6667; squared deviations 0.4444 + 2.7778 + 5.4444 = 8.6667, variance 4.3333,
    std 2.0817, standard error 2.0817/√3 = 1.2019, t = 3.0508; with 2 df the two-sided p is
    1 − t/√(t² + 2) = 1 − 3.0508/3.3627 = 0.0928. Interval 3.6667 ± 4.30265 · 1.2019 =
    [−1.505, 8.838]. Sign flips: of the 8 sums ±3 ±2 ±6 only +11 and −11 reach |11|: p = 2/8.
    """
    result = u.paired_comparison({1: 60.0, 2: 62.0, 3: 64.0}, {1: 63.0, 2: 64.0, 3: 70.0})
    assert result.n == 3
    assert result.difference == pytest.approx(11 / 3)
    assert result.std == pytest.approx(math.sqrt(13 / 3))
    assert result.p_t == pytest.approx(0.0928, abs=1e-4)
    assert (result.low, result.high) == (pytest.approx(-1.505, abs=1e-3), pytest.approx(8.838, abs=1e-3))
    assert result.p_sign == pytest.approx(0.25)
    assert result.p_sign_floor == pytest.approx(0.25)
    assert result.verdict == "not separable with 3 seeds"
    assert "includes 0" in result.reason


def test_paired_comparison_of_three_seeds_separable_by_t():
    """Differences 5, 6, 7: mean 6, std 1, t = 6/(1/√3) = 10.392, p = 1 − 10.392/√110 = 0.0092.

    The t test separates them (B better); the sign-flip p stays at its floor 2/2³ = 0.25.
    """
    result = u.paired_comparison(
        {1: 50.0, 2: 50.0, 3: 50.0}, {1: 55.0, 2: 56.0, 3: 57.0}, labels=("IVLP", "ProMetaR")
    )
    assert result.p_t == pytest.approx(1 - 6 * math.sqrt(3) / math.sqrt(110), abs=1e-9)
    assert result.verdict == "ProMetaR better"
    assert result.reason == ""
    assert result.p_sign == pytest.approx(0.25)
    mirrored = u.paired_comparison(
        {1: 55.0, 2: 56.0, 3: 57.0}, {1: 50.0, 2: 50.0, 3: 50.0}, labels=("P", "Q")
    )
    assert mirrored.verdict == "P better" and mirrored.difference == pytest.approx(-6.0)


def test_paired_comparison_pairs_by_seed_number_and_needs_three_pairs():
    """Seeds only one side has are left out; two pairs are never separable, whatever the gap."""
    result = u.paired_comparison({1: 10.0, 2: 11.0, 7: 99.0}, {1: 90.0, 2: 92.0, 5: 0.0})
    assert result.n == 2
    assert result.difference == pytest.approx(80.5)
    assert result.verdict == "not separable with 2 seeds"
    assert "fewer than 3" in result.reason


def test_sign_flip_p_counts_patterns():
    """Differences 1, 2, 3, −1 (sum 5): patterns with |sum| ≥ 5 among 16.

    Sums ±1 ±2 ±3 ±1 reaching |5|: 7, 5 (flip the last 1), 5 (flip the first 1)... counted: with
    the 3 and 2 positive the two 1s give 7, 5, 5, 3; mirrored likewise: 6 of 16.
    """
    assert u.sign_flip_p([1.0, 2.0, 3.0, -1.0]) == pytest.approx(6 / 16)
    assert u.sign_flip_p([1.0, 1.0, 1.0, 1.0, 1.0]) == pytest.approx(2 / 32)


def test_seeds_needed_for_the_observed_difference():
    """Difference 6 at std 1: n = 2 needs ((12.706 + 1.376)/6)² = 5.5 > 2; n = 3 needs
    ((4.303 + 1.061)/6)² = 0.80 ≤ 3: three seeds. Difference 1 at std 2 needs about 34."""
    assert u.seeds_needed(6.0, 1.0) == 3
    assert u.seeds_needed(-6.0, 1.0) == 3
    n = u.seeds_needed(1.0, 2.0)
    assert n is not None

    def enough(k: int) -> bool:
        factor = u.t_quantile(0.975, k - 1) + u.t_quantile(0.80, k - 1)
        return k >= (factor * 2.0) ** 2

    assert enough(n) and not enough(n - 1)
    assert 32 <= n <= 36  # the normal approximation gives (1.960 + 0.842)² · 4 = 31.4
    assert u.seeds_needed(0.0, 1.0) is None
    assert u.seeds_needed(1.0, 0.0) == 0
