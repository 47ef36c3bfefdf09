"""Plots are written as real, non-empty PNG images from hand-made runs and a tmp MLflow store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.ledger.runs import attach_params, tidy_from_wide
from orchestration.results.base2new import base2new_summary
from orchestration.results.plots import (
    ALIGNMENT_METRICS,
    GATE_METRICS,
    plot_base_vs_new,
    plot_hm,
    plot_search,
    plot_source,
)
from orchestration.results.published import load_published
from orchestration.results.source import load_source
from orchestration.sweeps.planning import load_plan

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, (path, len(data))  # an empty canvas compresses to far less


def published_ledger():
    published = load_published()
    rows = published[published["dataset"] != "average"].rename(columns={"base": "base_acc", "new": "new_acc"})
    wide = rows[["method", "dataset", "base_acc", "new_acc"]].assign(seed=1, shots=16)
    return tidy_from_wide(wide, source="published")


def test_base_vs_new_and_hm(tmp_path: Path):
    summary = base2new_summary(published_ledger().runs)
    assert_png(plot_base_vs_new(summary, tmp_path / "scatter.png", published=load_published()))
    assert_png(plot_hm(summary, tmp_path / "hm.png"))


def test_search_plot_numeric_and_categorical(tmp_path: Path):
    rows = [
        {
            "method": "prometar",
            "dataset": "dtd",
            "seed": 1,
            "shots": 16,
            "protocol": "search",
            "val_hm": 60.0 + i,
            "regularizer.text_weight": 5.0 * 2**i,
            "meta.gate": ["on", "off"][i % 2],
        }
        for i in range(6)
    ]
    ledger = tidy_from_wide(pd.DataFrame(rows), source="hand")
    params = ["regularizer.text_weight", "meta.gate"]
    runs = attach_params(ledger.runs, ledger.params, params)
    assert_png(plot_search(runs, params, tmp_path / "search.png"))


TOY_SWEEP = "grid:\n  method: [coop, prometar]\n  dataset: [dtd, eurosat]\n  seed: [1, 2]\n"


def make_store(tmp_path: Path) -> str:
    """The runs ``toy.yaml`` (:data:`TOY_SWEEP`, written beside the store) plans, with curves and
    gate statistics, and one FINISHED run of another configuration (an unplanned trial key).
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "toy.yaml").write_text(TOY_SWEEP)
    keys = {(t.method, t.dataset, t.seed): t.key for t in load_plan(tmp_path / "toy.yaml").trials}
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("toy", artifact_location=(tmp_path / "artifacts").as_uri())
    other = {
        "prometar.trial_key": "other-config",
        "method": "coop",
        "dataset": "dtd",
        "seed": "1",
        "shots": "16",
        "protocol": "base2new",
    }
    run = client.create_run(experiment_id, tags=other).info.run_id
    client.log_batch(run, metrics=[Metric("base_acc", 10.0, 0, 0), Metric("new_acc", 10.0, 0, 0)])
    client.set_terminated(run)
    for method, offset in (("coop", 0.0), ("prometar", 3.0)):
        for dataset in ("dtd", "eurosat"):
            for seed in (1, 2):
                tags = {
                    "prometar.trial_key": keys[method, dataset, seed],
                    "method": method,
                    "dataset": dataset,
                    "seed": str(seed),
                    "shots": "16",
                    "protocol": "base2new",
                }
                run = client.create_run(experiment_id, tags=tags).info.run_id
                metrics = [Metric("base_acc", 80 + offset + seed, 0, 0), Metric("new_acc", 60 + offset, 0, 0)]
                for epoch in range(5):
                    metrics.append(Metric("loss", 2.0 / (epoch + 1) + 0.1 * seed, 0, epoch))
                    metrics.append(Metric("train_acc", 50 + 8 * epoch + offset, 0, epoch))
                    for i, name in enumerate((*GATE_METRICS, *ALIGNMENT_METRICS)):
                        metrics.append(Metric(name, 0.1 * i + 0.05 * epoch + 0.01 * offset, 0, epoch))
                client.log_batch(run, metrics=metrics)
                client.set_terminated(run)
    return uri


def test_all_plots_from_mlflow(tmp_path: Path):
    uri = make_store(tmp_path)
    source = load_source(tmp_path / "toy.yaml", tracking_uri=uri)
    assert source.ledger.runs["run_id"].nunique() == 8 and source.ledger.unplanned_runs == 1
    paths = plot_source(source, tmp_path / "plots")
    assert sorted(p.name for p in paths) == [
        "base_vs_new.png",
        "gate_and_alignment.png",
        "hm.png",
        "training_curves.png",
    ]
    for path in paths:
        assert_png(path)


def test_cli_plot(tmp_path: Path):
    uri = make_store(tmp_path)
    out = tmp_path / "figures"
    sweep = str(tmp_path / "toy.yaml")
    result = CliRunner().invoke(main, ["plot", sweep, "--tracking-uri", uri, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "hm.png").exists() and str(out / "training_curves.png") in result.stdout
    assert result.stderr == (
        f"note: 1 FINISHED run(s) of experiment 'toy' are not planned by {sweep} "
        "(other configurations); --experiment toy shows every run\n"
    )
    # --experiment reads every run: the other configuration's coop/dtd/seed 1 run shares a cell.
    result = CliRunner().invoke(main, ["plot", "--experiment", "toy", "--tracking-uri", uri, "-o", str(out)])
    assert (
        result.exit_code == 2
        and "several runs for method=coop, shots=16, dataset=dtd, seed=1" in result.output
    )
    result = CliRunner().invoke(main, ["plot", "--tracking-uri", uri, "-o", str(out)])
    assert result.exit_code == 2 and "give a sweep file, --experiment NAME or --runs CSV" in result.output
    result = CliRunner().invoke(
        main,
        ["plot", "--experiment", "toy", "--set", "optim.epochs=5", "--tracking-uri", uri, "-o", str(out)],
    )
    assert result.exit_code == 2 and "--set needs a sweep file" in result.output
    # launched with --set optim.epochs=5: none of these runs is planned, so nothing to plot.
    result = CliRunner().invoke(
        main, ["plot", sweep, "--set", "optim.epochs=5", "--tracking-uri", uri, "-o", str(tmp_path / "none")]
    )
    assert result.exit_code == 2 and "note: 9 FINISHED run(s)" in result.stderr
    assert "no FINISHED runs to plot" in result.stderr and not (tmp_path / "none").exists()
