"""Tables from hand-made runs: every number checked against arithmetic done by hand."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.errors import ResultsError
from orchestration.ledger.runs import (
    RUN_COLUMNS,
    attach_params,
    read_experiment,
    read_runs_csv,
    tidy_from_wide,
)
from orchestration.ledger.runs import RunsTable as Ledger
from orchestration.ledger.vocabulary import SEARCH_GROUP_TAG, TRIAL_KEY_TAG
from orchestration.results.ablation import ablation_summary
from orchestration.results.base2new import BASE2NEW_DATASETS, base2new_summary, layout_base2new
from orchestration.results.context import ResultsContext
from orchestration.results.few_shot import few_shot_summary
from orchestration.results.publish import publish
from orchestration.results.published import add_published, load_published
from orchestration.results.render import to_csv, to_latex, to_markdown
from orchestration.results.search import search_summary
from orchestration.results.source import load_source, load_sweep_context
from orchestration.results.tables import build_tables
from orchestration.results.transfer import transfer_summary
from orchestration.sweeps.planning import load_plan
from prometar.protocols import harmonic_mean

# dtd: 3 seeds; eurosat: 2 seeds. Means and sample std (ddof=1) computed by hand below.
HAND_ROWS = [
    # method, dataset, seed, base, new
    ("prometar", "dtd", 1, 80.0, 60.0),
    ("prometar", "dtd", 2, 82.0, 63.0),
    ("prometar", "dtd", 3, 84.0, 66.0),
    ("prometar", "eurosat", 1, 90.0, 70.0),
    ("prometar", "eurosat", 2, 91.0, 74.0),
    ("coop", "dtd", 1, 85.0, 50.0),
    ("coop", "eurosat", 1, 89.0, 80.0),
]


def ledger_from(rows, protocol: str = "base2new", shots: int = 16) -> Ledger:
    wide = pd.DataFrame(rows, columns=["method", "dataset", "seed", "base_acc", "new_acc"])
    wide["shots"] = shots
    wide["protocol"] = protocol
    return tidy_from_wide(wide, source="hand")


def cell(summary: pd.DataFrame, method: str, dataset: str) -> pd.Series:
    rows = summary[(summary["method"] == method) & (summary["dataset"] == dataset)]
    assert len(rows) == 1
    return rows.iloc[0]


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
    assert (dtd["base_low"], dtd["base_high"]) == (
        pytest.approx(77.0317, abs=1e-4),
        pytest.approx(86.9683, abs=1e-4),
    )
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


def transfer_rows(protocol: str, targets: dict[str, list[float]], source: list[float]) -> Ledger:
    records = []
    for seed, source_acc in enumerate(source, start=1):
        record = {
            "method": "prometar",
            "dataset": "imagenet",
            "seed": seed,
            "shots": 16,
            "protocol": protocol,
            "acc/imagenet": source_acc,
        }
        for target, values in targets.items():
            if seed <= len(values):
                record[f"acc/{target}"] = values[seed - 1]
        records.append(record)
    return tidy_from_wide(pd.DataFrame(records), source="hand")


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


TOY_SWEEP = "grid:\n  method: [prometar]\n  dataset: [dtd, eurosat]\n  seed: [1, 2, 3]\n"
"""The sweep of the hand-made MLflow store: ProMetaR x (dtd, eurosat) x seeds 1-3 (experiment ``toy``)."""

SEARCH_SWEEP = (
    "grid:\n  method: [prometar]\n  dataset: [dtd]\n  seed: [1]\n"
    "search:\n  num_samples: 2\n  space:\n    regularizer.text_weight: {loguniform: [5, 200]}\n"
)


def planned_keys(sweep: Path, overrides: dict | None = None) -> dict[tuple[str, int], str]:
    """(dataset, seed) -> the trial key a launch of ``sweep`` (with ``--set overrides``) records."""
    return {(t.dataset, t.seed): t.key for t in load_plan(sweep, overrides=overrides).trials}


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


# ------------------------------------------------------------------------------------ MLflow ledger


def log_child(
    uri: str,
    key: str,
    dataset: str,
    seed: int,
    base: float,
    new: float,
    *,
    status: str = "FINISHED",
    start: int = 0,
    params: dict | None = None,
    experiment: str = "toy",
) -> str:
    """One hand-made child run of trial ``key`` (ProMetaR, 16 shots, base-to-new); returns its id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    tags = {
        TRIAL_KEY_TAG: key,
        "method": "prometar",
        "dataset": dataset,
        "seed": str(seed),
        "shots": "16",
        "protocol": "base2new",
        "sweep": experiment,
    }
    run = client.create_run(experiment_id, tags=tags, start_time=1_000 + start).info.run_id
    metrics = [Metric("base_acc", base, 0, 0), Metric("new_acc", new, 0, 0)]
    metrics += [Metric("loss", 2.0 - 0.5 * e, 0, e) for e in range(3)]
    metrics += [Metric("gate_mean/text", 0.5 + 0.1 * e, 0, e) for e in range(3)]
    logged = {"optim.lr": "0.0025", **(params or {})}
    client.log_batch(run, metrics=metrics, params=[Param(k, v) for k, v in logged.items()])
    client.set_terminated(run, status=status)
    return run


