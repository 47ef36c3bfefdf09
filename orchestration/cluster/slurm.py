"""SLURM: an sbatch script that makes a Ray cluster of the allocation and runs the sweep's launch.

A Ray head on the first node of the allocation, workers on the others (``srun``), a wait until
all nodes joined (``prometar-sweep wait-nodes``), the launch, and a trap that stops every Ray
process it started; the caller's ``RAY_AUTH_*`` (and ``AWS_*``, for ``s3://`` storage)
environment reaches every node. CPUs per node default to what fills every GPU with trials
(``orchestration.cluster.sizing``). The script is the template ``templates/slurm.sbatch`` with its
``@MARKERS@`` filled in, in one pass: names from input enter its comments as
:func:`~orchestration.cluster.quoting.comment_text` and its shell lines as
:func:`~orchestration.cluster.quoting.shell_word`, so no input adds a line to the script.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from orchestration.cluster.common import launch_args, slug, validated_plan
from orchestration.cluster.quoting import comment_text, shell_join, shell_word
from orchestration.cluster.sizing import cpus_to_fill, fit_warnings
from orchestration.errors import ClusterError


def slurm_template() -> str:
    """The sbatch script template, with ``@MARKERS@`` for the values."""
    return (resources.files("orchestration") / "cluster" / "templates" / "slurm.sbatch").read_text()


def render_slurm(
    sweep: str | Path,
    *,
    nodes: int,
    gpus_per_node: int,
    cpus_per_node: int | None = None,
    partition: str | None = None,
    time_limit: str | None = None,
    account: str | None = None,
    tracking_uri: str | None = None,
    data_root: str | None = None,
    output: str | None = None,
    overrides: Sequence[str] = (),
    setup: Sequence[str] = (),
    script_name: str = "prometar.sbatch",
    storage: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> str:
    """An sbatch script running the sweep on a Ray cluster made of a SLURM allocation.

    Args:
        sweep: The sweep file, as seen from the submission folder (sbatch runs there).
        nodes: Nodes to allocate (1 head + ``nodes - 1`` workers; trials run on all of them).
        gpus_per_node: GPUs per node (``--gpus-per-node``; 0 for CPU nodes).
        cpus_per_node: CPUs per node given to Ray; default: what fills every GPU with trials
            (``sizing.cpus_to_fill``).
        partition: SLURM partition.
        time_limit: SLURM time limit (``HH:MM:SS`` or ``D-HH:MM:SS``).
        account: SLURM account.
        tracking_uri: MLflow tracking URI (a server, or SQLite on the shared filesystem).
        data_root: Dataset root on the shared filesystem.
        output: Output folder on the shared filesystem.
        overrides: ``KEY=VALUE`` overrides passed to the launch.
        setup: Shell lines run first on the batch node (``module load ...``, ``source .venv/bin/activate``).
        script_name: The script's file name, for the usage line.
        storage: Ray storage every node reaches (``s3://...`` or a folder on the shared filesystem).
        warn: Receives each warning (CPUs that cannot feed the GPUs); they are also comments in the script.

    Returns:
        The script text.

    Raises:
        ClusterError: Bad node, GPU or CPU counts (names the option).
        orchestration.errors.SpecError: A bad sweep file or override.
    """
    if nodes < 1:
        raise ClusterError(f"--nodes: must be 1 or more, got {nodes}")
    if gpus_per_node < 0:
        raise ClusterError(f"--gpus-per-node: must be 0 or more, got {gpus_per_node}")
    if cpus_per_node is not None and cpus_per_node < 1:
        raise ClusterError(f"--cpus-per-node: must be 1 or more, got {cpus_per_node}")
    if time_limit is not None and not re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){0,2}", time_limit):
        raise ClusterError(f"--time: expected MINUTES, HH:MM:SS or D-HH:MM:SS, got {time_limit!r}")
    plan = validated_plan(sweep, overrides)
    if cpus_per_node is None:
        cpus_per_node = cpus_to_fill(plan, gpus_per_node)
    warnings = fit_warnings(plan, gpus_per_node, cpus_per_node, cpu_flag="--cpus-per-node")
    for warning in warnings:
        if warn is not None:
            warn(warning)
    extra = ""
    if gpus_per_node:
        extra += f"#SBATCH --gpus-per-node={gpus_per_node}\n"
    for flag, value in (("partition", partition), ("time", time_limit), ("account", account)):
        if value:
            extra += f"#SBATCH --{flag}={_sbatch_value(flag, value)}\n"
    args = launch_args(
        str(sweep),
        address="$ADDRESS",
        tracking_uri=tracking_uri,
        data_root=data_root,
        output=output,
        overrides=overrides,
        storage=storage,
    )
    # ["launch", sweep, "--address", address, ...]: the address is the script's variable
    launch = " ".join([shell_join(args[:3]), '"$ADDRESS"', shell_join(args[4:])]).rstrip()
    replacements = {
        "SWEEP_NAME": slug(plan.name),
        "SWEEP": comment_text(str(sweep)),
        "SCRIPT_NAME": shell_word(script_name),
        "NODES": str(nodes),
        "CPUS": str(cpus_per_node),
        "GPUS": str(gpus_per_node),
        "SBATCH_EXTRA": extra,
        "SWEEP_Q": shell_word(str(sweep)),
        "SETUP": "\n".join(setup) + ("\n" if setup else ""),
        "LAUNCH": launch,
    }
    # one pass: a value holding a marker's text stays as it is
    text = re.sub(r"@([A-Z_]+)@", lambda m: replacements.get(m[1], m[0]), slurm_template())
    if warnings:  # after the shebang line
        first, _, rest = text.partition("\n")
        text = first + "\n" + "".join(f"# warning: {comment_text(w)}\n" for w in warnings) + rest
    return text


def _sbatch_value(flag: str, value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.,:+-]+", value):
        raise ClusterError(f"--{flag}: unexpected characters in {value!r}")
    return value
