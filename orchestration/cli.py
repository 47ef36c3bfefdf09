"""The ``prometar-sweep`` command line: one short click function per verb.

Each verb parses its arguments and calls one library function. Bad input — any
:class:`~prometar.errors.InputError`, caught in one place (:class:`_Verb`) — exits with code 2 and
one message naming the file, key or path; failed trials exit with code 1.
"""

from __future__ import annotations

import click

import prometar
from orchestration import layout
from orchestration.cli_options import (
    LAUNCHED_SET_HELP,
    RAY_ADDRESS_ENV,
    data_root_option,
    experiment_option,
    launch_target,
    out_file_option,
    out_folder_option,
    output_option,
    published_options,
    ray_address_option,
    ray_storage_option,
    runs_csv_option,
    set_option,
    storage_option,
    sweep_argument,
    token_option,
    tracking_uri_option,
)
from orchestration.cluster.kubernetes import MAX_REPLICAS
from orchestration.errors import LaunchStoppedError
from prometar.config import MAX_SEED
from prometar.errors import InputError
from prometar.files import disk_full_path, is_disk_full, write_atomic
from prometar.yamlio import cap

SEED = click.IntRange(0, MAX_SEED)
"""A run seed on the command line (``prometar.config.MAX_SEED``)."""

MAX_MESSAGE = 2000
"""Most characters of an input error's message the CLI prints."""


class _Verb(click.Command):
    """A verb whose bad input (an :class:`~prometar.errors.InputError`) is a usage error: exit 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except InputError as err:
            # One line's worth, whatever the input echoed (an alias bomb, a huge value).
            raise click.UsageError(cap(str(err), MAX_MESSAGE), ctx=ctx) from None
        except LaunchStoppedError as err:  # not input: the store went away, the disk filled
            click.echo(f"Error: {cap(str(err), MAX_MESSAGE)}", err=True)
            raise SystemExit(1) from None
        except Exception as err:
            if not is_disk_full(err):
                raise
            # not input either: a table, figure or report that found the disk full
            path = disk_full_path(err)
            where = f"cannot write {path}: " if path else ""
            click.echo(f"Error: {where}no space left on device; free space and run this again", err=True)
            raise SystemExit(1) from None


class _Verbs(click.Group):
    """The verb group: every verb (and sub-verb) is a :class:`_Verb`."""

    command_class = _Verb
    group_class = type  # sub-groups (``data``, ``toy``) are _Verbs too


@click.group(cls=_Verbs, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(prometar.__version__, prog_name="prometar-sweep")
def main() -> None:
    """Run ProMetaR and its baselines on CLIP at cluster scale, and print the paper's tables."""
    import os

    from orchestration.ledger.uri import bounded_request_settings

    os.environ.update(bounded_request_settings())  # the whole command: no MLflow request waits minutes


def _warn(message: str) -> None:
    """A warning on stderr (the verb goes on)."""
    click.echo(f"warning: {message}", err=True)


def _emit(text: str, out: str | None, *, executable: bool = False) -> None:
    """Write a verb's text output to ``out`` (``-o``), or print it."""
    if not out:
        click.echo(text, nl=False)
        return
    from pathlib import Path

    write_atomic(Path(out), lambda handle: handle.write(text))  # never half-written (a full disk)
    if executable:
        Path(out).chmod(0o755)


@main.group("data")
def data_group() -> None:
    """Inspect the benchmark datasets under a data root."""


@data_group.command("check")
@sweep_argument(required=False)
@data_root_option(required=True)
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    metavar="KEY",
    help="Dataset key to check (repeatable); default: the sweep file's datasets, else all 15.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Check that images exist without decoding them (default: decode every image).",
)
def data_check(sweep: str | None, data_root: str, datasets: tuple[str, ...], quick: bool) -> None:
    """Check layout, split files and images; exit 2 if a requested dataset is unusable.

    The datasets asked for (--dataset, or those a sweep file trains and evaluates on) must be
    usable; without either, all 15 are checked and an absent one is reported without failing.
    """
    from prometar.data.check import check_datasets, dataset_present

    requested = list(datasets)
    if sweep is not None:
        from orchestration.sweeps.planning import load_plan

        plan = load_plan(sweep)
        requested += [key for key in (*plan.datasets, *plan.targets) if key not in requested]
    reports = check_datasets(data_root, requested or None, decode=not quick)
    failed = False
    for report in reports:
        absent = not requested and not dataset_present(report.key, data_root)
        click.echo(report.line() + (" (absent; not requested)" if absent else ""))
        for bad in report.bad_images:
            click.echo(f"  cannot decode {bad}")
        failed = failed or (not report.usable and not absent)
    if failed:
        raise SystemExit(2)


