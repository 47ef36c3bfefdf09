"""Paired method comparisons from runs: per dataset, on average, and through ``table --compare``."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.errors import ResultsError
from orchestration.ledger.runs import tidy_from_wide
from orchestration.results.comparison import compare_summary, layout_comparison
from orchestration.results.render import to_markdown

DATASETS = ("dtd", "eurosat", "oxford_flowers")
BASE_GAIN = {1: 2.0, 2: 3.0, 3: 4.0, 4: 3.0, 5: 3.0}
"""ProMetaR's base minus IVLP's, by seed (the same on every dataset): mean 3, std √0.5."""
NEW_GAIN = {1: 1.0, 2: -1.0, 3: 2.0, 4: -2.0, 5: 0.0}
"""ProMetaR's new minus IVLP's, by seed: mean 0."""


def runs_rows(seeds) -> list[dict[str, object]]:
    rows = []
    for d, dataset in enumerate(DATASETS):
        for seed in seeds:
            base, new = 70.0 + 5 * d + seed, 60.0 + 2 * d - seed
            rows.append(dict(method="ivlp", dataset=dataset, seed=seed, shots=16, base_acc=base, new_acc=new))
            rows.append(
                dict(
                    method="prometar",
                    dataset=dataset,
                    seed=seed,
                    shots=16,
                    base_acc=base + BASE_GAIN[seed],
                    new_acc=new + NEW_GAIN[seed],
                )
            )
    return rows


def tidy(rows) -> pd.DataFrame:
    wide = pd.DataFrame(rows)
    wide["protocol"] = "base2new"
    return tidy_from_wide(wide, source="hand").runs


def row(summary: pd.DataFrame, dataset: str, metric: str) -> pd.Series:
    found = summary[(summary["dataset"] == dataset) & (summary["metric"] == metric)]
    assert len(found) == 1
    return found.iloc[0]


def test_compare_per_dataset_and_on_average():
    """Base gains 2, 3, 4, 3, 3: mean 3, std √(2/4) = 0.7071, t = 3/(0.7071/√5) = 9.487 on 4 df.

    t_0.975,4 = 2.776445: interval 3 ± 2.776445 · 0.31623 = [2.122, 3.878] — ProMetaR better on
    base. New gains 1, −1, 2, −2, 0: mean 0, not separable. The Average adds the same gain to every
    dataset, so its base difference is the same.
    """
    summary = compare_summary(tidy(runs_rows(range(1, 6))), "ivlp", "prometar")
    assert list(dict.fromkeys(summary["dataset"])) == [
        "average",
        "oxford_flowers",
        "dtd",
        "eurosat",
    ]  # paper order
    for dataset in ("average", "dtd"):
        base = row(summary, dataset, "base")
        assert base["n"] == 5 and base["difference"] == pytest.approx(3.0)
        assert base["std"] == pytest.approx(math.sqrt(0.5))
        assert (base["low"], base["high"]) == (
            pytest.approx(2.1220, abs=1e-4),
            pytest.approx(3.8780, abs=1e-4),
        )
        assert base["verdict"] == "ProMetaR better"
        assert base["p_sign"] == pytest.approx(2 / 32) and base["p_sign_floor"] == pytest.approx(2 / 32)
        new = row(summary, dataset, "new")
        assert new["difference"] == pytest.approx(0.0, abs=1e-12)
        assert new["verdict"] == "not separable with 5 seeds"
    assert row(summary, "average", "base")["datasets"] == 3


def test_average_pairs_seeds_across_datasets():
    """A seed missing on one dataset for one method leaves the Average, not the other datasets."""
    rows = [
        r
        for r in runs_rows(range(1, 6))
        if not (r["method"] == "ivlp" and r["dataset"] == "dtd" and r["seed"] == 5)
    ]
    summary = compare_summary(tidy(rows), "ivlp", "prometar")
    assert row(summary, "average", "hm")["n"] == 4
    assert row(summary, "dtd", "hm")["n"] == 4
    assert row(summary, "eurosat", "hm")["n"] == 5


def test_unknown_method_is_an_input_error():
    with pytest.raises(ResultsError, match="no base-to-new runs of method 'coop'"):
        compare_summary(tidy(runs_rows(range(1, 4))), "coop", "prometar")


def test_layout_says_why_two_seeds_cannot_separate():
    """Two seeds: every verdict is "not separable", with the reason and the sign-flip floor noted."""
    table = layout_comparison(compare_summary(tidy(runs_rows((1, 2))), "ivlp", "prometar"))
    text = to_markdown(table)
    verdicts = {r[-1].text for r in table.rows}
    assert verdicts == {"not separable with 2 seeds"}
    assert "fewer than 3 paired seeds" in text
    assert "2/2^n" in text


def write_runs(path, rows) -> None:
    pd.DataFrame(rows).to_csv(path, index=False)


def test_table_runs_prints_intervals_and_the_paired_block(tmp_path):
    """``table --runs`` on 2 methods × 3 datasets × 5 seeds: intervals; ``--compare``: the paired block.

    IVLP on DTD: base 71…75, mean 73, std √2.5 = 1.58, interval 73 ± 2.776445 · 1.5811/√5 = 73 ± 1.96.
    """
    runs = tmp_path / "runs.csv"
    write_runs(runs, runs_rows(range(1, 6)))
    plain = CliRunner().invoke(main, ["table", "--runs", str(runs)])
    assert plain.exit_code == 0, plain.output
    assert "| DTD | IVLP | 5 | 73.00 ± 1.58 [71.04, 74.96] |" in plain.output
    compared = CliRunner().invoke(main, ["table", "--runs", str(runs), "--compare", "ivlp", "prometar"])
    assert compared.exit_code == 0, compared.output
    assert "Paired comparison ProMetaR − IVLP" in compared.output
    assert "ProMetaR better" in compared.output
    assert "not separable with 5 seeds" in compared.output
    assert "Average (3 datasets)" in compared.output


def test_table_compare_with_two_seeds_is_not_separable(tmp_path):
    runs = tmp_path / "runs.csv"
    write_runs(runs, runs_rows((1, 2)))
    result = CliRunner().invoke(main, ["table", "--runs", str(runs), "--compare", "ivlp", "prometar"])
    assert result.exit_code == 0, result.output
    assert "not separable with 2 seeds" in result.output
    assert "better" not in result.output.split("Paired comparison")[1].replace("not separable", "")


def test_table_compare_unknown_method_exits_2(tmp_path):
    runs = tmp_path / "runs.csv"
    write_runs(runs, runs_rows((1, 2, 3)))
    result = CliRunner().invoke(main, ["table", "--runs", str(runs), "--compare", "ivlp", "vpt"])
    assert result.exit_code == 2
    assert "vpt" in result.output and "Traceback" not in result.output


def test_a_dataset_with_one_paired_seed_still_lays_out():
    """One pair: no spread, no interval, no power note for it, and "not separable with 1 seed"."""
    rows = [
        r
        for r in runs_rows((1, 2))
        if not (r["method"] == "prometar" and r["dataset"] == "dtd" and r["seed"] == 2)
    ]
    summary = compare_summary(tidy(rows), "ivlp", "prometar")
    assert row(summary, "dtd", "hm")["verdict"] == "not separable with 1 seed"
    assert pd.isna(row(summary, "dtd", "hm")["seeds_needed"])
    text = to_markdown(layout_comparison(summary))
    assert "| DTD | Base | 1 |" in text and "DTD: separating" not in text


def test_p_values_print_three_decimals_and_small_ones_in_two_significant_digits() -> None:
    """A p-value is never shown as 0.000, and no cell needs a '<' (Markdown would escape it)."""
    from orchestration.results.comparison import _p_text

    assert [_p_text(p) for p in (0.0625, 0.001, 0.00023, float("nan"))] == ["0.062", "0.001", "2.3e-04", "–"]
