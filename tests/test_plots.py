"""Plots are written as real, non-empty PNG images from hand-made runs and a tmp MLflow store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.ledger import attach_params, load_source, tidy_from_wide
from orchestration.plots import (
    ALIGNMENT_METRICS,
    GATE_METRICS,
    plot_base_vs_new,
    plot_hm,
    plot_search,
    plot_source,
)
from orchestration.tables import base2new_summary, load_published

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
        {"method": "prometar", "dataset": "dtd", "seed": 1, "shots": 16, "protocol": "search",
         "val_hm": 60.0 + i, "regularizer.text_weight": 5.0 * 2**i, "meta.gate": ["on", "off"][i % 2]}
        for i in range(6)
    ]  # fmt: skip
    ledger = tidy_from_wide(pd.DataFrame(rows), source="hand")
    params = ["regularizer.text_weight", "meta.gate"]
    runs = attach_params(ledger.runs, ledger.params, params)
    assert_png(plot_search(runs, params, tmp_path / "search.png"))


def make_store(tmp_path: Path) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("toy", artifact_location=(tmp_path / "artifacts").as_uri())
    for method, offset in (("coop", 0.0), ("prometar", 3.0)):
        for dataset in ("dtd", "eurosat"):
            for seed in (1, 2):
                tags = {"prometar.trial_key": f"{method}-{dataset}-{seed}", "method": method, "dataset": dataset,
                        "seed": str(seed), "shots": "16", "protocol": "base2new"}  # fmt: skip
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
    source = load_source(experiment="toy", tracking_uri=uri)
    paths = plot_source(source, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["base_vs_new.png", "gate_and_alignment.png", "hm.png",
                                            "training_curves.png"]  # fmt: skip
    for path in paths:
        assert_png(path)


def test_cli_plot(tmp_path: Path):
    uri = make_store(tmp_path)
    out = tmp_path / "figures"
    result = CliRunner().invoke(main, ["plot", "--experiment", "toy", "--tracking-uri", uri, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "hm.png").exists() and str(out / "training_curves.png") in result.output
    result = CliRunner().invoke(main, ["plot", "--tracking-uri", uri, "-o", str(out)])
    assert result.exit_code == 2 and "give a sweep file, --experiment NAME or --runs CSV" in result.output
