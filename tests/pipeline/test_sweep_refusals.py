"""Sweep input that used to be accepted or silently ignored: now one exit 2 naming the key.

A ``--set`` of a grid axis, an override that no trial reads (or that only some trials read: one
note on stderr), domain generalisation from a non-ImageNet source, ``cpu: 0``, a sweep name too
long for a folder name, and a resource request no node of the local machine can meet.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestration.cli import main

TINY = {
    "backbone.name": "tiny-test",
    "backbone.pretrained": None,
    "prompts.deep_depth": 1,
    "optim.epochs": 1,
    "data.batch_size": 2,
    "data.num_workers": 0,
}


def sweep(folder: Path, **changes) -> Path:
    data = {
        "name": "refuse",
        "protocol": "base2new",
        "overrides": dict(TINY),
        "grid": {"method": ["ivlp"], "dataset": ["eurosat"], "seed": [1], "shots": [2]},
        "resources": {"default": {"cpu": 1}},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = folder / "refuse.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_set_of_a_grid_axis_is_refused(tmp_path):
    path = sweep(tmp_path)
    for flag, axis in (
        ("seed=5", "grid.seed"),
        ("data.dataset=dtd", "grid.dataset"),
        ("method=coop", "grid.method"),
    ):
        result = invoke("launch", path, "--set", flag, "--dry-run", "--output", tmp_path / "out")
        assert result.exit_code == 2, result.output
        assert f"--set {flag.split('=')[0]}" in result.output and axis in result.output
    assert not (tmp_path / "out").exists()


def test_an_override_of_a_grid_axis_in_the_file_is_refused(tmp_path):
    result = invoke("validate", sweep(tmp_path, overrides={"seed": 4}))
    assert result.exit_code == 2 and "overrides.seed" in result.output and "grid.seed" in result.output


def test_an_override_no_trial_reads_is_refused_naming_the_key_and_methods(tmp_path):
    result = invoke("validate", sweep(tmp_path, overrides={"meta.inner_lr": 0.01}))
    assert result.exit_code == 2, result.output
    assert "overrides.meta.inner_lr" in result.output and "no trial reads it" in result.output
    assert "ivlp" in result.output
    path = sweep(tmp_path, grid={"method": ["zeroshot"]})
    data = yaml.safe_load(path.read_text())
    data["overrides"] = {"backbone.name": "tiny-test", "optim": {"lr": 0.1}}  # a section override, per key
    path.write_text(yaml.safe_dump(data))
    result = invoke("validate", path)
    assert result.exit_code == 2 and "overrides.optim.lr" in result.output and "zeroshot" in result.output


def test_an_override_some_trials_read_gets_one_note(tmp_path):
    path = sweep(tmp_path, grid={"method": ["ivlp", "prometar"]}, overrides={"meta.inner_lr": 0.01})
    result = invoke("validate", path)  # the note goes to stderr, which the runner's output includes
    assert result.exit_code == 0, result.output
    assert result.output.count("overrides.meta.inner_lr reaches only some trials: ivlp never reads it") == 1


def test_domain_generalisation_from_another_source_is_refused(tmp_path):
    path = sweep(tmp_path, protocol="domain_generalization", grid={"dataset": ["caltech101"]})
    result = invoke("validate", path)
    assert result.exit_code == 2, result.output
    assert "grid.dataset" in result.output and "domain_generalization" in result.output
    assert "imagenet" in result.output
    assert (
        invoke(
            "validate", sweep(tmp_path, protocol="domain_generalization", grid={"dataset": ["imagenet"]})
        ).exit_code
        == 0
    )


def test_zero_cpus_are_refused(tmp_path):
    result = invoke("validate", sweep(tmp_path, resources={"default": {"cpu": 0}}))
    assert result.exit_code == 2 and "resources.default.cpu" in result.output and "above 0" in result.output


def test_a_name_too_long_for_a_folder_is_refused_when_parsing(tmp_path):
    result = invoke("validate", sweep(tmp_path, name="x" * 255))
    assert result.exit_code == 2 and "name" in result.output and "at most 100" in result.output
    assert len(result.output) < 1500  # the 255 characters are not echoed in full twice


@pytest.mark.ray
def test_gpus_asked_on_a_machine_without_any_are_refused_before_the_first_trial(tmp_path, monkeypatch):
    import os

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the request fits")  # CI and dev machines have none
    from prometar.toy.miniature import write_miniatures

    monkeypatch.setenv("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE", "disabled"))
    root = tmp_path / "data"
    write_miniatures(root, ["eurosat"])
    out = tmp_path / "out"
    gpu_sweep = sweep(tmp_path, resources={"default": {"cpu": 1, "gpu": 1}})
    # torch here sees no GPU: the preflight refuses first; past it, the embedded Ray has none either
    result = invoke("launch", gpu_sweep, "--data-root", root, "--output", out)
    assert result.exit_code == 2 and "torch cannot use CUDA" in result.output and not out.exists()
    result = invoke("launch", gpu_sweep, "--data-root", root, "--output", out, "--no-gpu-check")
    assert result.exit_code == 2, result.output
    assert "resources.default" in result.output and "gpu=1" in result.output and "GPU=0" in result.output
    from mlflow import MlflowClient

    from orchestration.layout import default_tracking_uri

    client = MlflowClient(default_tracking_uri(out))
    experiment = client.get_experiment_by_name("refuse")
    assert experiment is None or not client.search_runs([experiment.experiment_id])  # no run was made
