"""``table --per-run``: one row per FINISHED trial, and reading it back gives the same tables."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.ledger.runs import tidy_from_wide
from orchestration.ledger.vocabulary import SEARCH_GROUP_TAG, TRIAL_KEY_TAG
from orchestration.results.export import LEADING_COLUMNS, exported_params, per_run_frame
from orchestration.results.source import load_source
from orchestration.sweeps.planning import load_plan

BACKBONE = {"backbone.name": "toy-clip", "backbone.pretrained": "/somewhere/toy/toy_clip.pt"}


def log_run(
    uri: str,
    experiment: str,
    tags: dict,
    metrics: dict,
    params: dict,
    *,
    status: str = "FINISHED",
    artifacts: Path | None = None,
) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id
        if found
        else client.create_experiment(
            experiment,
            artifact_location=(artifacts or Path(uri.removeprefix("sqlite:///")).parent / "art").as_uri(),
        )
    )
    run = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_batch(
        run,
        metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in {**BACKBONE, **params}.items()],
    )
    client.set_terminated(run, status)
    return run


def tags_of(trial, sweep: str) -> dict:
    return {
        TRIAL_KEY_TAG: trial.key,
        "method": trial.method,
        "dataset": trial.dataset,
        "seed": str(trial.seed),
        "shots": str(trial.shots),
        "protocol": trial.protocol,
        "sweep": sweep,
    }


B2N_SWEEP = "name: b2n\ngrid:\n  method: [coop, prometar]\n  dataset: [dtd, eurosat]\n  seed: [1, 2, 3]\n"
FEW_SHOT_SWEEP = (
    "name: fs\nprotocol: few_shot\ngrid:\n  method: [coop]\n  dataset: [dtd, eurosat]\n"
    "  seed: [1, 2]\n  shots: [1, 4, 16]\n"
)


def b2n_store(tmp_path: Path) -> tuple[Path, str]:
    """The b2n sweep's runs: every trial FINISHED except prometar/eurosat/3 (FAILED); `data.num_workers`
    differs between runs (never changes a result), `optim.lr` is shared, `regularizer.text_weight`
    differs between the methods."""
    sweep = tmp_path / "b2n.yaml"
    sweep.write_text(B2N_SWEEP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for i, trial in enumerate(load_plan(sweep).trials):
        offset = {"coop": 0.0, "prometar": 3.0}[trial.method] + 0.37 * trial.seed
        failed = (trial.method, trial.dataset, trial.seed) == ("prometar", "eurosat", 3)
        metrics = {"base_acc": 80.0 + offset + 0.011 * i, "new_acc": 60.0 + offset / 3, "hm": 1.0}
        params = {
            "optim.lr": 0.0025,
            "data.num_workers": i % 3,
            "regularizer.text_weight": 25.0 if trial.method == "coop" else 50.0,
        }
        log_run(uri, "b2n", tags_of(trial, "b2n"), metrics, params, status="FAILED" if failed else "FINISHED")
    return sweep, uri


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_per_run_rows_and_columns(tmp_path: Path):
    sweep, uri = b2n_store(tmp_path)
    source = load_source(sweep, tracking_uri=uri)
    frame = per_run_frame(source.ledger)
    assert len(frame) == 11  # 12 trials, one FAILED
    assert list(frame.columns) == [
        *LEADING_COLUMNS,
        "backbone.name",
        "backbone.pretrained",
        "regularizer.text_weight",
        "base_acc",
        "new_acc",
        "hm",
    ]
    planned = {t.key: t for t in load_plan(sweep).trials}
    for row in frame.itertuples(index=False):
        trial = planned[row.trial_key]
        assert (row.method, row.dataset, row.seed, row.shots, row.protocol) == (
            trial.method,
            trial.dataset,
            trial.seed,
            trial.shots,
            "base2new",
        )
    assert frame["run_id"].is_unique and frame["trial_key"].is_unique
    assert exported_params(source.ledger.params) == [
        "backbone.name",
        "backbone.pretrained",
        "regularizer.text_weight",
    ]


def test_per_run_csv_round_trips_to_the_same_tables(tmp_path: Path):
    sweep, uri = b2n_store(tmp_path)
    runs_csv = tmp_path / "runs.csv"
    text = invoke("table", str(sweep), "--tracking-uri", uri, "--per-run")
    invoke("table", str(sweep), "--tracking-uri", uri, "--per-run", "-o", str(runs_csv))
    assert runs_csv.read_text() == text
    back = pd.read_csv(io.StringIO(text))
    assert len(back) == 11 and list(back.columns[:7]) == list(LEADING_COLUMNS)
    for fmt in ("csv", "markdown", "latex"):
        ledger_table = invoke("table", str(sweep), "--tracking-uri", uri, "--format", fmt)
        csv_table = invoke("table", str(sweep), "--runs", str(runs_csv), "--format", fmt)
        assert csv_table == ledger_table, fmt
    assert r"backbone toy-clip (toy\_clip.pt)" in ledger_table  # the last one: LaTeX
    # every run's metrics survive exactly
    source = load_source(sweep, tracking_uri=uri)
    again = load_source(sweep, runs_csv=runs_csv)
    merged = source.ledger.runs.merge(again.ledger.runs, on=["run_id", "metric"], suffixes=("", "_back"))
    assert len(merged) == len(source.ledger.runs) and (merged["value"] == merged["value_back"]).all()
    assert again.ledger.trial_keys == source.ledger.trial_keys


def test_per_run_few_shot_and_search_round_trip(tmp_path: Path):
    sweep = tmp_path / "fs.yaml"
    sweep.write_text(FEW_SHOT_SWEEP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for trial in load_plan(sweep).trials:
        acc = 40.0 + 2 * trial.shots + 0.5 * trial.seed + (3.0 if trial.dataset == "dtd" else 0.0)
        log_run(uri, "fs", tags_of(trial, "fs"), {"acc": acc}, {})
    runs_csv = tmp_path / "fs.csv"
    invoke("table", str(sweep), "--tracking-uri", uri, "--per-run", "-o", str(runs_csv))
    assert "base_acc" not in runs_csv.read_text().splitlines()[0]  # a few-shot export has no base/new columns
    for fmt in ("csv", "markdown"):
        assert invoke("table", str(sweep), "--runs", str(runs_csv), "--format", fmt) == invoke(
            "table", str(sweep), "--tracking-uri", uri, "--format", fmt
        )

    search = tmp_path / "search.yaml"
    search.write_text(
        "name: search\ngrid:\n  method: [prometar]\n  dataset: [dtd]\n  seed: [1]\n"
        "search:\n  num_samples: 3\n  space:\n    regularizer.text_weight: {loguniform: [5, 200]}\n"
        "    regularizer.image_weight: {loguniform: [2, 100]}\n"
    )
    (group,) = load_plan(search).groups
    for i, (text_weight, val_hm) in enumerate([(10.0, 70.0), (40.0, 75.5), (160.0, 72.25)]):
        tags = {
            TRIAL_KEY_TAG: f"sample{i}",
            SEARCH_GROUP_TAG: group.key,
            "method": "prometar",
            "dataset": "dtd",
            "seed": "1",
            "shots": "16",
            "protocol": "search",
        }
        log_run(
            uri,
            "search",
            tags,
            {"val_hm": val_hm, "val_base": 80.0 + i, "val_new": 60.0},
            {"regularizer.text_weight": text_weight, "regularizer.image_weight": 20.0},
        )  # image weight: one value
    search_csv = tmp_path / "search.csv"
    invoke("table", str(search), "--tracking-uri", uri, "--per-run", "-o", str(search_csv))
    header = search_csv.read_text().splitlines()[0].split(",")
    assert "regularizer.image_weight" in header  # searched: exported although it did not vary
    assert header[-3:] == ["val_base", "val_new", "val_hm"]  # the protocol registry's order
    assert invoke("table", str(search), "--runs", str(search_csv), "--format", "csv") == invoke(
        "table", str(search), "--tracking-uri", uri, "--format", "csv"
    )


def test_per_run_parquet_and_bad_input(tmp_path: Path):
    sweep, uri = b2n_store(tmp_path)
    out = tmp_path / "runs.parquet"
    invoke("table", str(sweep), "--tracking-uri", uri, "--per-run", "-o", str(out))
    parquet = pd.read_parquet(out)
    csv = pd.read_csv(io.StringIO(invoke("table", str(sweep), "--tracking-uri", uri, "--per-run")))
    assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv)
    assert parquet["base_acc"].tolist() == pytest.approx(csv["base_acc"].tolist(), abs=0)
    assert parquet["trial_key"].tolist() == csv["trial_key"].tolist()
    result = CliRunner().invoke(
        main, ["table", str(sweep), "--tracking-uri", uri, "--per-run", "--format", "latex"]
    )
    assert result.exit_code == 2 and "--per-run writes CSV" in result.output
    empty = tmp_path / "empty.yaml"
    empty.write_text("name: b2n\ngrid:\n  method: [zeroshot]\n  dataset: [dtd]\n")
    result = CliRunner().invoke(
        main, ["table", str(empty), "--tracking-uri", uri, "--per-run", "-o", str(tmp_path / "none.csv")]
    )
    assert result.exit_code == 2 and not (tmp_path / "none.csv").exists()
    assert "no FINISHED run of experiment 'b2n' is planned by" in result.output  # names the launches


def test_per_run_from_hand_made_rows_has_no_trial_keys():
    wide = pd.DataFrame(
        {
            "method": ["coop"],
            "dataset": ["dtd"],
            "seed": [1],
            "shots": [16],
            "base_acc": [80.0],
            "new_acc": [60.0],
        }
    )
    frame = per_run_frame(tidy_from_wide(wide, source="hand"))
    assert frame["trial_key"].isna().all() and frame["run_id"].tolist() == ["hand:2"]