@data_group.command("fewshot")
@click.option("--dataset", required=True, metavar="KEY", help="Dataset key (data.dataset).")
@click.option("--shots", required=True, type=click.IntRange(min=1), help="Training images per class (K).")
@click.option("--seed", required=True, type=SEED, help="Run seed (0 .. 2^32 - 1).")
@data_root_option(required=True)
@out_file_option()
def data_fewshot(dataset, shots, seed, data_root, out) -> None:
    """Print the few-shot subsets a seed picks, as JSON {"train": [...], "val": [...]}; trains nothing.

    Each entry is [image path as the split file names it, label, class name]; the same record a
    trial writes as fewshot_subset.json. Nothing is written to the data root.
    """
    import json
    from collections import Counter

    from prometar.data.fewshot import few_shot, subset_listing
    from prometar.data.readers import read_dataset
    from prometar.errors import DataError

    splits = read_dataset(dataset, data_root)
    largest = max(Counter(item.label for item in splits.train).values(), default=0)
    if splits.train and shots > largest:  # (no training split at all: few_shot names that)
        raise DataError(
            f"--shots {shots}: {dataset} has at most {largest} training images per class under "
            f"{data_root}; ask for {largest} or fewer"
        )
    sampled = few_shot(
        splits,
        key=dataset,
        data_root=data_root,
        shots=shots,
        seed=seed,
        use_cache=False,
    )
    listing = subset_listing(sampled, dataset, data_root)
    blocks = []
    for name, rows in listing.items():  # one image per line
        lines = ",\n".join(f"    {json.dumps(row)}" for row in rows)
        blocks.append(f"  {json.dumps(name)}: [\n{lines}\n  ]" if rows else f"  {json.dumps(name)}: []")
    _emit("{\n" + ",\n".join(blocks) + "\n}\n", out)


def _config_keys() -> str:
    """The ``train`` verb's epilog: every dotted run-config key ``--set`` takes, with its one-line doc."""
    from prometar.config import describe_fields

    fields = describe_fields()
    width = max(map(len, fields))
    lines = [f"  {key:<{width}}  {doc}" for key, doc in fields.items()]
    return "\b\nRun-config keys (--set KEY=VALUE; also a sweep file's overrides and grid):\n" + "\n".join(
        lines
    )


@main.command("train", epilog=_config_keys())
@click.option("--dataset", required=True, metavar="KEY", help="Dataset key (data.dataset).")
@click.option("--seed", required=True, type=SEED, help="Run seed (0 .. 2^32 - 1).")
@click.option("--shots", required=True, type=int, help="Training images per class (data.shots).")
@click.option("--method", metavar="NAME", help="Method (prompt design × scheme); default: the preset's.")
@click.option(
    "--preset",
    default="official",
    show_default=True,
    metavar="NAME|FILE",
    help="Run-config preset (official, fixed) or a run-config YAML file.",
)
@set_option("Dotted run-config override, YAML-typed (repeatable), e.g. optim.epochs=5.")
@data_root_option()
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=str),
    help=f"Run folder; default: ./{layout.DEFAULT_OUTPUT}/train/<dataset>/<method>/<shots>shots_seed<seed>.",
)
@click.option("--device", metavar="DEVICE", help="cpu, cuda, cuda:N or auto (backbone.device).")
@click.option(
    "--resume",
    "resume_from",
    type=click.Path(file_okay=False, exists=True, path_type=str),
    help="Continue from a checkpoints/epoch_<k> folder of this run, or from its checkpoints/ folder "
    "(the newest readable epoch). Checkpoints hold tensors and plain data only.",
)
def train(dataset, seed, shots, method, preset, sets, data_root, output, device, resume_from) -> None:
    """Train and evaluate one run, without Ray or MLflow; print per-epoch progress and final metrics."""
    import time
    from pathlib import Path

    from prometar import events
    from prometar import metrics as names
    from prometar.config import parse_override, resolve_config
    from prometar.run import run

    overrides = dict(parse_override(text) for text in sets)
    overrides.update({"data.dataset": dataset, "seed": seed, "data.shots": shots})
    if method is not None:
        overrides["method"] = method
    config = resolve_config(preset, overrides)
    out = Path(
        output or layout.DEFAULT_OUTPUT / "train" / dataset / config.method / f"{shots}shots_seed{seed}"
    )
    start = time.monotonic()

    def progress(event: dict) -> None:
        if event[events.EVENT] != events.EPOCH:
            return
        shown = " ".join(f"{k}={event[k]:.4g}" for k in (names.LOSS, names.TRAIN_ACC, names.LR) if k in event)
        click.echo(
            f"epoch {event['epoch']}/{config.optim.epochs} {shown} [{time.monotonic() - start:.0f}s]",
            err=True,
        )

    click.echo(
        f"{config.method} on {dataset} ({config.protocol}, {shots} shots, seed {seed}) -> {out}", err=True
    )
    result = run(
        config,
        data_root=Path(data_root),
        output_dir=out,
        callback=progress,
        resume_from=Path(resume_from) if resume_from else None,
        device=device,
    )
    for name, value in result.metrics.items():
        click.echo(f"{name}\t{value:.2f}")