def make_store(tmp_path: Path) -> tuple[str, str]:
    """A SQLite store of the runs ``toy.yaml`` (:data:`TOY_SWEEP`, written beside it) plans: a parent
    run and children under the planned trial keys; eurosat seed 1 was rerun (the first run is
    superseded), eurosat seed 3 FAILED.
    """
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = tmp_path / "toy.yaml"
    sweep.write_text(TOY_SWEEP)
    keys = planned_keys(sweep)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("toy", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment_id, tags={"prometar.role": "launch"}).info.run_id
    for seed, (base, new) in enumerate([(80.0, 60.0), (82.0, 63.0), (84.0, 66.0)], start=1):
        log_child(uri, keys["dtd", seed], "dtd", seed, base, new)
    log_child(uri, keys["eurosat", 1], "eurosat", 1, 10.0, 10.0, start=1)  # superseded by the rerun below
    log_child(uri, keys["eurosat", 1], "eurosat", 1, 90.0, 70.0, start=2)
    log_child(uri, keys["eurosat", 2], "eurosat", 2, 91.0, 74.0)
    log_child(uri, keys["eurosat", 3], "eurosat", 3, 0.0, 0.0, status="FAILED")
    client.set_terminated(parent)
    return uri, parent


def publish_experiment(
    experiment: str,
    uri: str,
    folder: Path,
    *,
    datasets: tuple[str, ...] | list[str] = (),
    parent_run_id: str | None = None,
    context: ResultsContext | None = None,
) -> dict[str, Path]:
    """An experiment's tables written (and logged on ``parent_run_id``) as the launch's end writes them."""
    if context is None:
        context = ResultsContext(name=experiment, datasets=tuple(datasets))
    context = replace(context, tracking_uri=uri, experiment=experiment).with_published()
    runs = read_experiment(experiment, uri, planned=context.planned)
    done = publish(context, runs, figures=False, tables_dir=folder, log_to=parent_run_id)
    return {path.name: path for path in done.tables_files}


