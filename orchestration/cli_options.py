"""The command line's shared vocabulary: each option several verbs take, defined once as a decorator.

A verb stacks the decorators it needs (``@output_option()``, ``@tracking_uri_option()``, ...), so
one option has one spelling, one help text and one default everywhere; the defaults come from
``orchestration.layout``. The environment variables the options read are named here too.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click

from orchestration import layout
from prometar.config import parse_override

F = TypeVar("F", bound=Callable[..., Any])

TRACKING_ENV = "MLFLOW_TRACKING_URI"
"""Read by every verb with ``--tracking-uri`` (MLflow's own variable)."""
RAY_ADDRESS_ENV = "RAY_ADDRESS"
"""Read by ``launch --address`` and ``submit --address`` (Ray's own variable)."""
DATA_ROOT_ENV = "PROMETAR_DATA_ROOT"
"""Read by every verb with a local ``--data-root`` (``launch``, ``train``, ``validate``, ``data``)."""
STORAGE_ENV = "PROMETAR_STORAGE"
"""Read by ``launch --storage``."""

DEFAULT_LEDGER = f"sqlite:///<output>/{layout.ledger_file('').name}"
"""How the help texts name the default tracking URI."""
RUN_SET_HELP = "Dotted run-config override for every trial, YAML-typed (repeatable); the keys: train --help."
LAUNCHED_SET_HELP = (
    "Dotted run-config override the sweep was launched with, YAML-typed (repeatable): selects the "
    "runs `launch SWEEP --set ...` made; default: the overrides of the sweep's latest launch."
)


def sweep_argument(*, required: bool = True) -> Callable[[F], F]:
    """The sweep file (``SWEEP``)."""
    return click.argument("sweep", required=required, type=click.Path(dir_okay=False, path_type=str))


class _WritablePath(click.Path):
    """A path the verb writes (a file or a folder, made with its missing parents): refused at once
    when a part of it that exists is a file, not a folder (it could never be made)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        path = super().convert(value, param, ctx)
        for parent in Path(os.fspath(path)).parents:
            if parent.exists() or parent.is_symlink():
                if not parent.is_dir():
                    self.fail(f"{os.fspath(path)!r} lies inside {str(parent)!r}, which is a file", param, ctx)
                break
        return path


def output_option(help: str = "The launch's output folder (holds the default ledger).") -> Callable[[F], F]:
    """``--output DIR``, default ``layout.DEFAULT_OUTPUT``."""
    return click.option(
        "--output",
        default=str(layout.DEFAULT_OUTPUT),
        show_default=True,
        type=_WritablePath(file_okay=False, path_type=str),
        help=help,
    )


def data_root_option(
    help: str = "Folder holding the datasets.", *, required: bool = False, default: bool = True
) -> Callable[[F], F]:
    """``--data-root DIR`` (``$PROMETAR_DATA_ROOT``), default ``layout.DEFAULT_DATA_ROOT`` unless
    ``required`` or ``default`` is false."""
    return click.option(
        "--data-root",
        required=required,
        default=None if required or not default else str(layout.DEFAULT_DATA_ROOT),
        show_default=not required and default,
        type=click.Path(file_okay=False, path_type=str),
        envvar=DATA_ROOT_ENV,
        show_envvar=True,
        help=help,
    )


def tracking_uri_option(help: str = f"MLflow tracking URI; default: {DEFAULT_LEDGER}.") -> Callable[[F], F]:
    """``--tracking-uri URI`` (``$MLFLOW_TRACKING_URI``)."""
    return click.option("--tracking-uri", metavar="URI", envvar=TRACKING_ENV, show_envvar=True, help=help)


def set_option(help: str = RUN_SET_HELP) -> Callable[[F], F]:
    """``--set KEY=VALUE`` (repeatable), collected as ``sets``."""
    return click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=help)


def experiment_option(
    help: str = "MLflow experiment (instead of a sweep file): every FINISHED run.",
) -> Callable[[F], F]:
    """``--experiment NAME``."""
    return click.option("--experiment", metavar="NAME", help=help)


def runs_csv_option(help: str) -> Callable[[F], F]:
    """``--runs CSV``, collected as ``runs_csv``."""
    return click.option("--runs", "runs_csv", type=click.Path(dir_okay=False, path_type=str), help=help)


def published_options(
    published_help: str = "Published numbers to compare with; default: the shipped reference.",
    no_published_help: str = "Leave out the published comparison.",
) -> Callable[[F], F]:
    """``--published CSV``, ``--no-published`` and ``--published-variant NAME``."""

    def decorate(function: F) -> F:
        function = click.option(
            "--published-variant",
            "variant",
            metavar="NAME",
            help="Which published CoOp row: promptsrc (default; PromptSRC's and ProMetaR's tables) or "
            "kgcoop (KgCoOp's README).",
        )(function)
        function = click.option("--no-published", is_flag=True, help=no_published_help)(function)
        return click.option(
            "--published", type=click.Path(dir_okay=False, path_type=str), help=published_help
        )(function)

    return decorate


def out_file_option() -> Callable[[F], F]:
    """``-o/--out FILE``: write the verb's text there instead of stdout."""
    return click.option(
        "-o", "--out", type=_WritablePath(dir_okay=False, path_type=str), help="Write here, not stdout."
    )


def out_folder_option(help: str) -> Callable[[F], F]:
    """``-o/--out DIR`` (required): the folder a verb writes its files in."""
    return click.option(
        "-o", "--out", required=True, type=_WritablePath(file_okay=False, path_type=str), help=help
    )


def storage_option(help: str) -> Callable[[F], F]:
    """``--storage URI`` (Ray storage)."""
    return click.option("--storage", metavar="URI", help=help)


def token_option(help: str = "Ray auth token; default: $RAY_AUTH_TOKEN.") -> Callable[[F], F]:
    """``--token TOKEN`` (Ray's auth token)."""
    return click.option("--token", metavar="TOKEN", help=help)


def ray_storage_option(help: str) -> Callable[[F], F]:
    """``--storage URI`` (``$PROMETAR_STORAGE``): the Ray storage a local launch uses."""
    return click.option("--storage", metavar="URI", envvar=STORAGE_ENV, show_envvar=True, help=help)


def ray_address_option(help: str) -> Callable[[F], F]:
    """``--address ADDR`` (``$RAY_ADDRESS``): a running Ray cluster to join."""
    return click.option("--address", metavar="ADDR", envvar=RAY_ADDRESS_ENV, show_envvar=True, help=help)


def launch_target(function: F) -> F:
    """Collect the options ``launch`` and ``reproduce`` share in their option records
    (``LaunchOptions``, ``ReproduceOptions``) into one keyword argument, ``target``: where the data
    is (``--data-root``), where the run goes (``--output``, ``--storage``, ``--address``,
    ``--tracking-uri``) and the ``--set`` overrides, parsed; the record is then built as
    ``Options(**target, ...)``. Stacked below those options' decorators (nearest the function).
    """

    @functools.wraps(function)
    def collect(
        *args: Any,
        data_root: str,
        output: str,
        storage: str | None,
        address: str | None,
        tracking_uri: str | None,
        sets: Iterable[str],
        **kwargs: Any,
    ) -> Any:
        target = {
            "data_root": Path(data_root),
            "output": Path(output),
            "storage": storage,
            "address": address,
            "tracking_uri": tracking_uri,
            "overrides": dict(parse_override(text) for text in sets),
        }
        return function(*args, target=target, **kwargs)

    return collect  # type: ignore[return-value]