def _load_source(
    sweep,
    experiment,
    runs_csv,
    output,
    tracking_uri,
    sets,
    published,
    no_published,
    *,
    need_runs=True,
    variant=None,
):
    """``load_source`` for the reading verbs — the ledger of ``--output`` unless ``--tracking-uri``
    names one, ``--set`` parsed (none given: the overrides of the sweep's latest launch), the
    published numbers to compare with in its context; prints the note on runs the sweep file left
    out to stderr. ``need_runs``: a sweep file selecting none of the experiment's FINISHED runs is
    bad input, named with the launches there are.

    Raises:
        InputError: Bad arguments, sweep file, override or ledger.
    """
    from dataclasses import replace

    from orchestration.errors import ResultsError
    from orchestration.layout import default_tracking_uri
    from orchestration.results.source import load_source
    from prometar.config import parse_override

    overrides = dict(parse_override(text) for text in sets) if sets else None
    source = load_source(
        sweep,
        experiment=experiment,
        runs_csv=runs_csv,
        tracking_uri=tracking_uri or default_tracking_uri(output),
        overrides=overrides,
    )
    nothing = source.nothing_planned()
    if need_runs and nothing:
        raise ResultsError(nothing)
    note = source.unplanned_note()
    if note:
        click.echo(note, err=True)
    context = source.context.with_published(published, compare=not no_published, variant=variant)
    return replace(source, context=context)


@main.command("table")
@sweep_argument(required=False)
@experiment_option()
@set_option(LAUNCHED_SET_HELP)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "latex", "csv"]),
    default="markdown",
    show_default=True,
    help="Output format.",
)
@published_options()
@click.option(
    "--compare",
    "methods",
    nargs=2,
    metavar="A B",
    help="Add the paired comparison B − A per dataset and on average (seeds paired by seed number); "
    "with --format csv, only the comparison.",
)
@runs_csv_option("CSV of per-run rows (method,dataset,seed,shots,base_acc,new_acc): no MLflow.")
@click.option(
    "--per-run",
    is_flag=True,
    help="One row per FINISHED run instead (trial key, run id, method, dataset, seed, shots, the "
    "hyper-parameters that differ, every final metric) as CSV; -o FILE.parquet writes Parquet.",
)
@output_option()
@tracking_uri_option()
@out_file_option()
def table(
    sweep,
    experiment,
    sets,
    fmt,
    published,
    no_published,
    variant,
    methods,
    runs_csv,
    per_run,
    output,
    tracking_uri,
    out,
) -> None:
    """Print the paper's tables from the FINISHED runs a sweep plans (or a CSV of runs)."""
    from dataclasses import replace

    from click.core import ParameterSource

    from orchestration.results.comparison import KIND as COMPARISON_KIND
    from orchestration.results.publish import publish
    from orchestration.results.render import render_tables

    explicit_format = click.get_current_context().get_parameter_source("fmt") is not ParameterSource.DEFAULT
    if per_run and explicit_format and fmt != "csv":
        raise click.UsageError("--per-run writes CSV (or Parquet with -o FILE.parquet): leave out --format")
    source = _load_source(
        sweep, experiment, runs_csv, output, tracking_uri, sets, published, no_published, variant=variant
    )
    if methods:
        source = replace(source, context=replace(source.context, comparisons=(tuple(methods),)))
    if per_run:
        from orchestration.results.export import per_run_csv, per_run_frame, write_per_run

        frame = per_run_frame(source.ledger, include=source.context.search_space)
        if out:
            write_per_run(frame, out)
            return
        _emit(per_run_csv(frame), None)
        return
    done = publish(source.context, source.ledger, figures=False)
    shown = done.tables
    if methods and fmt == "csv":  # one table per CSV: the comparison asked for
        shown = [t for t in shown if t.name.startswith(COMPARISON_KIND)]
    _emit(render_tables(shown, fmt), out)


