"""The ``prometar-sweep`` command line: one short click function per verb.

Each verb parses its arguments and calls one library function. Bad input exits with code 2 and
one message naming the file, key or path; failed trials exit with code 1.
"""

from __future__ import annotations

import click

import prometar


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(prometar.__version__, prog_name="prometar-sweep")
def main() -> None:
    """Run ProMetaR and its baselines on CLIP at cluster scale, and print the paper's tables."""


@main.group("data")
def data_group() -> None:
    """Inspect the benchmark datasets under a data root."""


@data_group.command("check")
@click.option("--data-root", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder holding the datasets ($DATA).")
@click.option("--dataset", "datasets", multiple=True, metavar="KEY",
              help="Dataset key to check (repeatable); default: all 15.")
def data_check(data_root: str, datasets: tuple[str, ...]) -> None:
    """Check layout, split files and images; exit 2 if a requested dataset is unusable."""
    from prometar.data import DataError, check_datasets

    try:
        reports = check_datasets(data_root, list(datasets) or None)
    except DataError as err:
        raise click.UsageError(str(err)) from None
    for report in reports:
        click.echo(report.line())
    if not all(report.usable for report in reports):
        raise SystemExit(2)


@main.command("train")
@click.option("--dataset", required=True, metavar="KEY", help="Dataset key (data.dataset).")
@click.option("--seed", required=True, type=int, help="Run seed.")
@click.option("--shots", required=True, type=int, help="Training images per class (data.shots).")
@click.option("--method", metavar="NAME", help="Method (prompt design × scheme); default: the preset's.")
@click.option("--preset", default="official", show_default=True, metavar="NAME|FILE",
              help="Run-config preset (official, fixed) or a run-config YAML file.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Dotted run-config override, YAML-typed (repeatable), e.g. optim.epochs=5.")
@click.option("--data-root", default="data", show_default=True,
              type=click.Path(file_okay=False, path_type=str), help="Folder holding the datasets ($DATA).")
@click.option("--output", type=click.Path(file_okay=False, path_type=str),
              help="Run folder; default: ./prometar_runs/train/<dataset>/<method>/<shots>shots_seed<seed>.")
@click.option("--device", metavar="DEVICE", help="cpu, cuda, cuda:N or auto (backbone.device).")
@click.option("--resume", "resume_from", type=click.Path(file_okay=False, exists=True, path_type=str),
              help="Continue from a checkpoints/epoch_<k> folder of this run.")
def train(dataset, seed, shots, method, preset, sets, data_root, output, device, resume_from) -> None:
    """Train and evaluate one run, without Ray or MLflow; print per-epoch progress and final metrics."""
    import time
    from pathlib import Path

    from prometar.backbone import BackboneError
    from prometar.config import ConfigError, parse_override, resolve_config
    from prometar.data import DataError
    from prometar.run import run
    from prometar.trainer import CheckpointError

    try:
        overrides = dict(parse_override(text) for text in sets)
        overrides.update({"data.dataset": dataset, "seed": seed, "data.shots": shots})
        if method is not None:
            overrides["method"] = method
        config = resolve_config(preset, overrides)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    out = Path(output or f"prometar_runs/train/{dataset}/{config.method}/{shots}shots_seed{seed}")
    start = time.monotonic()

    def progress(event: dict) -> None:
        if event["event"] != "epoch":
            return
        shown = " ".join(f"{k}={event[k]:.4g}" for k in ("loss", "train_acc", "lr") if k in event)
        click.echo(f"epoch {event['epoch']}/{config.optim.epochs} {shown} "
                   f"[{time.monotonic() - start:.0f}s]", err=True)

    click.echo(f"{config.method} on {dataset} ({config.protocol}, {shots} shots, seed {seed}) -> {out}",
               err=True)
    try:
        result = run(config, data_root=Path(data_root), output_dir=out, callback=progress,
                     resume_from=Path(resume_from) if resume_from else None, device=device)
    except (ConfigError, DataError, BackboneError, CheckpointError) as err:
        raise click.UsageError(str(err)) from None
    for name, value in result.metrics.items():
        click.echo(f"{name}\t{value:.2f}")


@main.command("table")
@click.argument("sweep", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("--experiment", metavar="NAME", help="MLflow experiment (instead of a sweep file).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "latex", "csv"]), default="markdown",
              show_default=True, help="Output format.")
@click.option("--published", type=click.Path(dir_okay=False, path_type=str),
              help="Published numbers to compare with; default: the shipped reference.")
@click.option("--no-published", is_flag=True, help="Leave out the published comparison.")
@click.option("--runs", "runs_csv", type=click.Path(dir_okay=False, path_type=str),
              help="CSV of per-run rows (method,dataset,seed,shots,base_acc,new_acc): no MLflow.")
@click.option("--tracking-uri", metavar="URI", help="Default: sqlite:///./prometar_runs/mlflow.db.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=str), help="Write here, not stdout.")
def table(sweep, experiment, fmt, published, no_published, runs_csv, tracking_uri, out) -> None:
    """Print the paper's tables from a sweep's FINISHED runs (or a CSV of runs)."""
    from pathlib import Path

    from orchestration.ledger import ResultsError, load_source
    from orchestration.tables import table_text

    try:
        source = load_source(sweep, experiment=experiment, runs_csv=runs_csv, tracking_uri=tracking_uri)
        text = table_text(source, fmt, published=published, compare=not no_published)
    except ResultsError as err:
        raise click.UsageError(str(err)) from None
    if out:
        Path(out).write_text(text)
    else:
        click.echo(text, nl=False)


@main.command("plot")
@click.argument("sweep", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("--experiment", metavar="NAME", help="MLflow experiment (instead of a sweep file).")
@click.option("--runs", "runs_csv", type=click.Path(dir_okay=False, path_type=str),
              help="CSV of per-run rows: no MLflow (no training curves).")
@click.option("--published", type=click.Path(dir_okay=False, path_type=str),
              help="Published numbers drawn beside ours; default: the shipped reference.")
@click.option("--tracking-uri", metavar="URI", help="Default: sqlite:///./prometar_runs/mlflow.db.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder for the PNG files.")
def plot(sweep, experiment, runs_csv, published, tracking_uri, out) -> None:
    """Draw the paper's figures (PNG) from a sweep's FINISHED runs."""
    from orchestration.ledger import ResultsError, load_source
    from orchestration.plots import plot_source

    try:
        source = load_source(sweep, experiment=experiment, runs_csv=runs_csv, tracking_uri=tracking_uri)
        paths = plot_source(source, out, published=published)
    except ResultsError as err:
        raise click.UsageError(str(err)) from None
    for path in paths:
        click.echo(str(path))


@main.command("launch")
@click.argument("sweep", type=click.Path(dir_okay=False, path_type=str))
@click.option("--data-root", default="data", show_default=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder holding the datasets ($DATA).")
@click.option("--output", default="prometar_runs", show_default=True, type=click.Path(file_okay=False, path_type=str),
              help="Ray storage, the SQLite ledger mlflow.db, artifacts and tables.")
@click.option("--address", metavar="ADDR", help="Join a running Ray cluster; default: a local Ray on 127.0.0.1.")
@click.option("--tracking-uri", metavar="URI", help="MLflow server; default: sqlite:///<output>/mlflow.db.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Dotted run-config override for every trial, YAML-typed (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print done / to do / total and write nothing.")
@click.option("--force", is_flag=True, help="Rerun trials already FINISHED.")
@click.option("--max-concurrent", type=click.IntRange(min=1), help="At most N trials at once.")
@click.option("--write-best", type=click.Path(dir_okay=False, path_type=str),
              help="Search sweeps: write the best configuration as a sweep file for the real protocol.")
def launch(sweep, data_root, output, address, tracking_uri, sets, dry_run, force, max_concurrent, write_best) -> None:
    """Run a sweep on Ray Tune, recording every trial in MLflow; finished trials are skipped."""
    from pathlib import Path

    from orchestration.runner import LaunchError, LaunchOptions, TrackingError, launch
    from orchestration.spec import SpecError
    from prometar.config import ConfigError, parse_override

    try:
        options = LaunchOptions(
            data_root=Path(data_root), output=Path(output), address=address, tracking_uri=tracking_uri,
            overrides=dict(parse_override(text) for text in sets), dry_run=dry_run, force=force,
            max_concurrent=max_concurrent, write_best=Path(write_best) if write_best else None)
        report = launch(sweep, options)
    except (SpecError, LaunchError, TrackingError, ConfigError) as err:
        raise click.UsageError(str(err)) from None
    raise SystemExit(report.exit_code)


@main.command("status")
@click.argument("sweep", type=click.Path(dir_okay=False, path_type=str))
@click.option("--output", default="prometar_runs", show_default=True, type=click.Path(file_okay=False, path_type=str),
              help="The launch's output folder (holds the default ledger).")
@click.option("--tracking-uri", metavar="URI", help="MLflow server; default: sqlite:///<output>/mlflow.db.")
def status(sweep, output, tracking_uri) -> None:
    """Print done / failed / running / to do of a sweep, from the ledger."""
    from pathlib import Path

    from orchestration.runner import TrackingError, sweep_status
    from orchestration.spec import SpecError

    try:
        click.echo(sweep_status(sweep, output=Path(output), tracking_uri=tracking_uri).line())
    except (SpecError, TrackingError) as err:
        raise click.UsageError(str(err)) from None


@main.command("validate")
@click.argument("sweep", type=click.Path(dir_okay=False, path_type=str))
def validate(sweep) -> None:
    """Check a sweep file and print its trial count and a sample trial."""
    from orchestration.runner import describe_validation, validate_sweep
    from orchestration.spec import SpecError

    try:
        click.echo(describe_validation(*validate_sweep(sweep)))
    except SpecError as err:
        raise click.UsageError(str(err)) from None


if __name__ == "__main__":
    main()
