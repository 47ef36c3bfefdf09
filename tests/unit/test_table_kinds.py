"""The paper's tables as pure functions of hand-made runs: every number checked by hand."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from hand_runs import HAND_ROWS, SEARCH_SWEEP, ablation_wide, cell, ledger_from, planned_keys, transfer_rows

from orchestration.cli import main
from orchestration.errors import ResultsError
from orchestration.ledger.runs import (
    RUN_COLUMNS,
    attach_params,
    read_runs_csv,
    tidy_from_wide,
)
from orchestration.ledger.vocabulary import SEARCH_GROUP_TAG, TRIAL_KEY_TAG
from orchestration.results.ablation import ablation_summary
from orchestration.results.base2new import BASE2NEW_DATASETS, base2new_summary, layout_base2new
from orchestration.results.context import ResultsContext
from orchestration.results.few_shot import few_shot_summary
from orchestration.results.published import add_published, load_published
from orchestration.results.render import to_csv, to_latex, to_markdown
from orchestration.results.search import search_summary
from orchestration.results.source import load_sweep_context
from orchestration.results.tables import build_tables
from orchestration.results.transfer import transfer_summary
from orchestration.sweeps.planning import load_plan
from prometar.protocols import harmonic_mean


def test_tidy_table_columns_and_values():
    runs = ledger_from(HAND_ROWS).runs
    assert tuple(runs.columns) == RUN_COLUMNS
    assert len(runs) == 2 * len(HAND_ROWS)
    assert set(runs["metric"]) == {"base_acc", "new_acc"}
    assert runs["seed"].dtype == "int64" and runs["shots"].dtype == "int64"


def test_base2new_cells_by_hand():
    summary = base2new_summary(ledger_from(HAND_ROWS).runs, datasets=["dtd", "eurosat"])
    dtd = cell(summary, "prometar", "dtd")
    assert dtd["base"] == pytest.approx(82.0) and dtd["base_std"] == pytest.approx(2.0)
    assert dtd["new"] == pytest.approx(63.0) and dtd["new_std"] == pytest.approx(3.0)
    assert dtd["hm"] == pytest.approx(2 * 82 * 63 / (82 + 63))
    assert dtd["n_seeds"] == 3
    euro = cell(summary, "prometar", "eurosat")
    assert euro["base"] == pytest.approx(90.5) and euro["base_std"] == pytest.approx(math.sqrt(0.5))
    assert euro["new"] == pytest.approx(72.0) and euro["new_std"] == pytest.approx(math.sqrt(8.0))
    assert euro["hm"] == pytest.approx(2 * 90.5 * 72 / 162.5)
    assert euro["n_seeds"] == 2
    average = cell(summary, "prometar", "average")
    assert average["base"] == pytest.approx(86.25)
    assert average["new"] == pytest.approx(67.5)
    assert average["hm"] == pytest.approx(2 * 86.25 * 67.5 / (86.25 + 67.5))
    mean_of_hms = (dtd["hm"] + euro["hm"]) / 2
    assert abs(average["hm"] - mean_of_hms) > 1e-3  # HM of means, never the mean of HMs
    assert average["missing"] == ""
    single = cell(summary, "coop", "dtd")
    assert single["base"] == 85.0 and math.isnan(single["base_std"]) and single["n_seeds"] == 1
    # Order: per method (paper order: coop before prometar), Average first, then datasets.
    assert list(summary["method"]) == ["coop"] * 3 + ["prometar"] * 3
    assert list(summary["dataset"])[:3] == ["average", "dtd", "eurosat"]


def test_harmonic_mean_edges():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(9600 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_mean(80.0, math.nan))


def test_missing_dataset_empties_average_and_names_it():
    summary = base2new_summary(ledger_from(HAND_ROWS).runs, datasets=["dtd", "eurosat", "ucf101"])
    average = cell(summary, "prometar", "average")
    assert math.isnan(average["base"]) and math.isnan(average["new"]) and math.isnan(average["hm"])
    assert average["missing"] == "ucf101"
    assert cell(summary, "prometar", "ucf101")["missing"] == "no runs"
    text = to_markdown(layout_base2new(summary))
    assert "missing: ucf101" in text


def test_dataset_outside_grid_is_shown_but_not_averaged():
    summary = base2new_summary(ledger_from(HAND_ROWS).runs, datasets=["dtd"])
    assert cell(summary, "prometar", "average")["base"] == pytest.approx(82.0)
    assert cell(summary, "prometar", "eurosat")["base"] == pytest.approx(90.5)


def test_default_grid_is_the_paper_order():
    rows = [("prometar", d, 1, 50.0, 40.0) for d in reversed(BASE2NEW_DATASETS)]
    summary = base2new_summary(ledger_from(rows).runs)
    assert list(summary["dataset"]) == ["average", *BASE2NEW_DATASETS]
    table = layout_base2new(summary)
    labels = [r[0].text for r in table.rows]
    assert labels[:4] == ["Average", "ImageNet", "Caltech101", "OxfordPets"]
    assert labels[-4:] == ["SUN397", "DTD", "EuroSAT", "UCF101"]


def test_two_runs_for_one_seed_is_an_error():
    rows = [*HAND_ROWS, ("prometar", "dtd", 1, 70.0, 50.0)]
    with pytest.raises(ResultsError, match="several runs for method=prometar, shots=16, dataset=dtd, seed=1"):
        base2new_summary(ledger_from(rows).runs, datasets=["dtd", "eurosat"])


def test_published_comparison_flags_beyond_one_point_and_two_std():
    published = pd.DataFrame(
        {
            "method": ["prometar"] * 2,
            "dataset": ["dtd", "eurosat"],
            "base": [80.5, 90.0],
            "new": [63.5, 69.0],
            "hm": [70.0, 79.0],
            "provenance": ["published", "recalled"],
        }
    )
    summary = add_published(
        base2new_summary(ledger_from(HAND_ROWS).runs, datasets=["dtd", "eurosat"]),
        published,
        datasets=["dtd", "eurosat"],
    )
    dtd = cell(summary, "prometar", "dtd")
    # base: Δ=+1.5 > 1 point but < 2·std = 4 -> not flagged; new: Δ=-0.5 -> not flagged.
    assert dtd["delta_base"] == pytest.approx(1.5) and not dtd["flag_base"]
    assert dtd["delta_new"] == pytest.approx(-0.5) and not dtd["flag_new"]
    assert dtd["delta_hm"] == pytest.approx(2 * 82 * 63 / 145 - 70.0) and dtd["flag_hm"]  # 1.26 > 1, no std
    euro = cell(summary, "prometar", "eurosat")
    # base: Δ=0.5 -> no; new: Δ=3.0 vs 2·std=5.66 -> no.
    assert not euro["flag_base"] and not euro["flag_new"]
    assert cell(summary, "coop", "dtd")["provenance"] == ""
    table = layout_base2new(summary)
    text = to_markdown(table)
    assert "~90.00" in text  # approximate provenance marked
    assert "†" in text and any("†" in n for n in table.notes)
    assert list(summary.columns[:5]) == ["method", "dataset", "base", "new", "hm"]


def test_each_cell_shows_its_std_interval_and_seed_count():
    """dtd ProMetaR: 80, 82, 84 → 82 ± 2, interval 82 ± 4.30265 · 2/√3 = [77.03, 86.97], n 3.

    eurosat ProMetaR: 90, 91 → 90.5 ± 0.71, interval 90.5 ± 12.706 · 0.7071/√2 = [84.15, 96.85];
    CoOp has one seed per dataset: no std, no interval.
    """
    summary = base2new_summary(ledger_from(HAND_ROWS).runs, datasets=["dtd", "eurosat"])
    text = to_markdown(layout_base2new(summary)).replace("**", "")
    assert "|  | ProMetaR | 3 | 82.00 ± 2.00 [77.03, 86.97] |" in text
    assert "| ProMetaR | 2 | 90.50 ± 0.71 [84.15, 96.85] |" in text
    assert "| CoOp | 1 | 89.00 |" in text
    assert any("fewer seeds than the sweep's 3" in line for line in text.splitlines())
    dtd = cell(summary, "prometar", "dtd")
    assert dtd["base_low"] == pytest.approx(77.0317, abs=1e-4)
    assert dtd["base_high"] == pytest.approx(86.9683, abs=1e-4)
    assert dtd["hm_low"] <= dtd["hm"] <= dtd["hm_high"]


def test_best_per_column_is_bold():
    table = layout_base2new(base2new_summary(ledger_from(HAND_ROWS).runs, datasets=["dtd", "eurosat"]))
    # block "dtd": coop base 85 > prometar 82; prometar new 63 > coop 50.
    dtd_rows = table.rows[2:4]
    coop, prometar = dtd_rows
    assert coop[3].bold and not prometar[3].bold
    assert prometar[4].bold and not coop[4].bold


def test_markdown_is_a_table():
    text = to_markdown(
        layout_base2new(base2new_summary(ledger_from(HAND_ROWS).runs, datasets=["dtd", "eurosat"]))
    )
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 6  # header, separator, 2 methods x 3 blocks
    widths = {line.count("|") - line.count("\\|") for line in lines}
    assert widths == {7}
    assert re.fullmatch(r"\|(:?-+:?\|)+", lines[1])


def test_latex_booktabs_balanced_and_escaped():
    summary = base2new_summary(ledger_from(HAND_ROWS).runs, datasets=["dtd", "eurosat", "oxford_pets"])
    text = to_latex(layout_base2new(summary))
    assert text.count("{") == text.count("}")
    depth = 0
    for ch in text.replace(r"\{", "").replace(r"\}", ""):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{table}"):
        assert rule in text
    assert r"$\pm$" in text and r"\textbf{" in text
    assert r"missing: oxford\_pets" in text  # underscores escaped
    body = [line for line in text.splitlines() if line.endswith(r"\\")]
    assert {line.count(" & ") for line in body} == {5}  # 6 columns everywhere


def test_csv_one_row_per_method_and_dataset():
    published = load_published()
    summary = add_published(
        base2new_summary(ledger_from(HAND_ROWS).runs, datasets=["dtd", "eurosat"]),
        published,
        datasets=["dtd", "eurosat"],
    )
    text = to_csv(summary)
    back = pd.read_csv(pd.io.common.StringIO(text))
    assert list(back.columns[:5]) == ["method", "dataset", "base", "new", "hm"]
    for column in ("base_std", "new_std", "n_seeds", "paper_base", "delta_hm", "provenance"):
        assert column in back.columns
    assert not back.duplicated(["method", "dataset"]).any()
    assert set(back["dataset"]) == {"average", "dtd", "eurosat"}
    average = back[(back["method"] == "prometar") & (back["dataset"] == "average")].iloc[0]
    # The paper's Average over the same two datasets: (83.02 + 94.94) / 2.
    assert average["base"] == pytest.approx(86.25) and average["paper_base"] == pytest.approx(88.98)
    assert average["paper_over"] == "paper, same 2 datasets"
    for column in ("base_low", "base_high", "new_low", "new_high", "hm_low", "hm_high", "source"):
        assert column in back.columns


def test_runs_csv_round_trip_and_errors(tmp_path: Path):
    path = tmp_path / "runs.csv"
    pd.DataFrame(HAND_ROWS, columns=["method", "dataset", "seed", "base_acc", "new_acc"]).assign(
        shots=16
    ).to_csv(path, index=False)
    ledger = read_runs_csv(path)
    summary = base2new_summary(ledger.runs, datasets=["dtd", "eurosat"])
    assert cell(summary, "prometar", "average")["base"] == pytest.approx(86.25)
    bad = tmp_path / "bad.csv"
    bad.write_text("method,dataset,seed,base_acc\nprometar,dtd,1,80\n")
    with pytest.raises(ResultsError, match=r"bad.csv: missing column\(s\) shots, new_acc"):
        read_runs_csv(bad)
    worse = tmp_path / "worse.csv"
    worse.write_text("method,dataset,seed,shots,base_acc,new_acc\nprometar,dtd,one,16,80,60\n")
    with pytest.raises(ResultsError, match="worse.csv: column 'seed' must hold integers"):
        read_runs_csv(worse)
    with pytest.raises(ResultsError, match="nope.csv: runs CSV not found"):
        read_runs_csv(tmp_path / "nope.csv")


def test_domain_generalisation_by_hand():
    ledger = transfer_rows(
        "domain_generalization",
        {
            "imagenet_v2": [64.0, 66.0],
            "imagenet_sketch": [48.0, 50.0],
            "imagenet_a": [50.0, 52.0],
            "imagenet_r": [76.0, 78.0],
        },
        source=[71.0, 73.0],
    )
    (table,) = build_tables(ledger)
    summary = table.summary.set_index("column")
    assert summary.loc["source", "mean"] == pytest.approx(72.0)
    assert summary.loc["imagenet_v2", "mean"] == pytest.approx(65.0)
    assert summary.loc["imagenet_v2", "std"] == pytest.approx(math.sqrt(2))
    assert summary.loc["target_mean", "mean"] == pytest.approx((65 + 49 + 51 + 77) / 4)
    text = table.render("markdown")
    assert "ImageNet-Sketch" in text and "Target mean" in text and "(n=2)" in text


def test_cross_dataset_missing_target_is_named():
    ledger = transfer_rows("cross_dataset", {"dtd": [45.0], "eurosat": [48.0]}, source=[71.0])
    summary = transfer_summary(ledger.runs, protocol="cross_dataset", targets=["dtd", "eurosat", "ucf101"])
    mean = summary[summary["column"] == "target_mean"].iloc[0]
    assert math.isnan(mean["mean"]) and mean["missing"] == "ucf101"
    summary = transfer_summary(ledger.runs, protocol="cross_dataset", targets=["dtd", "eurosat"])
    assert summary[summary["column"] == "target_mean"].iloc[0]["mean"] == pytest.approx(46.5)


def test_few_shot_by_hand():
    rows = []
    for shots, values in ((1, [60.0, 62.0]), (16, [80.0, 84.0])):
        for seed, acc in enumerate(values, start=1):
            rows.append({"method": "coop", "dataset": "dtd", "seed": seed, "shots": shots, "acc": acc})
            rows.append(
                {"method": "coop", "dataset": "eurosat", "seed": seed, "shots": shots, "acc": acc + 10}
            )
    ledger = tidy_from_wide(pd.DataFrame(rows).assign(protocol="all_classes"), source="hand")
    summary = few_shot_summary(ledger.runs, datasets=["dtd", "eurosat"])
    one = summary[(summary["dataset"] == "average") & (summary["shots"] == 1)].iloc[0]
    assert one["acc"] == pytest.approx((61 + 71) / 2)
    dtd16 = summary[(summary["dataset"] == "dtd") & (summary["shots"] == 16)].iloc[0]
    assert dtd16["acc"] == pytest.approx(82.0) and dtd16["acc_std"] == pytest.approx(math.sqrt(8))
    (table,) = build_tables(
        ledger, ResultsContext(protocol="few_shot", datasets=("dtd", "eurosat"), expected_seeds=2)
    )
    assert table.display.header == ["Dataset", "Method", "K=1", "K=16"]


def test_ablation_one_row_per_setting():
    rows = []
    for gate, offset in (("on", 2.0), ("off", 0.0)):
        for dataset in ("dtd", "eurosat"):
            rows.append(
                {
                    "method": "prometar",
                    "dataset": dataset,
                    "seed": 1,
                    "shots": 16,
                    "base_acc": 80.0 + offset,
                    "new_acc": 60.0 + offset,
                    "meta.gate": gate,
                }
            )
    ledger = tidy_from_wide(pd.DataFrame(rows), source="hand")
    runs = attach_params(ledger.runs, ledger.params, ["meta.gate"])
    summary = ablation_summary(runs, ["meta.gate"], datasets=["dtd", "eurosat"])
    assert list(summary["meta.gate"]) == ["off", "on"]
    assert list(summary["base"]) == [80.0, 82.0]
    assert summary["hm"].iloc[1] == pytest.approx(2 * 82 * 62 / 144)
    with pytest.raises(ResultsError, match="unknown param"):
        attach_params(ledger.runs, ledger.params, ["meta.nope"])


def test_search_top_k():
    rows = []
    for i, weight in enumerate([5.0, 20.0, 80.0]):
        for seed in (1, 2):
            rows.append(
                {
                    "method": "prometar",
                    "dataset": "dtd",
                    "seed": seed,
                    "shots": 16,
                    "protocol": "search",
                    "val_hm": 70.0 + i + seed,
                    "val_base": 80.0,
                    "regularizer.text_weight": weight,
                }
            )
    ledger = tidy_from_wide(pd.DataFrame(rows), source="hand")
    runs = attach_params(ledger.runs, ledger.params, ["regularizer.text_weight"])
    summary = search_summary(runs, ["regularizer.text_weight"], top_k=2)
    assert list(summary["rank"]) == [1, 2]
    assert list(summary["regularizer.text_weight"].astype(float)) == [80.0, 20.0]
    assert summary["val_hm"].iloc[0] == pytest.approx(73.5) and summary["n_runs"].iloc[0] == 2
    (table,) = build_tables(ledger)  # searched params inferred: the ones that vary
    assert table.name == "search" and "regularizer.text_weight" in table.display.header


def test_sweep_context(tmp_path: Path):
    path = tmp_path / "toy.yaml"
    path.write_text(
        "protocol: base2new\ngrid:\n  method: [prometar]\n  dataset: [eurosat, dtd]\n  seed: [1, 2]\n"
    )
    summary = load_sweep_context(path)
    assert (summary.name, summary.datasets, summary.protocol, summary.search_space) == (
        "toy",
        ("eurosat", "dtd"),
        "base2new",
        (),
    )
    assert summary.planned.tag == TRIAL_KEY_TAG
    assert summary.planned.keys == set(planned_keys(path).values()) and len(summary.planned.keys) == 4
    edited = load_sweep_context(path, overrides={"optim.epochs": 5})  # `launch --set optim.epochs=5`
    assert len(edited.planned.keys) == 4 and not edited.planned.keys & summary.planned.keys

    search = tmp_path / "search.yaml"
    search.write_text(SEARCH_SWEEP.replace("[dtd]", "[dtd, eurosat]"))
    summary = load_sweep_context(search)
    assert (summary.name, summary.datasets, summary.search_space) == (
        "search",
        ("dtd", "eurosat"),
        ("regularizer.text_weight",),
    )
    assert summary.planned.tag == SEARCH_GROUP_TAG
    assert summary.planned.keys == {g.key for g in load_plan(search).groups}
    assert len(summary.planned.keys) == 2

    fixed = tmp_path / "fixed.yaml"  # the dataset is an override, not a grid axis
    fixed.write_text(
        "name: one\nprotocol: few_shot\noverrides:\n  data.dataset: dtd\ngrid:\n  method: [coop]\n"
    )
    assert (load_sweep_context(fixed).name, load_sweep_context(fixed).datasets) == ("one", ("dtd",))
    assert load_sweep_context(fixed).protocol == "few_shot"

    (tmp_path / "bad.yaml").write_text("grid: [1, 2]\n")
    with pytest.raises(ResultsError, match="bad.yaml: grid: must be a mapping"):
        load_sweep_context(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("grid:\n  method: [prometar]\n  dataset: [dtd, nope]\n")
    with pytest.raises(ResultsError, match=r"typo.yaml: grid.dataset\[1\]: unknown dataset 'nope'"):
        load_sweep_context(tmp_path / "typo.yaml")
    with pytest.raises(ResultsError, match="toy.yaml: overrides.optim.epochz: unknown key"):
        load_sweep_context(path, overrides={"optim.epochz": 5})
    with pytest.raises(ResultsError, match="absent.yaml: no such sweep file"):
        load_sweep_context(tmp_path / "absent.yaml")


def test_build_tables_gives_the_ablation_table_for_shared_cells():
    ledger = tidy_from_wide(ablation_wide(), source="hand")
    (table,) = build_tables(ledger, ResultsContext(datasets=("dtd", "eurosat"), published=load_published()))
    assert table.name == "ablation"
    summary = table.summary
    assert list(summary.columns[:2]) == ["meta.gate_mode", "method"]  # grouped by the arm's key only
    assert list(summary["meta.gate_mode"]) == ["constant", "learned"]
    constant, learned = (summary.iloc[i] for i in (0, 1))
    assert (constant["base"], constant["new"]) == (pytest.approx(84.0), pytest.approx(63.0))
    assert constant["hm"] == pytest.approx(72.0)
    assert (learned["base"], learned["new"]) == (pytest.approx(86.5), pytest.approx(66.5))
    assert learned["hm"] == pytest.approx(2 * 86.5 * 66.5 / 153)
    assert list(summary["n_seeds"]) == [2, 2] and list(summary["missing"]) == ["", ""]
    text = table.render("markdown")
    assert "| constant | 84.00 | 63.00 | 72.00 |" in text
    assert "| learned | **86.50** | **66.50** | **75.19** |" in text


def test_no_shared_cells_keeps_the_base2new_table():
    wide = ablation_wide()
    wide = wide[wide["meta.gate_mode"] == "learned"].assign(**{"optim.lr": [1e-3, 1e-3, 2e-3, 2e-3]})
    ledger = tidy_from_wide(wide, source="hand")
    (table,) = build_tables(ledger, ResultsContext(datasets=("dtd", "eurosat")))
    assert table.name == "base2new"
    assert cell(table.summary, "prometar", "average")["base"] == pytest.approx(86.5)


def test_shared_cell_without_a_differing_result_param_is_an_error():
    wide = ablation_wide().assign(**{"meta.gate_mode": "learned"})  # arms differ in loader workers only
    with pytest.raises(
        ResultsError,
        match="several runs for method=prometar, shots=16, dataset=dtd, seed=1 "
        r"\(runs hand:2, hand:6\) and no result-changing config param",
    ):
        build_tables(tidy_from_wide(wide, source="hand"), ResultsContext(datasets=("dtd", "eurosat")))
    with pytest.raises(ResultsError, match="no result-changing config param"):
        build_tables(tidy_from_wide(wide.drop(columns=["optim.lr", "data.num_workers"]), source="hand"))


SUBSET_CSV = (
    "method,dataset,seed,shots,base_acc,new_acc\n"
    "prometar,dtd,1,16,80,60\nprometar,eurosat,1,16,90,70\nprometar,oxford_flowers,1,16,70,50\n"
)
"""ProMetaR on 3 of the 11 datasets, one seed: Average base (80+90+70)/3 = 80, new 60, HM 68.571."""


def _table_csv(*args: str) -> pd.DataFrame:
    result = CliRunner().invoke(main, ["table", *args, "--format", "csv"])
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout), keep_default_na=False, na_values=[""])


def test_a_runs_csv_without_a_sweep_averages_over_its_own_datasets(tmp_path: Path):
    """No sweep file: the Average is over the CSV's 3 datasets (not empty for want of the other 8),
    the tables say so, and the paper's Average beside it is the paper's numbers over the same 3 —
    never the paper's 11-dataset Average."""
    runs = tmp_path / "runs.csv"
    runs.write_text(SUBSET_CSV)
    average = cell(_table_csv("--runs", str(runs)), "prometar", "average")
    assert (average["base"], average["new"]) == (pytest.approx(80.0), pytest.approx(60.0))
    assert average["hm"] == pytest.approx(2 * 80 * 60 / 140, abs=1e-4) and pd.isna(average["missing"])
    published = load_published()
    ours = published[(published["method"] == "prometar")].set_index("dataset")
    subset = ours.loc[["dtd", "eurosat", "oxford_flowers"]]
    assert average["paper_base"] == pytest.approx(subset["base"].mean(), abs=1e-4)
    assert average["paper_new"] == pytest.approx(subset["new"].mean(), abs=1e-4)
    assert average["paper_base"] != pytest.approx(ours.loc["average", "base"], abs=0.01)  # not the 11's
    assert average["paper_over"] == "paper, same 3 datasets"

    text = CliRunner().invoke(main, ["table", "--runs", str(runs)]).output
    assert "Average: over the 3 datasets of the runs CSV (Flowers102, DTD, EuroSAT;" in text
    assert "the paper's Average (over its 11) is not compared with it" in text
    bare = CliRunner().invoke(main, ["table", "--runs", str(runs), "--no-published"]).output
    assert "Average: over the 3 datasets of the runs CSV" in bare and "paper" not in bare


