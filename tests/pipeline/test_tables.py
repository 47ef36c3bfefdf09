"""Tables from hand-made MLflow ledgers and the `table` verb (pure tables: unit/test_table_kinds.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from hand_runs import ABLATION_ROWS, SEARCH_SWEEP, TOY_SWEEP, ablation_wide, cell, planned_keys

from orchestration.cli import main
from orchestration.errors import ResultsError
from orchestration.ledger.runs import (
    read_experiment,
)
from orchestration.ledger.vocabulary import SEARCH_GROUP_TAG, TRIAL_KEY_TAG
from orchestration.results.base2new import base2new_summary
from orchestration.results.context import ResultsContext
from orchestration.results.publish import publish
from orchestration.results.published import load_published
from orchestration.results.source import load_source, load_sweep_context
from orchestration.sweeps.planning import load_plan

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
    # Without a sweep file the experiment's own datasets make the Average (not the paper's eleven,
    # which would leave it empty), and a note under the table says so.
    result = runner.invoke(main, ["table", "--experiment", "toy", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert "| Average | ProMetaR | 2 | 86.25" in result.stdout
    assert "Average: over the 2 datasets of experiment toy (DTD, EuroSAT;" in result.stdout
    assert "84.39" not in result.stdout and "paper, same 2 datasets" in result.stdout
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
