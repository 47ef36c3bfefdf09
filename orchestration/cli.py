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


if __name__ == "__main__":
    main()
