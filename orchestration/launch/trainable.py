"""The Ray Tune function trainable: a thin adapter over ``prometar.run.run``.

Tune config → :class:`~orchestration.sweeps.spec.Trial` (looked up by trial key, or resolved from a
search group and the sampled values) → ``build_config`` → ``run(...)``. Each epoch's checkpoint is
reported with ``tune.report(metrics, checkpoint=...)``; a retried trial resumes from
``tune.get_checkpoint()``. The last report carries the final metrics and a checkpoint holding the
trial's artifacts (resolved config, prompt weights, per-class accuracies, environment), which the
driver-side tracker logs to MLflow. Paths are absolute (Tune changes the working directory); the
device and the thread count follow the resources Tune granted.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from orchestration.sweeps.spec import SearchGroup, Trial

FAULT_ENV = "PROMETAR_FAULT_FILE"
"""Test-only fault injection: names a JSON file ``{trial_key: "once" | "always"}``. A listed trial
raises after its first epoch's checkpoint is reported (``once``: only on its first attempt, marked
by a ``<key>.failed`` file beside the JSON). Not part of any trial key; unset in normal use."""

ARTIFACTS = ("config.json", "prompts.pt", "per_class.json", "metrics.jsonl")
FINAL_FILE = "final.json"


@dataclass(frozen=True)
class TrialTable:
    """How a Tune config maps onto trials: grid trials by key, search trials by group."""

    trials: dict[str, Trial] = field(default_factory=dict)
    groups: dict[str, SearchGroup] = field(default_factory=dict)

    def resolve(self, config: Mapping[str, Any]) -> Trial:
        """The trial a Tune config stands for."""
        if "trial_key" in config:
            return self.trials[config["trial_key"]]
        group = self.groups[config["group"]]
        return group.resolve({k: v for k, v in config.items() if k != "group"})


class InjectedFault(RuntimeError):
    """Raised by the test-only fault injection (``PROMETAR_FAULT_FILE``)."""


def _maybe_inject_fault(key: str) -> None:
    path = os.environ.get(FAULT_ENV)
    if not path or not Path(path).is_file():
        return
    mode = json.loads(Path(path).read_text()).get(key)
    marker = Path(path).with_name(f"{key}.failed")
    if mode == "always" or (mode == "once" and not marker.exists()):
        marker.touch()
        raise InjectedFault(f"injected failure in trial {key} ({mode})")


def _environment(device: str, git_sha: str) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("prometar", "torch", "torchvision", "open_clip_torch", "numpy", "ray", "mlflow"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    import torch

    return {"device": device, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            "hostname": socket.gethostname(), "python": platform.python_version(), "packages": packages,
            "git_sha": git_sha}


def latest_epoch_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoints/epoch_<k>`` an earlier (killed) launch left for this trial key."""
    folders = [p for p in (output_dir / "checkpoints").glob("epoch_*") if p.is_dir() and p.name[6:].isdigit()]
    return max(folders, key=lambda p: int(p.name[6:]), default=None)


def train_trial(config: dict[str, Any], *, table: TrialTable, data_root: str, output_root: str,
                git_sha: str = "unknown", resume_local: bool = True) -> None:
    """The Tune function trainable (bind the keyword arguments with ``tune.with_parameters``).

    Args:
        config: ``{"trial_key": key}`` for a grid trial; ``{"group": key, <dotted key>: value, ...}``
            (the sampled values) for a searched one.
        table: The launch's trials and search groups.
        data_root: Absolute dataset root.
        output_root: Absolute output folder; the run writes under ``<output_root>/trials/<key>/``.
        git_sha: The driver's code version, recorded in ``environment.json``.
        resume_local: Without a Tune checkpoint (a new launch), continue from the newest epoch
            checkpoint an earlier, killed launch left under the trial's folder (``--force``: no).
    """
    import torch

    from prometar.config import build_config
    from prometar.run import run

    trial = table.resolve(config)
    run_config = build_config(trial.config, source=f"trial {trial.key}")
    granted = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(granted.get("CPU", 1))))
    device = "cuda" if granted.get("GPU", 0) > 0 and torch.cuda.is_available() else "cpu"
    output_dir = Path(output_root).resolve() / "trials" / trial.key
    output_dir.mkdir(parents=True, exist_ok=True)
    final: dict[str, Any] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "epoch":
            metrics = {k: v for k, v in event.items() if k not in ("event", "checkpoint")}
            metrics["prometar_event"] = "epoch"
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(Path(event["checkpoint"]).resolve())))
            _maybe_inject_fault(trial.key)
        elif event.get("event") == "final":
            final.update({k: v for k, v in event.items() if k != "event"})

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        from prometar.errors import CheckpointError

        earlier = latest_epoch_checkpoint(output_dir) if resume_local else None
        try:
            run(run_config, data_root=Path(data_root).resolve(), output_dir=output_dir, callback=on_event,
                resume_from=earlier, device=device)
        except CheckpointError:  # left by other code or another config: start over
            if earlier is None:
                raise
            shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
            run(run_config, data_root=Path(data_root).resolve(), output_dir=output_dir, callback=on_event,
                device=device)
    else:
        with checkpoint.as_directory() as resume_dir:
            done = Path(resume_dir) / FINAL_FILE
            if done.is_file():  # failed after its last report: report the same result again
                final.update(json.loads(done.read_text()))
                tune.report({**final, "prometar_event": "final"}, checkpoint=tune.Checkpoint.from_directory(resume_dir))
                return
            run(run_config, data_root=Path(data_root).resolve(), output_dir=output_dir, callback=on_event,
                resume_from=Path(resume_dir), device=device)

    artifacts = output_dir / "final"
    artifacts.mkdir(exist_ok=True)
    for name in ARTIFACTS:
        if (output_dir / name).is_file():
            shutil.copy2(output_dir / name, artifacts / name)
    (artifacts / "environment.json").write_text(json.dumps(_environment(device, git_sha), indent=2))
    (artifacts / FINAL_FILE).write_text(json.dumps(final, indent=2, sort_keys=True))
    report = {**final, "prometar_event": "final", "epoch": trial.epochs}
    tune.report(report, checkpoint=tune.Checkpoint.from_directory(str(artifacts)))