@main.command("plot")
@sweep_argument(required=False)
@experiment_option()
@set_option(LAUNCHED_SET_HELP)
@runs_csv_option("CSV of per-run rows: no MLflow (no training curves).")
@published_options(
    "Published numbers drawn beside ours; default: the shipped reference.",
    "Leave out the published numbers.",
)
@output_option()
@tracking_uri_option()
@out_folder_option("Folder for the figures (PNG, PDF and SVG of each).")
def plot(
    sweep, experiment, sets, runs_csv, published, no_published, variant, output, tracking_uri, out
) -> None:
    """Draw the paper's figures (PNG at 300 dpi, PDF, SVG) from the FINISHED runs a sweep plans."""
    from orchestration.results.publish import publish

    source = _load_source(
        sweep, experiment, runs_csv, output, tracking_uri, sets, published, no_published, variant=variant
    )
    done = publish(source.context, source.ledger, tables=False, plots_dir=out)
    for path in done.plot_files:
        click.echo(str(path))


@main.command("report")
@sweep_argument(required=False)
@experiment_option("MLflow experiment (instead of a sweep file): every run.")
@set_option(LAUNCHED_SET_HELP)
@published_options()
@output_option()
@tracking_uri_option()
@click.option(
    "--log/--no-log",
    default=False,
    help="Also log the report as artifacts of the sweep's latest launch run, replacing the report "
    "that launch logged (default: only the files under --out).",
)
@out_folder_option("Folder for report.html, report.md and figures/.")
def report(sweep, experiment, sets, published, no_published, variant, output, tracking_uri, log, out) -> None:
    """Write a sweep's report: one self-contained HTML page (tables, figures, trial counts and failures,
    provenance) and its Markdown twin (--log: also on the sweep's latest launch run)."""
    from dataclasses import replace

    from orchestration.ledger.vocabulary import REPORT_ARTIFACT_PATH
    from orchestration.results.publish import publish

    source = _load_source(
        sweep,
        experiment,
        None,
        output,
        tracking_uri,
        sets,
        published,
        no_published,
        need_runs=False,
        variant=variant,
    )
    # the report compares ProMetaR with every other method it ran, paired by seed
    source = replace(source, context=replace(source.context, comparisons=None))
    done = publish(source.context, source.ledger, report_dir=out, log_latest=log, strict=False)
    for path in done.report_files[:2]:
        click.echo(str(path))
    if done.logged_to:
        click.echo(f"logged as artifacts {REPORT_ARTIFACT_PATH}/ of run {done.logged_to}", err=True)


@main.command("launch")
@sweep_argument()
@data_root_option()
@output_option("Local folder: the SQLite ledger mlflow.db, artifacts, tables, trial files, Ray storage.")
@ray_storage_option(
    "Ray storage (checkpoints): a folder, or s3://BUCKET/PREFIX (endpoint, region and "
    "credentials from the AWS_* variables); default: <output>/ray."
)
@ray_address_option("Join a running Ray cluster (HOST:PORT or auto); default: a local Ray on 127.0.0.1.")
@tracking_uri_option(
    "MLflow tracking URI (a server: http://HOST:PORT); default: sqlite:///<output>/mlflow.db."
)
@set_option()
@click.option("--dry-run", is_flag=True, help="Print done / to do / total and write nothing.")
@click.option("--force", is_flag=True, help="Rerun trials already FINISHED.")
@click.option("--max-concurrent", type=click.IntRange(min=1), help="At most N trials at once.")
@click.option(
    "--write-best",
    type=click.Path(dir_okay=False, path_type=str),
    help="Search sweeps: write the best configuration as a sweep file for the real protocol.",
)
@click.option(
    "--no-gpu-check",
    is_flag=True,
    help="Skip the check that torch can use the GPUs the sweep asks for (a trial on an unusable GPU "
    "still fails at once).",
)
@launch_target
def launch(
    sweep,
    target,
    dry_run,
    force,
    max_concurrent,
    write_best,
    no_gpu_check,
) -> None:
    """Run a sweep on Ray Tune, recording every trial in MLflow; finished trials are skipped."""
    from pathlib import Path

    from orchestration.launch.runner import LaunchOptions, launch

    options = LaunchOptions(
        **target,
        dry_run=dry_run,
        force=force,
        max_concurrent=max_concurrent,
        write_best=Path(write_best) if write_best else None,
        gpu_check=not no_gpu_check,
    )
    report = launch(sweep, options)
    raise SystemExit(report.exit_code)


