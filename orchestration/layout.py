"""The output folder's layout: where a launch, the demo and the results write under ``--output``.

``<output>/`` holds the embedded ledger (``mlflow.db`` and ``mlartifacts/``), Ray storage
(``ray/``), one run folder per trial key (``trials/<key>/``), the tables of each sweep
(``tables/<sweep>/``), the report of each sweep (``reports/<sweep>/``), the demo's plots
(``plots/``) and its toy build (``toy/``); a launch's lock file is ``.launch-<sweep>.lock`` and
the room it keeps for its records on a full disk ``.launch-<sweep>.reserve``. ``--output`` moves
all of it.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_OUTPUT = Path("prometar_runs")
"""The output folder of every verb that does not get ``--output``."""
DEFAULT_DATA_ROOT = Path("data")
"""The data root of every verb that does not get ``--data-root``."""


def ledger_file(output: Path | str) -> Path:
    """The embedded default ledger: a SQLite file."""
    return Path(output) / "mlflow.db"


def default_tracking_uri(output: Path | str = DEFAULT_OUTPUT) -> str:
    """The tracking URI of the embedded ledger: ``sqlite:///<output>/mlflow.db`` (absolute)."""
    return f"sqlite:///{ledger_file(output).resolve()}"


def artifact_root(output: Path | str) -> Path:
    """Where the embedded ledger's new experiments store artifacts (absolute)."""
    return Path(output).resolve() / "mlartifacts"


def ray_storage(output: Path | str) -> Path:
    """Ray Tune's storage (experiment state, per-trial logs, checkpoints)."""
    return Path(output) / "ray"


def trial_folder(output: Path | str, key: str) -> Path:
    """One trial key's run folder (the run's artifacts and epoch checkpoints), absolute."""
    return Path(output).resolve() / "trials" / key


def tables_folder(output: Path | str, sweep: str) -> Path:
    """A sweep's tables in every format."""
    return Path(output) / "tables" / sweep


def reports_folder(output: Path | str, sweep: str) -> Path:
    """A sweep's report (``report.html``, ``report.md``, ``figures/``)."""
    return Path(output) / "reports" / sweep


def plots_folder(output: Path | str) -> Path:
    """The demo's plots."""
    return Path(output) / "plots"


def toy_folder(output: Path | str) -> Path:
    """The demo's toy build (toy world, toy CLIP)."""
    return Path(output) / "toy"


def lock_file(output: Path | str, sweep: str) -> Path:
    """The lock a launch of ``sweep`` into ``output`` holds."""
    return Path(output) / f".launch-{sweep}.lock"


def space_reserve(output: Path | str, sweep: str) -> Path:
    """The room a launch of ``sweep`` keeps in ``output`` for its records should the disk fill."""
    return Path(output) / f".launch-{sweep}.reserve"
