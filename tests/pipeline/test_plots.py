"""Figures are written as real PNG (300 dpi), PDF and SVG files from a tmp MLflow store (the figures
themselves: ``test_figures.py``)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from orchestration.cli import main
from orchestration.results.figures import ALIGNMENT_METRICS, GATE_METRICS
from orchestration.results.plots import plot_source
from orchestration.results.source import load_source
from orchestration.sweeps.planning import load_plan

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, (path, len(data))  # an empty canvas compresses to far less


def assert_figure_files(paths: list[Path], names: list[str]) -> None:
    """Each figure in PNG, PDF and SVG, nothing else."""
    assert sorted(p.name for p in paths) == sorted(
        f"{n}.{ext}" for n in names for ext in ("png", "pdf", "svg")
    )
    for path in paths:
        if path.suffix == ".png":
            assert_png(path)
        elif path.suffix == ".pdf":
            assert path.read_bytes()[:5] == b"%PDF-"
        else:
            assert b"<svg" in path.read_bytes()[:2000]


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
    assert_figure_files(paths, ["base_vs_new", "hm", "training_curves", "gate_and_alignment"])


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
    assert result.exit_code == 2 and not (tmp_path / "none").exists()
    assert "no FINISHED run of experiment 'toy' is planned by" in result.stderr
    assert "optim.epochs=5 (9 are runs of other configurations)" in result.stderr


def test_cli_plot_from_a_runs_csv(tmp_path: Path):
    runs = tmp_path / "runs.csv"
    runs.write_text(
        "method,dataset,seed,shots,base_acc,new_acc\n"
        "ivlp,dtd,1,16,80,60\nivlp,dtd,2,16,82,58\nprometar,dtd,1,16,79,64\nprometar,dtd,2,16,81,66\n"
    )
    out = tmp_path / "figures"
    result = CliRunner().invoke(main, ["plot", "--runs", str(runs), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert_figure_files(sorted(out.iterdir()), ["base_vs_new", "hm"])  # no MLflow: no training curves
    assert result.stdout.splitlines() == [
        str(out / f"{n}.{e}") for n in ("base_vs_new", "hm") for e in ("png", "pdf", "svg")
    ]
    assert 'id="published:prometar"' in (out / "hm.svg").read_text()  # the paper's DTD HM, marked
    bare = tmp_path / "bare"
    result = CliRunner().invoke(main, ["plot", "--runs", str(runs), "--no-published", "-o", str(bare)])
    assert result.exit_code == 0, result.output
    assert 'id="published:' not in (bare / "hm.svg").read_text()
