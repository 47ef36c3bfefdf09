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


if __name__ == "__main__":
    main()