@main.command("status")
@sweep_argument()
@output_option()
@tracking_uri_option()
@set_option(LAUNCHED_SET_HELP)
@click.option(
    "--address", metavar="URL", help="Ray dashboard the sweep was submitted to: adds the job's state."
)
@token_option("Ray auth token for --address; default: $RAY_AUTH_TOKEN.")
def status(sweep, output, tracking_uri, sets, address, token) -> None:
    """Print done / failed / running / to do of a sweep, from the ledger (reads only)."""
    from pathlib import Path

    from orchestration.cluster.jobs import job_line
    from orchestration.launch.status import sweep_status
    from prometar.config import parse_override

    overrides = dict(parse_override(text) for text in sets) if sets else None
    result = sweep_status(sweep, output=Path(output), tracking_uri=tracking_uri, overrides=overrides)
    click.echo(result.line() + (f" · {job_line(address, result.sweep, token)}" if address else ""))


@main.command("ui")
@output_option()
@tracking_uri_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the UI listens on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=5000, show_default=True, help="Port of the UI."
)
def ui(output, tracking_uri, host, port) -> None:
    """Show the runs in the MLflow UI: `mlflow ui` on the launch's ledger, or the server's own UI."""
    import subprocess
    from pathlib import Path

    from orchestration.layout import default_tracking_uri
    from orchestration.ui import check_port_free, ui_target

    uri = tracking_uri or default_tracking_uri(Path(output))
    target = ui_target(uri, host=host, port=port)
    if target.command is None:
        click.echo(f"MLflow UI of {uri}: {target.url} (the tracking server serves it)")
        return
    check_port_free(host, port)
    click.echo(f"MLflow UI of {uri}: {target.url} (Ctrl-C stops it)", err=True)
    process = subprocess.Popen(target.command)
    try:
        raise SystemExit(process.wait())
    except KeyboardInterrupt:
        process.terminate()
        raise SystemExit(process.wait()) from None


@main.command("doctor")
@sweep_argument(required=False)
@data_root_option()
@output_option()
@ray_storage_option("Ray storage: a folder or s3://BUCKET/PREFIX; default: <output>/ray.")
@ray_address_option("A running Ray cluster (HOST:PORT or auto): asked for its GPUs.")
@tracking_uri_option()
@set_option()
@click.option("--json", "as_json", is_flag=True, help="One JSON object: ok, and each check.")
def doctor(sweep, data_root, output, storage, address, tracking_uri, sets, as_json) -> None:
    """Check that this node can run a sweep: torch, CUDA, driver, GPUs, tracking, storage, data.

    One line per check; exit 1 when one fails. The GPU checks fail only when SWEEP asks for GPUs.
    """
    import json
    from pathlib import Path

    from orchestration.launch.doctor import DoctorOptions, failing, run_checks
    from orchestration.launch.doctor import as_json as checks_json
    from orchestration.sweeps.planning import load_plan
    from prometar.config import parse_override

    plan = load_plan(sweep, overrides=dict(parse_override(text) for text in sets)) if sweep else None
    options = DoctorOptions(
        data_root=Path(data_root),
        output=Path(output),
        tracking_uri=tracking_uri,
        storage=storage,
        address=address,
    )
    checks = run_checks(options, plan)
    click.echo(json.dumps(checks_json(checks), indent=2) if as_json else "\n".join(c.line() for c in checks))
    raise SystemExit(1 if failing(checks) else 0)


@main.command("validate")
@sweep_argument()
@data_root_option(
    "Also check every trial's inputs as a launch would: the split files and images of each dataset, "
    "and the backbone weights.",
    default=False,
)
@set_option()
def validate(sweep, data_root, sets) -> None:
    """Check a sweep file and print its trial count and a sample trial.

    Without --data-root: the schema, every trial's run config, the backbone names and the prompt
    depths against them. With it: what a launch checks before its first trial.
    """
    from pathlib import Path

    from orchestration.launch.preflight import check_data_root, check_inputs
    from orchestration.sweeps.planning import load_plan
    from prometar.config import parse_override

    plan = load_plan(sweep, overrides=dict(parse_override(text) for text in sets) or None)
    if data_root is not None:
        check_data_root(plan, Path(data_root))
    check_inputs(plan, Path(data_root) if data_root else None, weights=data_root is not None)
    for note in plan.notes:
        click.echo(note, err=True)
    click.echo(plan.describe())