def test_a_runs_csv_with_a_sweep_averages_over_the_sweeps_grid(tmp_path: Path):
    """With a sweep file its grid decides, as before: a dataset of the grid without runs empties the
    Average and is named; no note about the CSV's datasets."""
    runs = tmp_path / "runs.csv"
    runs.write_text(SUBSET_CSV)
    datasets = ["dtd", "eurosat", "oxford_flowers", "ucf101"]
    sweeps = {}
    for name, grid in (("four", datasets), ("three", datasets[:3])):
        sweeps[name] = tmp_path / f"{name}.yaml"
        spec = {"name": name, "protocol": "base2new", "grid": {"method": ["prometar"], "dataset": grid}}
        sweeps[name].write_text(yaml.safe_dump(spec))
    average = cell(_table_csv(str(sweeps["four"]), "--runs", str(runs)), "prometar", "average")
    assert math.isnan(average["base"]) and average["missing"] == "ucf101"
    average = cell(_table_csv(str(sweeps["three"]), "--runs", str(runs)), "prometar", "average")
    assert average["base"] == pytest.approx(80.0)
    text = CliRunner().invoke(main, ["table", str(sweeps["three"]), "--runs", str(runs)]).output
    assert "of the runs CSV" not in text and "paper, same 3 datasets" in text
