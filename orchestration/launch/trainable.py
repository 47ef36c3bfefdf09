"""The Ray Tune function trainable: a thin adapter over ``prometar.run.run``.

Tune config → :class:`~orchestration.sweeps.planning.Trial` (looked up by trial key, or resolved
from a search group and the sampled values: ``TrialTable.resolve``) → its run config →
``run(...)``. Each epoch's checkpoint is reported with ``tune.report(metrics, checkpoint=...)``; a
retried trial resumes from ``tune.get_checkpoint()``, then from its own newest readable epoch
(``run_resuming``); a trial an earlier launch left unfinished resumes from the checkpoint its
MLflow run names (``TrialTable.resume``, fetched from Ray storage, local or ``s3://``). The last
report carries the final metrics and a checkpoint holding the trial's artifacts (resolved config,
few-shot subset, prompt weights, per-class accuracies, environment), which the driver-side tracker
logs to MLflow; the trial's local epoch checkpoints are then removed. Paths are absolute (Tune
changes the working directory); the device and the thread count follow the resources Tune granted:
a granted GPU that torch cannot use fails the trial at once (``orchestration.gpus.trial_device``),
``backbone.device: cpu`` keeps it on the CPU.

What a trial tells while it runs: its ``trial.log`` (stdout, stderr, log records:
``orchestration.logs``) travels with each epoch checkpoint and the final artifacts, and an error
leaving the trial quotes its last lines; each epoch's report adds the node's system metrics
(``orchestration.launch.system_metrics``) to the run's ``epoch_seconds`` and ``images_per_second``.

Where a trial writes: ``<output>/trials/<key>/`` when Ray storage is a local folder (one machine,
or a filesystem every node mounts); with object storage (``node_local``), a folder of its own in
the node-local working directory Tune gives the trial: nodes share nothing but the storage, and
the folder is removed once the trial has reported its final result.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ray import tune

from orchestration import layout
from orchestration.gpus import trial_device
from orchestration.launch.system_metrics import SystemSampler
from orchestration.launch.trial_table import TrialTable
from orchestration.ledger.vocabulary import EPOCH_EVENT, EVENT_KEY, FINAL_EVENT, FINAL_FILE
from orchestration.ledger.vocabulary import TRIAL_LOG_ARTIFACT as TRIAL_LOG
from orchestration.logs import quoting_log_tail, trial_log
from orchestration.provenance import environment
from prometar import events

logger = logging.getLogger(__name__)

PROMPTS_FILE = "prompts.pt"
"""The trained prompt tensors (a transfer trial evaluates its source model's)."""
ARTIFACTS = ("config.json", "fewshot_subset.json", PROMPTS_FILE, "per_class.json", "metrics.jsonl")
"""The run's artifacts the last report's checkpoint carries (with ``environment.json`` and the
final metrics)."""


def run_resuming(run_config: Any, resume_candidates: list[Path], *, output_dir: Path, **kwargs: Any) -> Any:
    """``prometar.run.run``, resuming from the first candidate that can be read, else from scratch.

    Each candidate is a checkpoint folder (a Tune checkpoint) or the trial's ``checkpoints/``
    folder (its newest readable epoch is used). A candidate that cannot be resumed from — deleted,
    truncated, written by other code or another configuration, or carrying anything but tensors
    and plain data — is skipped with a warning that names the file and why; with none left the
    run starts over (its stale local checkpoints removed first).
    """
    from prometar.errors import CheckpointError
    from prometar.run import run

    for candidate in resume_candidates:
        try:
            return run(run_config, output_dir=output_dir, resume_from=candidate, **kwargs)
        except CheckpointError as error:
            logger.warning("not resuming from %s: %s", candidate, error)
    if resume_candidates:
        logger.warning("trial %s starts over: no checkpoint to resume from", output_dir.name)
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    return run(run_config, output_dir=output_dir, **kwargs)


def _fetch_earlier(uri: str, stack: ExitStack) -> Path | None:
    """Download the checkpoint an earlier launch registered (``None``, with a warning, if it is gone)."""
    from orchestration.storage import StorageError, download

    target = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prometar-resume-")))
    try:
        return download(uri, target / "checkpoint")
    except StorageError as error:
        logger.warning("not resuming from the earlier launch's checkpoint: %s", error)
        return None


def _granted_gpu_ids() -> list[str]:
    """The GPU ids Ray granted this worker (empty outside a Ray worker)."""
    import ray

    try:
        return [str(i) for i in ray.get_gpu_ids()]
    except Exception:  # not in a Ray worker: nothing was granted by id
        return []


def _train_resuming(
    trial: Any,
    table: TrialTable,
    run_config: Any,
    common: dict[str, Any],
    final: dict[str, Any],
    resume_local: bool,
    local_candidates: list[Path],
) -> bool:
    """Train the trial, resuming where a checkpoint allows; True when it had ended already (its
    final result, read from the checkpoint, is reported again and nothing else is to do)."""
    with ExitStack() as stack:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            resume_dir: Path | None = Path(stack.enter_context(checkpoint.as_directory()))
        elif resume_local and trial.key in table.resume:
            resume_dir = _fetch_earlier(table.resume[trial.key], stack)
        else:
            resume_dir = None
        if resume_dir is not None and (resume_dir / FINAL_FILE).is_file():
            # failed after its last report: report the same result again
            final.update(json.loads((resume_dir / FINAL_FILE).read_text()))
            tune.report(
                {**final, EVENT_KEY: FINAL_EVENT}, checkpoint=tune.Checkpoint.from_directory(str(resume_dir))
            )
            return True
        run_resuming(run_config, [*([resume_dir] if resume_dir else []), *local_candidates], **common)
    return False


def _evaluate_source(
    trial: Any, table: TrialTable, run_config: Any, common: dict[str, Any]
) -> dict[str, float]:
    """Evaluate the prompts of the trial's source model (downloaded from its run) on the trial's
    targets; returns the source model's final metrics (the tables' source column) to report too."""
    from orchestration.ledger.store import download_run_artifact
    from prometar.run import run

    model = table.sources[trial.key]
    with tempfile.TemporaryDirectory(prefix="prometar-source-") as folder:
        prompts = download_run_artifact(model.tracking_uri, model.run_id, PROMPTS_FILE, Path(folder))
        run(run_config, source_prompts=prompts, **common)
    return dict(model.metrics)


def train_trial(
    config: dict[str, Any],
    *,
    table: TrialTable,
    data_root: str,
    output_root: str,
    git_sha: str = "unknown",
    resume_local: bool = True,
    node_local: bool = False,
    keep_checkpoints: int = 1,
) -> None:
    """The Tune function trainable (bind the keyword arguments with ``tune.with_parameters``).

    Args:
        config: ``{"trial_key": key}`` for a grid trial; ``{"group": key, <dotted key>: value, ...}``
            (the sampled values) for a searched one.
        table: The launch's trials and search groups.
        data_root: Absolute dataset root.
        output_root: Absolute output folder; the run writes under ``<output_root>/trials/<key>/``.
        git_sha: The driver's code version, recorded in ``environment.json``.
        resume_local: Without a Tune checkpoint (a new launch), continue from the checkpoint an
            earlier launch registered (``table.resume``), else from the newest epoch checkpoint it
            left under the trial's folder (``--force``: neither).
        node_local: Write the run's files in the node-local working directory (object storage)
            instead of under ``output_root``.
        keep_checkpoints: Epoch checkpoints kept in the run's folder (``checkpoint.keep``).
    """
    from prometar.config import build_config

    trial = table.resolve(config)
    run_config = trial.run_config or build_config(trial.config, source=f"trial {trial.key}")
    if node_local:
        output_dir = Path.cwd().resolve() / "prometar" / trial.key  # named by the key, as under trials/
    else:
        output_dir = layout.trial_folder(output_root, trial.key)
    log_path = output_dir / TRIAL_LOG
    with _disk_full_named(output_dir):
        output_dir.mkdir(parents=True, exist_ok=True)
        with trial_log(log_path), quoting_log_tail(log_path), _disk_full_named(output_dir):
            _train(
                trial,
                run_config,
                output_dir,
                data_root=data_root,
                git_sha=git_sha,
                resume_local=resume_local,
                table=table,
                keep_checkpoints=keep_checkpoints,
            )
    # the final checkpoint (in Ray storage) holds everything now: no epoch checkpoint is needed
    shutil.rmtree(output_dir if node_local else output_dir / "checkpoints", ignore_errors=True)


@contextmanager
def _disk_full_named(folder: Path) -> Iterator[None]:
    """A full disk anywhere in the trial (its files, Tune's copy of a checkpoint into Ray storage)
    fails it with one line, :class:`~prometar.errors.DiskFullError`, naming the file (else the
    trial's folder); the core names the files it writes itself (``prometar.files.writing``)."""
    from prometar.errors import DiskFullError
    from prometar.files import DISK_FULL_ERRNOS

    try:
        yield
    except OSError as error:
        if error.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(str(error.filename or folder)) from error
        raise


def _train(
    trial: Any,
    run_config: Any,
    output_dir: Path,
    *,
    data_root: str,
    git_sha: str,
    resume_local: bool,
    table: TrialTable,
    keep_checkpoints: int,
) -> None:
    """The trial's run (resumed where it can be) and its reports, while ``trial.log`` records it."""
    import torch

    granted = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(granted.get("CPU", 1))))
    gpu_ids = _granted_gpu_ids()
    logger.info("trial %s: Ray granted %s (GPU ids %s)", trial.key, dict(granted), gpu_ids or "none")
    # a granted GPU torch cannot use fails the trial here, before anything trains on the CPU
    device = trial_device(granted.get("GPU", 0), run_config.backbone.device, gpu_ids)
    logger.info("trial %s trains on %s", trial.key, device)
    log_path = output_dir / TRIAL_LOG
    final: dict[str, Any] = {}
    sampler = SystemSampler(device)

    def on_event(event: dict[str, Any]) -> None:
        if event.get(events.EVENT) == events.EPOCH:
            metrics = {k: v for k, v in event.items() if k not in (events.EVENT, events.CHECKPOINT)}
            metrics.update(sampler.epoch_metrics())
            metrics[EVENT_KEY] = EPOCH_EVENT
            folder = Path(event[events.CHECKPOINT]).resolve()
            shutil.copy2(log_path, folder / TRIAL_LOG)  # the log so far travels with the checkpoint
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))
        elif event.get(events.EVENT) == events.FINAL:
            final.update({k: v for k, v in event.items() if k != events.EVENT})

    local = output_dir / "checkpoints"
    local_candidates = [local] if resume_local and any(local.glob("epoch_*")) else []
    common = {
        "data_root": Path(data_root).resolve(),
        "output_dir": output_dir,
        "callback": on_event,
        "device": device,
        "keep_checkpoints": keep_checkpoints,
    }
    if trial.source:  # a transfer trial: evaluate its source model's prompts, train nothing
        final.update(_evaluate_source(trial, table, run_config, common))
    else:
        with sampler:
            if _train_resuming(trial, table, run_config, common, final, resume_local, local_candidates):
                return  # the final result was reported again

    artifacts = output_dir / "final"
    artifacts.mkdir(exist_ok=True)
    for name in ARTIFACTS:
        if (output_dir / name).is_file():
            shutil.copy2(output_dir / name, artifacts / name)
    (artifacts / "environment.json").write_text(json.dumps(environment(device, git_sha), indent=2))
    (artifacts / FINAL_FILE).write_text(json.dumps(final, indent=2, sort_keys=True))
    logger.info("trial %s finished: %s", trial.key, json.dumps(final, sort_keys=True))
    shutil.copy2(log_path, artifacts / TRIAL_LOG)
    report = {**final, EVENT_KEY: FINAL_EVENT, events.EPOCH_KEY: trial.epochs}
    tune.report(report, checkpoint=tune.Checkpoint.from_directory(str(artifacts)))
