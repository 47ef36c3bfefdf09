"""What every cluster backend shares: the launch command line, the sweep check, names.

Ray Jobs, SLURM and KubeRay all put the same ``prometar-sweep launch`` on a multi-node Ray cluster
(and therefore the same ledger, dedupe and tables as the local default); each validates and plans
the sweep first (:func:`validated_plan`), so a bad sweep file fails here, not on the cluster.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from orchestration.errors import ClusterError
from orchestration.sweeps.planning import SweepPlan, load_plan

JOB_ENV_VARS: dict[str, str] = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
"""Set in the job's environment (logs stream line by line); ``--env`` adds more."""


def launch_args(
    sweep: str,
    *,
    address: str,
    tracking_uri: str | None = None,
    data_root: str | None = None,
    output: str | None = None,
    overrides: Sequence[str] = (),
    storage: str | None = None,
) -> list[str]:
    """The arguments of ``prometar-sweep launch`` (after the verb's name) for a cluster run.

    Args:
        sweep: The sweep file, as the cluster sees it.
        address: The Ray address the launch connects to (``auto`` inside a Ray Job).
        tracking_uri: MLflow tracking URI (a server or a SQLite file on shared storage).
        data_root: Dataset root on the cluster's nodes.
        output: Output folder (Ray storage, artifacts) on shared storage.
        overrides: ``KEY=VALUE`` run-config overrides (``--set``).
        storage: Ray storage every node reaches (``s3://...`` or a shared folder; ``--storage``).

    Returns:
        ``["launch", sweep, "--address", address, ...]``.
    """
    args = ["launch", sweep, "--address", address]
    for flag, value in (
        ("--tracking-uri", tracking_uri),
        ("--data-root", data_root),
        ("--output", output),
        ("--storage", storage),
    ):
        if value:
            args += [flag, value]
    for item in overrides:
        args += ["--set", item]
    return args


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (``--env``) → a mapping.

    Raises:
        ClusterError: An item without ``=`` or with an empty key.
    """
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ClusterError(f"--env: expected KEY=VALUE, got {item!r}")
        env[key.strip()] = value
    return env


def submission_id(sweep_name: str, attempt: int) -> str:
    """The Ray Job submission id of one attempt at a sweep: ``<sweep name>-<attempt>``."""
    if attempt < 1:
        raise ClusterError(f"--attempt: must be 1 or more, got {attempt}")
    return f"{sweep_name}-{attempt}"


def validated_plan(sweep: str | Path, overrides: Sequence[str]) -> SweepPlan:
    """The sweep file planned with ``KEY=VALUE`` overrides (``SpecError`` / ``ConfigError`` if bad)."""
    from prometar.config import parse_override

    parsed = dict(parse_override(item) for item in overrides)
    return load_plan(sweep, overrides=parsed or None)


def slug(name: str) -> str:
    """A DNS-1123 label (Kubernetes names, SLURM job names): lower case, digits and ``-``."""
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return text[:63].rstrip("-") or "sweep"


def short_name(name: str, limit: int) -> str:
    """:func:`slug` of ``name`` in at most ``limit`` characters: a longer one is cut and ends in
    ``-`` plus 8 hex digits of a hash of the whole slug, so two long names stay distinct."""
    import hashlib

    full = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "sweep"
    if len(full) <= limit:
        return full
    digest = hashlib.sha1(full.encode()).hexdigest()[:8]
    return f"{full[: limit - 9].rstrip('-')}-{digest}"