@main.command("submit")
@sweep_argument()
@click.option(
    "--address",
    required=True,
    metavar="URL",
    envvar=RAY_ADDRESS_ENV,
    show_envvar=True,
    help="The cluster's Ray dashboard, http://HEAD:8265.",
)
@click.option(
    "--attempt",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Attempt number: the submission id is <sweep name>-<attempt>; a repeat is refused.",
)
@click.option("--follow", is_flag=True, help="Stream the job's logs; exit 0 if it SUCCEEDED, 1 otherwise.")
@token_option("Ray auth token; default: $RAY_AUTH_TOKEN, then $RAY_AUTH_TOKEN_PATH.")
@tracking_uri_option("MLflow tracking URI the cluster reaches (a server, or SQLite on shared storage).")
@click.option("--data-root", metavar="DIR", help="Dataset root on the cluster's nodes.")
@click.option("--output", metavar="DIR", help="Output folder on the head node or shared storage (absolute).")
@storage_option("Ray storage every node reaches: s3://BUCKET/PREFIX or a shared folder.")
@set_option("Run-config override (repeatable).")
@click.option(
    "--env", "envs", multiple=True, metavar="KEY=VALUE", help="Environment variable for the job (repeatable)."
)
@click.option(
    "--working-dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Folder shipped with the job; it must hold the sweep file.",
)
def submit(
    sweep, address, attempt, follow, token, tracking_uri, data_root, output, storage, sets, envs, working_dir
) -> None:
    """Submit `launch SWEEP --address auto` to a Ray cluster as a Ray Job."""
    from orchestration.cluster.common import parse_env
    from orchestration.cluster.jobs import follow_job, submit_sweep

    done = submit_sweep(
        sweep,
        address=address,
        attempt=attempt,
        token=token,
        working_dir=working_dir,
        tracking_uri=tracking_uri,
        data_root=data_root,
        output=output,
        storage=storage,
        overrides=sets,
        env_vars=parse_env(envs),
    )
    for warning in done.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"submitted {done.submission_id} to {address}: {done.entrypoint}", err=True)
    if follow:
        state = follow_job(address, done.submission_id, token=token)
        click.echo(f"job {done.submission_id}: {state}", err=True)
        raise SystemExit(0 if state == "SUCCEEDED" else 1)


@main.command("slurm")
@sweep_argument()
@click.option(
    "--nodes", required=True, type=click.IntRange(min=1), help="Nodes: one Ray head, the rest workers."
)
@click.option(
    "--gpus-per-node", required=True, type=click.IntRange(min=0), help="GPUs per node (0: CPU only)."
)
@click.option(
    "--cpus-per-node",
    type=click.IntRange(min=1),
    help="CPUs per node for Ray; default: enough for the sweep's resources to put trials on every GPU.",
)
@click.option("--partition", metavar="P", help="SLURM partition.")
@click.option("--time", "time_limit", metavar="T", help="SLURM time limit (HH:MM:SS or D-HH:MM:SS).")
@click.option("--account", metavar="A", help="SLURM account.")
@click.option("--mem", metavar="M", help="Memory per node (64G; 0: all of it).")
@click.option("--qos", metavar="Q", help="SLURM quality of service.")
@click.option("--constraint", metavar="FEATURES", help="Node features, e.g. a100 or 'a100&ib'.")
@click.option("--exclusive/--no-exclusive", default=True, show_default=True, help="Ask for whole nodes.")
@click.option(
    "--sbatch-line",
    "sbatch_lines",
    multiple=True,
    metavar="'#SBATCH --OPT=V'",
    help="One more directive line, e.g. '#SBATCH --mail-type=END' (repeatable).",
)
@tracking_uri_option("MLflow server, or SQLite on the shared filesystem.")
@click.option("--data-root", metavar="DIR", help="Dataset root on the shared filesystem.")
@click.option("--output", metavar="DIR", help="Output folder on the shared filesystem.")
@storage_option("Ray storage: s3://BUCKET/PREFIX or a folder on the shared filesystem.")
@set_option("Run-config override (repeatable).")
@click.option(
    "--setup", multiple=True, metavar="LINE", help="Shell line run first, e.g. 'source .venv/bin/activate'."
)
@out_file_option()
def slurm(
    sweep,
    nodes,
    gpus_per_node,
    cpus_per_node,
    partition,
    time_limit,
    account,
    mem,
    qos,
    constraint,
    exclusive,
    sbatch_lines,
    tracking_uri,
    data_root,
    output,
    storage,
    sets,
    setup,
    out,
) -> None:
    """Write an sbatch script running the sweep on a Ray cluster built from the allocation."""
    from pathlib import Path

    from orchestration.cluster.slurm import render_slurm

    text = render_slurm(
        sweep,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        cpus_per_node=cpus_per_node,
        partition=partition,
        time_limit=time_limit,
        account=account,
        tracking_uri=tracking_uri,
        data_root=data_root,
        output=output,
        overrides=sets,
        setup=setup,
        script_name=Path(out).name if out else "prometar.sbatch",
        storage=storage,
        warn=_warn,
        mem=mem,
        qos=qos,
        constraint=constraint,
        exclusive=exclusive,
        sbatch_lines=sbatch_lines,
    )
    _emit(text, out, executable=True)


