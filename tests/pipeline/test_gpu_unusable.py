"""A sweep asking for GPUs that torch cannot use fails loudly, never trains on the CPU.

The preflight refuses it before any trial (exit 2, nothing written) where the launch runs; past
the preflight (``--no-gpu-check``), a local Ray that advertises a GPU this machine does not have
grants it to the trial, which fails at once: a FAILED run whose error names CUDA and the driver,
no epoch, and the launch exits 1.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
from tiny import TINY_OVERRIDES, local_test_ray

from orchestration.cli import main
from orchestration.launch.runner import LaunchOptions, launch
from orchestration.layout import default_tracking_uri

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks a node whose torch cannot use a GPU; this one can"
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prometar.toy.miniature import write_miniatures

    root = tmp_path_factory.mktemp("data")
    write_miniatures(root, ["eurosat"])
    return root


def gpu_sweep(folder: Path) -> Path:
    data = {
        "name": "gpu",
        "protocol": "base2new",
        "overrides": TINY_OVERRIDES,
        "grid": {"method": ["ivlp"], "dataset": ["eurosat"], "seed": [1], "shots": [2]},
        "resources": {"default": {"cpu": 1, "gpu": 1}},
        "max_failures": 0,
    }
    path = folder / "gpu.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("dry", [False, True], ids=["launch", "dry-run"])
def test_a_sweep_asking_for_gpus_torch_cannot_use_is_refused_before_any_trial(
    tmp_path: Path, data_root: Path, dry: bool
) -> None:
    out = tmp_path / "out"
    args = ["launch", str(gpu_sweep(tmp_path)), "--data-root", str(data_root), "--output", str(out)]
    result = CliRunner().invoke(main, args + (["--dry-run"] if dry else []))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "gpu.yaml" in errors[0]
    line = errors[0]
    assert "the sweep's resources ask for GPUs but torch cannot use CUDA" in line
    assert (
        f"torch {torch.__version__}" in line and "NVIDIA driver" in line and "CUDA_VISIBLE_DEVICES=" in line
    )
    assert "--no-gpu-check" in line
    assert not out.exists()


@pytest.fixture(scope="module")
def ray_with_a_gpu_it_does_not_have() -> Iterator[None]:
    with local_test_ray(num_gpus=1):
        yield


@pytest.mark.ray
@pytest.mark.slow
def test_a_trial_granted_a_gpu_torch_cannot_use_fails_at_once(
    tmp_path: Path, data_root: Path, ray_with_a_gpu_it_does_not_have: None
) -> None:
    output = tmp_path / "out"
    stream = io.StringIO()
    options = LaunchOptions(data_root=data_root, output=output, tables=False, report=False, gpu_check=False)
    result = launch(gpu_sweep(tmp_path), options, stream=stream)
    assert result.exit_code == 1 and result.failed == 1 and result.finished == 0

    client = MlflowClient(default_tracking_uri(output))
    experiment = client.get_experiment_by_name("gpu")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "prometar.trial_key" in r.data.tags]
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    error = runs[0].data.tags["prometar.error"]
    assert "GpuUnusableError: Ray granted GPU 0 but torch cannot use CUDA" in error
    assert f"torch {torch.__version__}" in error and "NVIDIA driver" in error
    assert "the last lines of trial.log" not in error  # the tag is the error; error.txt quotes the log
    run_id = runs[0].info.run_id
    local = tmp_path / "artifacts"
    quoted = Path(client.download_artifacts(run_id, "error.txt", str(local))).read_text()
    assert "GpuUnusableError: Ray granted GPU 0" in quoted
    assert (
        "--- the last lines of trial.log ---" in quoted and "Ray granted {'CPU': 1.0, 'GPU': 1.0}" in quoted
    )
    log = Path(client.download_artifacts(run_id, "trial.log", str(local))).read_text()
    assert "INFO orchestration.launch.trainable: trial " in log and "(GPU ids ['0'])" in log
    # nothing trained: no epoch was logged, the trial wrote no file
    assert client.get_metric_history(runs[0].info.run_id, "loss") == []
    assert not any((output / "trials").rglob("*.pt"))
    # the console: one line for the failed trial, naming CUDA and the driver
    failed = [line for line in stream.getvalue().splitlines() if " FAILED: " in line]
    assert len(failed) == 1 and "torch cannot use CUDA" in failed[0] and "NVIDIA driver" in failed[0]