def test_mlflow_round_trip(tmp_path: Path):
    uri, parent = make_store(tmp_path)
    ledger = read_experiment("toy", uri)
    assert ledger.runs["run_id"].nunique() == 5  # FAILED and superseded runs left out, parent has no key
    assert set(ledger.curve_metrics) == {"loss", "gate_mean/text"}
    assert list(ledger.params.columns) == ["optim.lr"]
    summary = base2new_summary(ledger.runs, datasets=["dtd", "eurosat"])
    assert cell(summary, "prometar", "average")["base"] == pytest.approx(86.25)
    assert cell(summary, "prometar", "eurosat")["n_seeds"] == 2
    with pytest.raises(ResultsError, match="experiment 'nope' not found"):
        read_experiment("nope", uri)
    with pytest.raises(ResultsError, match="no MLflow ledger at"):
        read_experiment("toy", f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()


def test_render_tables_for_experiment_logs_artifacts(tmp_path: Path):
    from mlflow import MlflowClient

    uri, parent = make_store(tmp_path)
    written = publish_experiment(
        "toy", uri, tmp_path / "tables", datasets=["dtd", "eurosat"], parent_run_id=parent
    )
    assert sorted(written) == ["base2new.csv", "base2new.md", "base2new.tex"]
    assert "86.25" in written["base2new.md"].read_text()
    logged = {Path(f.path).name for f in MlflowClient(uri).list_artifacts(parent, "tables")}
    assert logged == set(written)
    # launch renders the tables of its sweep's planned runs only: a FINISHED run of another
    # configuration of the dtd seed-1 cell stays out of them
    log_child(uri, "0123456789ab", "dtd", 1, 10.0, 10.0)
    with pytest.raises(ResultsError, match="several runs for method=prometar"):
        publish_experiment("toy", uri, tmp_path / "all", datasets=["dtd", "eurosat"])
    summary = load_sweep_context(tmp_path / "toy.yaml")
    written = publish_experiment("toy", uri, tmp_path / "planned", context=summary)
    assert "86.25" in written["base2new.md"].read_text() and summary.expected_seeds == 3


def test_cli_table_from_sweep_and_from_csv(tmp_path: Path):
    uri, _ = make_store(tmp_path)
    sweep = tmp_path / "toy.yaml"
    runner = CliRunner()
    result = runner.invoke(main, ["table", str(sweep), "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    # Over dtd and eurosat the paper's Average is recomputed over the same two (base (83.02 + 94.94)/2);
    # its 11-dataset Average (84.39) never stands beside ours.
    assert "| Average | ProMetaR | 2 | 86.25" in result.stdout and "88.98" in result.stdout
    assert "84.39" not in result.stdout and "paper, same 2 datasets" in result.stdout
    assert result.stderr == ""  # every FINISHED run is planned: no note
    out = tmp_path / "t.tex"
    result = runner.invoke(
        main,
        [
            "table",
            "--experiment",
            "toy",
            "--tracking-uri",
            uri,
            "--format",
            "latex",
            "--no-published",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert r"\toprule" in out.read_text() and "paper" not in out.read_text()
    runs_csv = tmp_path / "runs.csv"
    runs_csv.write_text("method,dataset,seed,shots,base_acc,new_acc\nprometar,dtd,1,16,80,60\n")
    result = runner.invoke(main, ["table", "--runs", str(runs_csv), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("method,dataset,base,new,hm,")
    result = runner.invoke(main, ["table", "--experiment", "nope", "--tracking-uri", uri])
    assert result.exit_code == 2 and "experiment 'nope' not found" in result.output


def add_other_configurations(tmp_path: Path, uri: str) -> None:
    """FINISHED runs of the toy sweep's cells that ``toy.yaml`` does not plan.

    Four launched with ``--set optim.epochs=5`` (dtd and eurosat, seeds 1-2; base 50+seed, new 40),
    two of an earlier checkpoint (other trial keys, the same params; base 30, new 20), and one
    FAILED run of that checkpoint, which no table reads.
    """
    for (dataset, seed), key in planned_keys(tmp_path / "toy.yaml", {"optim.epochs": 5}).items():
        if seed <= 2:
            log_child(uri, key, dataset, seed, 50.0 + seed, 40.0, params={"optim.epochs": "5"})
    for seed in (1, 2):
        log_child(uri, f"oldckpt{seed}", "dtd", seed, 30.0, 20.0)
    log_child(uri, "oldckpt3", "dtd", 3, 30.0, 20.0, status="FAILED")


def test_read_experiment_restricted_to_the_planned_runs(tmp_path: Path):
    uri, _ = make_store(tmp_path)
    add_other_configurations(tmp_path, uri)
    everything = read_experiment("toy", uri)
    assert everything.runs["run_id"].nunique() == 5 + 4 + 2 and everything.unplanned_runs == 0
    planned = load_sweep_context(tmp_path / "toy.yaml").planned
    ledger = read_experiment("toy", uri, planned=planned)
    assert ledger.runs["run_id"].nunique() == 5 and ledger.unplanned_runs == 6
    assert set(ledger.params.index) == set(ledger.runs["run_id"])
    base = ledger.runs[ledger.runs["metric"] == "base_acc"]
    assert sorted(base["value"]) == [80.0, 82.0, 84.0, 90.0, 91.0]  # the superseded eurosat run (10.0) is out
    source = load_source(tmp_path / "toy.yaml", tracking_uri=uri, overrides={"optim.epochs": 5})
    assert source.ledger.runs["run_id"].nunique() == 4 and source.ledger.unplanned_runs == 5 + 1 + 2
    csv = tmp_path / "runs.csv"
    csv.write_text(
        "method,dataset,seed,shots,base_acc,new_acc\nprometar,dtd,1,16,80,60\nprometar,dtd,1,16,70,50\n"
    )
    source = load_source(tmp_path / "toy.yaml", runs_csv=csv)  # CSV rows have no trial keys: all kept
    assert (
        len(source.ledger.runs) == 4 and source.ledger.unplanned_runs == 0 and source.unplanned_note() is None
    )
    assert source.context.datasets == ("dtd", "eurosat")


def test_cli_table_from_sweep_shows_only_the_planned_runs(tmp_path: Path):
    uri, _ = make_store(tmp_path)
    add_other_configurations(tmp_path, uri)
    sweep = str(tmp_path / "toy.yaml")
    runner = CliRunner()

    result = runner.invoke(main, ["table", sweep, "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert "| Average | ProMetaR | 2 | 86.25" in result.stdout and "note" not in result.stdout
    assert result.stderr == (
        f"note: 6 FINISHED run(s) of experiment 'toy' are not planned by {sweep} "
        "(other configurations); --experiment toy shows every run\n"
    )

    out = tmp_path / "table.md"
    result = runner.invoke(main, ["table", sweep, "--tracking-uri", uri, "-o", str(out)])
    assert result.exit_code == 0 and result.stdout == "" and result.stderr.count("note: 6 FINISHED") == 1
    assert "| Average | ProMetaR | 2 | 86.25" in out.read_text() and "note" not in out.read_text()

    # --set selects the runs `launch toy.yaml --set optim.epochs=5` made: dtd and eurosat base
    # (51+52)/2 = 51.5 each, new 40; left out: the 5 planned runs, the superseded one and 2 old ones.
    result = runner.invoke(
        main,
        [
            "table",
            sweep,
            "--set",
            "optim.epochs=5",
            "--tracking-uri",
            uri,
            "--format",
            "csv",
            "--no-published",
        ],
    )
    assert result.exit_code == 0, result.output
    back = pd.read_csv(pd.io.common.StringIO(result.stdout))
    average = back[back["dataset"] == "average"].iloc[0]
    assert (average["base"], average["new"]) == (pytest.approx(51.5), pytest.approx(40.0))
    assert set(back["n_seeds"]) == {2}
    assert result.stderr.startswith(
        f"note: 8 FINISHED run(s) of experiment 'toy' are not planned by {sweep} "
        "--set optim.epochs=5 (other configurations)"
    )

    # --experiment reads every FINISHED run: the old checkpoint's runs share dtd cells with the
    # planned ones under the same params, so the table refuses, as it always did.
    result = runner.invoke(main, ["table", "--experiment", "toy", "--tracking-uri", uri])
    assert result.exit_code == 2 and "several runs for method=prometar" in result.output
    assert "note:" not in result.output

    result = runner.invoke(
        main, ["table", "--experiment", "toy", "--set", "optim.epochs=5", "--tracking-uri", uri]
    )
    assert result.exit_code == 2 and "--set needs a sweep file" in result.output
    result = runner.invoke(main, ["table", sweep, "--set", "optim.epochs", "--tracking-uri", uri])
    assert result.exit_code == 2 and "must look like KEY=VALUE" in result.output
    result = runner.invoke(main, ["table", sweep, "--set", "optim.epochz=5", "--tracking-uri", uri])
    assert result.exit_code == 2 and "toy.yaml: overrides.optim.epochz: unknown key" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  method: [prometar]\n  dataset: [dtd, nope]\n")
    result = runner.invoke(main, ["table", str(bad), "--tracking-uri", uri, "-o", str(tmp_path / "bad.md")])
    assert result.exit_code == 2 and f"{bad}: grid.dataset[1]: unknown dataset 'nope'" in result.output
    assert not (tmp_path / "bad.md").exists()


def test_cli_table_search_sweep_reads_its_search_groups(tmp_path: Path):
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    sweep = tmp_path / "search.yaml"
    sweep.write_text(SEARCH_SWEEP)
    (group,) = list(load_plan(sweep).groups)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("search", artifact_location=(tmp_path / "artifacts").as_uri())
    # Two sampled trials of the planned group, one of a group an edited search space made.
    for i, (group_key, weight, val_hm) in enumerate(
        [(group.key, 10.0, 70.0), (group.key, 40.0, 75.0), ("oldgroup", 160.0, 90.0)]
    ):
        tags = {
            TRIAL_KEY_TAG: f"sample{i}",
            SEARCH_GROUP_TAG: group_key,
            "method": "prometar",
            "dataset": "dtd",
            "seed": "1",
            "shots": "16",
            "protocol": "search",
        }
        run = client.create_run(experiment_id, tags=tags).info.run_id
        client.log_batch(
            run,
            metrics=[Metric("val_hm", val_hm, 0, 0)],
            params=[Param("regularizer.text_weight", str(weight))],
        )
        client.set_terminated(run)
    runner = CliRunner()
    result = runner.invoke(main, ["table", str(sweep), "--tracking-uri", uri, "--format", "csv"])
    assert result.exit_code == 0, result.output
    back = pd.read_csv(pd.io.common.StringIO(result.stdout))
    assert list(back["regularizer.text_weight"]) == [40.0, 10.0] and list(back["val_hm"]) == [75.0, 70.0]
    assert result.stderr.startswith("note: 1 FINISHED run(s) of experiment 'search' are not planned by")
    result = runner.invoke(
        main, ["table", "--experiment", "search", "--tracking-uri", uri, "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(pd.io.common.StringIO(result.stdout))["val_hm"]) == [90.0, 75.0, 70.0]


# ------------------------------------------------------------------------------- ablation sweeps

# Two arms of a `variant` axis x 2 datasets x 2 seeds: (setting, dataset, seed, base, new).
# learned:  dtd base (80+84)/2=82, new (60+64)/2=62; eurosat base (90+92)/2=91, new (70+72)/2=71
#           -> Average base 86.5, new 66.5, HM 2*86.5*66.5/153.
# constant: dtd base 79, new 59; eurosat base 89, new 67 -> Average base 84, new 63, HM 72.
ABLATION_ROWS = [
    ("learned", "dtd", 1, 80.0, 60.0),
    ("learned", "dtd", 2, 84.0, 64.0),
    ("learned", "eurosat", 1, 90.0, 70.0),
    ("learned", "eurosat", 2, 92.0, 72.0),
    ("constant", "dtd", 1, 78.0, 58.0),
    ("constant", "dtd", 2, 80.0, 60.0),
    ("constant", "eurosat", 1, 88.0, 66.0),
    ("constant", "eurosat", 2, 90.0, 68.0),
]


def ablation_wide(rows=ABLATION_ROWS) -> pd.DataFrame:
    wide = pd.DataFrame(rows, columns=["meta.gate_mode", "dataset", "seed", "base_acc", "new_acc"])
    # optim.lr never changes; data.num_workers differs between the arms but never changes a result.
    workers = wide["meta.gate_mode"].map({"learned": 4, "constant": 8})
    return wide.assign(method="prometar", shots=16, **{"optim.lr": 0.0025, "data.num_workers": workers})


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


def test_cli_table_prints_the_ablation_table(tmp_path: Path):
    runs_csv = tmp_path / "runs.csv"
    ablation_wide().to_csv(runs_csv, index=False)
    sweep = tmp_path / "ablation.yaml"
    sweep.write_text(
        "protocol: base2new\ngrid:\n  method: [prometar]\n  variant:\n    - {meta.gate_mode: learned}\n"
        "    - {meta.gate_mode: constant}\n  dataset: [dtd, eurosat]\n  seed: [1, 2]\n"
    )
    result = CliRunner().invoke(main, ["table", str(sweep), "--runs", str(runs_csv)])
    assert result.exit_code == 0, result.output
    assert "Ablation (base-to-new Average)" in result.output
    assert "| constant | 84.00 | 63.00 | 72.00 |" in result.output


def test_render_tables_for_experiment_ablation_from_mlflow(tmp_path: Path):
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("ablation", artifact_location=(tmp_path / "artifacts").as_uri())
    for i, (gate, dataset, seed, base, new) in enumerate(ABLATION_ROWS):
        tags = {
            "prometar.trial_key": f"trial{i}",
            "method": "prometar",
            "dataset": dataset,
            "seed": str(seed),
            "shots": "16",
            "protocol": "base2new",
        }
        run = client.create_run(experiment_id, tags=tags).info.run_id
        client.log_batch(
            run,
            metrics=[Metric("base_acc", base, 0, 0), Metric("new_acc", new, 0, 0)],
            params=[
                Param("meta.gate_mode", gate),
                Param("backbone.device", f"cuda:{i % 2}"),
                Param("data.dataset", dataset),
                Param("seed", str(seed)),
            ],
        )
        client.set_terminated(run)
    written = publish_experiment("ablation", uri, tmp_path / "tables", datasets=["dtd", "eurosat"])
    assert sorted(written) == ["ablation.csv", "ablation.md", "ablation.tex"]
    back = pd.read_csv(written["ablation.csv"])
    assert list(back["meta.gate_mode"]) == ["constant", "learned"]
    assert list(back["hm"]) == [pytest.approx(72.0), pytest.approx(2 * 86.5 * 66.5 / 153, abs=1e-4)]


def test_the_published_zero_shot_row_stands_beside_our_zero_shot_method(tmp_path):
    """The papers call zero-shot CLIP "clip"; our method is "zeroshot": the shipped numbers map onto it."""
    published = load_published()
    assert "clip" not in set(published["method"]) and "zeroshot" in set(published["method"])
    row = published[(published["method"] == "zeroshot") & (published["dataset"] == "imagenet")].iloc[0]
    assert (row["base"], row["new"]) == (72.43, 68.14)  # the shipped CSV's CLIP row on ImageNet
    runs = tmp_path / "runs.csv"
    runs.write_text("method,dataset,seed,shots,base_acc,new_acc\nzeroshot,imagenet,1,16,72.0,68.0\n")
    result = CliRunner().invoke(main, ["table", "--runs", str(runs), "--format", "csv"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(pd.io.common.StringIO(result.output))
    imagenet = frame[(frame["method"] == "zeroshot") & (frame["dataset"] == "imagenet")].iloc[0]
    assert imagenet["paper_base"] == 72.43 and imagenet["paper_new"] == 68.14