@main.command("k8s")
@sweep_argument()
@click.option(
    "--image", default="prometar:latest", show_default=True, help="Image built from docker/Dockerfile."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=MAX_REPLICAS),
    default=1,
    show_default=True,
    help="GPU worker pods.",
)
@click.option(
    "--gpus-per-worker", type=click.IntRange(min=0), default=1, show_default=True, help="GPUs per worker pod."
)
@click.option(
    "--worker-cpus",
    type=click.IntRange(min=1),
    help="CPUs per worker pod; default: enough for the sweep's resources to put trials on every GPU.",
)
@click.option(
    "--worker-memory",
    metavar="QUANTITY",
    help="Memory per worker pod; default: the trials a pod runs at once x --memory-per-trial, plus 4Gi.",
)
@click.option("--memory-per-trial", default="8Gi", show_default=True, help="Host memory one trial needs.")
@click.option(
    "--node-selector",
    "node_selectors",
    multiple=True,
    metavar="KEY=VALUE",
    help="Label a worker pod's node must carry (repeatable).",
)
@click.option(
    "--toleration",
    "tolerations",
    multiple=True,
    metavar="KEY[=VALUE]:EFFECT",
    help="Taint the worker pods tolerate, e.g. nvidia.com/gpu:NoSchedule (repeatable).",
)
@click.option(
    "--data-claim", default="prometar-data", show_default=True, help="PVC holding the datasets (/data)."
)
@click.option(
    "--output-claim",
    metavar="PVC",
    help="ReadWriteMany PVC for outputs (/outputs); default: prometar-outputs, or none (a volume of "
    "each pod) with --storage s3://... and --tracking-uri.",
)
@tracking_uri_option("MLflow server; default: sqlite:////outputs/mlflow.db.")
@storage_option("Ray storage every pod reaches: s3://BUCKET/PREFIX.")
@click.option(
    "--env-secret",
    "env_secrets",
    multiple=True,
    metavar="SECRET",
    help="Secret whose keys become the pods' environment, e.g. AWS_* for S3 (repeatable).",
)
@click.option("--namespace", metavar="NS", help="Namespace written into the manifests.")
@set_option("Run-config override (repeatable).")
@click.option("--no-token-auth", is_flag=True, help="Leave Ray token authentication off.")
@out_file_option()
def k8s(
    sweep,
    image,
    workers,
    gpus_per_worker,
    worker_cpus,
    worker_memory,
    memory_per_trial,
    node_selectors,
    tolerations,
    data_claim,
    output_claim,
    tracking_uri,
    storage,
    env_secrets,
    namespace,
    sets,
    no_token_auth,
    out,
) -> None:
    """Write a KubeRay RayJob manifest (and the sweep's ConfigMap) running the sweep."""

    from orchestration.cluster.kuberay import render_rayjob

    text = render_rayjob(
        sweep,
        image=image,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        worker_cpus=worker_cpus,
        worker_memory=worker_memory,
        memory_per_trial=memory_per_trial,
        node_selectors=node_selectors,
        tolerations=tolerations,
        data_claim=data_claim,
        output_claim=output_claim,
        tracking_uri=tracking_uri,
        namespace=namespace,
        overrides=sets,
        token_auth=not no_token_auth,
        storage=storage,
        env_secrets=env_secrets,
        warn=_warn,
    )
    _emit(text, out)


@main.command("demo")
@output_option("Toy build (toy/), the SQLite ledger mlflow.db, Ray storage, tables and plots.")
def demo(output) -> None:
    """Build the toy world and toy CLIP, run sweeps/demo.yaml on them, print the table, write plots."""
    from orchestration.demo import run_demo
    from prometar.toy.build import ToyBuildError

    try:
        report = run_demo(output)
    except ToyBuildError as err:  # quality floor or time limit: the toy build, not the user's input
        click.echo(f"error: {err}", err=True)
        raise SystemExit(1) from None
    raise SystemExit(report.exit_code)


