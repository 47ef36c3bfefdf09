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


if __name__ == "__main__":
    main()
