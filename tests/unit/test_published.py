"""The published reference: every row sourced, its variants, and Averages over the same datasets."""

from __future__ import annotations

import pandas as pd
import pytest

from orchestration.errors import ResultsError
from orchestration.results.published import (
    DEFAULT_VARIANT,
    VARIANTS,
    add_published,
    default_published_path,
    load_published,
    subset_average,
)
from prometar.data import catalog
from prometar.protocols import harmonic_mean


def test_every_shipped_row_names_its_source():
    """Each row says where its numbers come from: a repository file at a commit, recalled or derived."""
    raw = pd.read_csv(default_published_path(), keep_default_na=False)
    assert "source" in raw.columns
    assert (raw["source"].str.strip() != "").all()
    for source in raw["source"]:
        assert source.startswith(("recalled: ", "derived: ")) or "commit " in source, source
    # A number checked against a fetched source carries "published"; nothing else does.
    checked = raw[raw["provenance"] == "published"]
    assert checked["source"].str.contains("commit ").all()


def test_ivlp_row_comes_from_promptsrc_readme():
    """PromptSRC's README prints the Independent V-L Prompting average: 84.21 / 71.79 / 77.51."""
    published = load_published()
    ivlp = published[(published["method"] == "ivlp") & (published["dataset"] == "average")].iloc[0]
    assert (ivlp["base"], ivlp["new"], ivlp["hm"]) == (84.21, 71.79, 77.51)
    assert "muzairkhattak/PromptSRC" in ivlp["source"]


def test_coop_row_has_two_published_variants():
    """PromptSRC's CoOp row is the default; KgCoOp's README prints another (average only)."""
    assert DEFAULT_VARIANT in VARIANTS and "kgcoop" in VARIANTS

    def coop(variant: str) -> pd.DataFrame:
        published = load_published(variant=variant)
        return published[published["method"] == "coop"]

    default = coop(DEFAULT_VARIANT)
    average = default[default["dataset"] == "average"].iloc[0]
    assert (average["base"], average["new"], average["hm"]) == (82.69, 63.22, 71.66)
    assert len(default) == 12  # 11 datasets and the Average
    kgcoop = coop("kgcoop")
    assert list(kgcoop["dataset"]) == ["average"]
    assert tuple(kgcoop.iloc[0][["base", "new", "hm"]]) == (82.63, 67.99, 74.60)
    with pytest.raises(ResultsError, match="no published variant 'coop2'.*kgcoop, promptsrc"):
        load_published(variant="coop2")


def test_published_averages_are_reproduced_by_their_per_dataset_rows():
    """The Average of each method's per-dataset numbers is its printed Average (to rounding).

    Rows derived from that same Average (ProMetaR's UCF101) make the check circular: a method with
    one is left out, and so is a method with no per-dataset numbers (IVLP).
    """
    published = load_published()
    derived = set(published.loc[published["source"].str.startswith("derived: "), "method"])
    assert derived == {"prometar"}
    checked = 0
    for method, rows in published.groupby("method"):
        per_dataset = rows[rows["dataset"] != "average"]
        if method in derived or len(per_dataset) != len(catalog.BASE_TO_NEW_DATASETS):
            continue
        printed = rows[rows["dataset"] == "average"].iloc[0]
        base, new = per_dataset["base"].mean(), per_dataset["new"].mean()
        assert base == pytest.approx(printed["base"], abs=0.01 + 1e-9), method
        assert new == pytest.approx(printed["new"], abs=0.01 + 1e-9), method
        assert harmonic_mean(base, new) == pytest.approx(printed["hm"], abs=0.01 + 1e-9), method
        checked += 1
    assert checked == 6  # zero-shot, CoOp, CoCoOp, KgCoOp, MaPLe, PromptSRC


def test_subset_average_is_recomputed_from_the_per_dataset_numbers():
    """Over DTD and EuroSAT the paper's ProMetaR Average is ((83.02 + 94.94)/2, (64.05 + 77.44)/2).

    Base 88.98, new 70.745, HM = 2 · 88.98 · 70.745 / 159.725 = 78.82. IVLP has no per-dataset
    numbers: no recomputed Average.
    """
    published = load_published()
    average = subset_average(published, ["dtd", "eurosat"])
    prometar = average[average["method"] == "prometar"].iloc[0]
    assert prometar["base"] == pytest.approx(88.98)
    assert prometar["new"] == pytest.approx(70.745)
    assert prometar["hm"] == pytest.approx(2 * 88.98 * 70.745 / 159.725)
    assert prometar["source"].startswith("paper, same 2 datasets")
    assert "ivlp" not in set(average["method"])
    full = subset_average(published, list(reversed(catalog.BASE_TO_NEW_DATASETS)))
    assert full[full["method"] == "prometar"].iloc[0]["base"] == 84.39  # the printed 11-dataset row


def test_a_three_dataset_comparison_never_shows_the_eleven_dataset_average():
    """Our Average over 3 datasets stands beside the paper's over the same 3, never its 11-dataset row."""
    datasets = ["dtd", "eurosat", "oxford_flowers"]
    summary = pd.DataFrame(
        {
            "method": ["prometar", "ivlp"],
            "dataset": ["average", "average"],
            "base": [80.0, 81.0],
            "new": [70.0, 69.0],
            "hm": [harmonic_mean(80.0, 70.0), harmonic_mean(81.0, 69.0)],
        }
    )
    merged = add_published(summary, load_published(), datasets=datasets)
    prometar = merged[merged["method"] == "prometar"].iloc[0]
    expected_base = (83.02 + 94.94 + 98.13) / 3
    assert prometar["paper_base"] == pytest.approx(expected_base)
    assert prometar["paper_base"] != 84.39
    assert prometar["paper_over"] == "paper, same 3 datasets"
    ivlp = merged[merged["method"] == "ivlp"].iloc[0]
    assert pd.isna(ivlp["paper_base"]) and ivlp["paper_over"] == ""  # IVLP: an 11-dataset Average only
    eleven = add_published(summary, load_published(), datasets=catalog.BASE_TO_NEW_DATASETS)
    assert eleven[eleven["method"] == "ivlp"].iloc[0]["paper_base"] == 84.21


def test_a_reference_with_two_rows_for_one_cell_is_refused(tmp_path):
    """Two rows for one (method, dataset) without a variant to tell them apart: an error naming the file."""
    path = tmp_path / "published.csv"
    path.write_text("method,dataset,base,new,hm\ncoop,dtd,1,2,3\ncoop,dtd,4,5,6\n")
    with pytest.raises(ResultsError, match=r"published.csv: several rows for method 'coop', dataset 'dtd'"):
        load_published(path)