@main.command("reproduce")
@click.argument("campaign", required=False, type=click.Path(dir_okay=False, path_type=str))
@data_root_option()
@output_option("One output folder for every sweep of the campaign (ledger, trials, tables, reports).")
@ray_storage_option("Ray storage (as launch).")
@ray_address_option("Join a Ray cluster.")
@tracking_uri_option()
@set_option()
@click.option(
    "--only", multiple=True, metavar="TABLE", help="Only this table (and the tables it needs first)."
)
@click.option("--dry-run", is_flag=True, help="Print trials, done / to do and cost per table; write nothing.")
@click.option("--max-concurrent", type=click.IntRange(min=1), help="At most N trials at once.")
@click.option(
    "--toy",
    is_flag=True,
    help="On the toy world (built here; fewer datasets and seeds), judged against its own references "
    "(chance, single-attribute oracle, zero-shot); ~30 min on 2 CPUs.",
)
@click.option(
    "--calibration",
    type=click.Path(dir_okay=False, path_type=str),
    help="Measured epoch times (CSV: method,dataset,backbone,epoch_seconds,source) for the cost.",
)
@launch_target
def reproduce(
    campaign,
    target,
    only,
    dry_run,
    max_concurrent,
    toy,
    calibration,
) -> None:
    """Launch a campaign's sweeps not done yet, in dependency order, and write its reproduction report.

    CAMPAIGN: a campaign file; default: the paper's (campaigns/prometar_cvpr2024.yaml).
    """
    from pathlib import Path

    from orchestration.campaign.runner import ReproduceOptions, reproduce
    from orchestration.campaign.spec import default_campaign_path

    options = ReproduceOptions(
        **target,
        only=only,
        dry_run=dry_run,
        max_concurrent=max_concurrent,
        toy=toy,
        calibration=Path(calibration) if calibration else None,
    )
    raise SystemExit(reproduce(campaign or default_campaign_path(), options).exit_code)


@main.command("wait-nodes", hidden=True)
@click.argument("address")
@click.argument("count", type=click.IntRange(min=1))
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait.")
def wait_nodes(address, count, timeout) -> None:
    """Wait until COUNT Ray nodes are alive at ADDRESS (the sbatch script's wait); exit 1 on timeout."""
    from orchestration.cluster.nodes import wait_for_nodes
    from orchestration.errors import ClusterError

    try:
        alive = wait_for_nodes(address, count, timeout_s=timeout)
    except (ClusterError, ConnectionError) as err:  # the script stops its Ray processes and exits
        click.echo(f"prometar: {err}", err=True)
        raise SystemExit(1) from None
    click.echo(f"prometar: {alive} Ray node(s) alive at {address}")


@main.group("toy")
def toy_group() -> None:
    """The toy world and the toy CLIP pretrained on it (for the CPU demo and tests)."""


@toy_group.command("build")
@click.option(
    "--output",
    default=str(layout.toy_folder(layout.DEFAULT_OUTPUT)),
    show_default=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Build folder (checkpoint, data/, manifest).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="World and training seed.")
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="Pretraining steps (default: the standard build's, see docs/demo.md).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Torch threads for pretraining (the toy datasets are written on another core meanwhile); "
    "part of the cache key: the checkpoint's bits depend on it.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="bf16 autocast only where the CPU has native bf16 (elsewhere fp32); same steps either way.",
)
@click.option(
    "--time-limit",
    "time_limit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Fail (exit 1, nothing cached) if the build takes longer; never a shorter build.",
)
@click.option("--force", is_flag=True, help="Rebuild even if a finished build with these settings exists.")
def toy_build(output, seed, steps, threads, precision, time_limit, force) -> None:
    """Build (or reuse) the toy world, its datasets and the toy CLIP; print zero-shot accuracies.

    Exit 1 when the build fails its quality floor (zero-shot accuracy on the held-out colour x shape
    combinations) or its time limit; nothing is cached then.
    """
    from orchestration.logs import records_to
    from prometar.toy.build import ToyBuildError, build_toy, format_report

    options = {"seed": seed, "threads": threads, "precision": precision, "force": force}
    if steps is not None:
        options["steps"] = steps
    if time_limit is not None:
        options["time_limit_s"] = time_limit
    click.echo(f"toy build in {output} (seed {seed}) ...", err=True)
    try:
        with records_to(click.get_text_stream("stderr"), "prometar.toy"):  # progress: step, loss, ETA
            build = build_toy(output, **options)
    except ToyBuildError as err:
        click.echo(f"error: {err}", err=True)
        raise SystemExit(1) from None
    click.echo(format_report(build), nl=False)


if __name__ == "__main__":
    main()
