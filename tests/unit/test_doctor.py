"""``prometar-sweep doctor``: one line per check, exit 1 when one fails, ``--json`` for scripts.

On a node without a usable GPU the GPU checks say ``none`` and fail only when the sweep asks for
GPUs; what torch reports is read in a child process (the driver never imports torch).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.gpus import CudaReport, GpuDevice
from orchestration.launch.doctor import FAIL, INFO, OK, gpu_checks
from prometar.toy.miniature import write_miniatures

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a node whose torch sees no GPU")
OVERRIDES = {
    "backbone.name": "tiny-test",
    "backbone.pretrained": None,
    "optim.epochs": 1,
    "prompts.text_depth": 1,
    "prompts.vision_depth": 1,
}


def sweep(folder: Path, gpu: float) -> Path:
    data = {
        "name": "doc",
        "protocol": "base2new",
        "overrides": OVERRIDES,
        "grid": {"method": ["ivlp"], "dataset": ["eurosat"], "seed": [1], "shots": [2]},
        "resources": {"default": {"cpu": 1, "gpu": gpu}},
    }
    path = folder / "doc.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_miniatures(root, ["eurosat"])
    return root


@pytest.fixture()
def cpu_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose torch sees no GPU, without importing torch in a child process (the checks of the
    ledger, storage and data do not depend on it; the tests above probe for real)."""
    from orchestration.launch import doctor

    report = CudaReport(
        torch_version="2.14.1", cuda_runtime="13.0", available=False, driver=None, visible_devices=None
    )
    monkeypatch.setattr(doctor, "probe_here", lambda: report)


def run_doctor(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["doctor", *map(str, args)])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@NO_GPU
def test_doctor_without_a_sweep_passes_on_a_cpu_node(tmp_path: Path, data_root: Path) -> None:
    code, output = run_doctor("--data-root", data_root, "--output", tmp_path / "out")
    assert code == 0, output
    lines = {line[6:18].strip(): line for line in output.splitlines() if line.strip()}  # Check.line()
    assert (
        lines["python"].startswith(OK)
        and lines["torch"].startswith(OK)
        and torch.__version__ in lines["torch"]
    )
    assert lines["gpus (torch)"].startswith(INFO) and "none" in lines["gpus (torch)"]
    assert lines["gpus (ray)"].startswith(INFO) and "no cluster joined" in lines["gpus (ray)"]
    assert "created by the first launch" in lines["tracking"] and str(data_root) in lines["data root"]
    assert not (tmp_path / "out").exists()  # doctor writes nothing


@NO_GPU
def test_doctor_fails_the_gpu_checks_when_the_sweep_asks_for_gpus(tmp_path: Path, data_root: Path) -> None:
    code, output = run_doctor(sweep(tmp_path, 1), "--data-root", data_root, "--output", tmp_path / "out")
    assert code == 1, output
    gpu_line = next(line for line in output.splitlines() if "gpus (torch)" in line)
    assert gpu_line.startswith(FAIL) and "none" in gpu_line
    inputs = next(line for line in output.splitlines() if " inputs " in line)
    assert inputs.startswith(OK) and "1 trial(s)" in inputs


@NO_GPU
def test_doctor_json(tmp_path: Path, data_root: Path) -> None:
    code, output = run_doctor(
        sweep(tmp_path, 0), "--data-root", data_root, "--output", tmp_path / "o", "--json"
    )
    assert code == 0, output
    report = json.loads(output)
    assert report["ok"] is True
    by_name = {check["name"]: check for check in report["checks"]}
    assert by_name["torch"] == {"name": "torch", "status": OK, "detail": torch.__version__}
    assert by_name["cuda runtime"]["status"] == INFO and by_name["gpus (torch)"]["detail"].startswith("none")
    assert by_name["inputs"]["status"] == OK


def test_doctor_names_a_missing_data_root_and_a_bad_storage(tmp_path: Path, cpu_node: None) -> None:
    code, output = run_doctor("--data-root", tmp_path / "absent", "--output", tmp_path / "out", "--json")
    assert code == 1
    by_name = {check["name"]: check for check in json.loads(output)["checks"]}
    assert (
        by_name["data root"]["status"] == FAIL and str(tmp_path / "absent") in by_name["data root"]["detail"]
    )
    (tmp_path / "file").write_text("")
    code, output = run_doctor("--storage", tmp_path / "file" / "ray", "--output", tmp_path / "out", "--json")
    by_name = {check["name"]: check for check in json.loads(output)["checks"]}
    assert code == 1 and by_name["storage"]["status"] == FAIL and "is a file" in by_name["storage"]["detail"]


def test_gpu_checks_of_a_node_with_an_old_driver_and_of_a_working_one() -> None:
    old = CudaReport(
        torch_version="2.14.1",
        cuda_runtime="13.0",
        available=False,
        driver="535.104.05",
        visible_devices="0",
        error="CUDA driver version is insufficient",
    )
    checks = {c.name: c for c in gpu_checks(old, need_gpus=True)}
    assert checks["driver"].status == FAIL and ">= 580.65.06" in checks["driver"].detail
    assert checks["gpus (torch)"].status == FAIL and "insufficient" in checks["gpus (torch)"].detail
    assert {c.status for c in gpu_checks(old, need_gpus=False)} == {INFO}
    device = GpuDevice(
        index=0, name="NVIDIA H100", bf16=True, fp16=True, free_mib=79 * 1024, total_mib=80 * 1024
    )
    good = CudaReport(
        torch_version="2.14.1",
        cuda_runtime="12.6",
        available=True,
        driver="550.54.15",
        visible_devices=None,
        devices=[device],
    )
    checks = {c.name: c for c in gpu_checks(good, need_gpus=True)}
    assert checks["driver"].status == OK and checks["gpus (torch)"].status == OK
    assert checks["gpus (torch)"].detail == "cuda:0 NVIDIA H100: bf16, 79.0 GiB free of 80.0 GiB"


def test_the_doctor_module_does_not_import_torch_in_the_driver() -> None:
    code = "import sys; from orchestration.launch import doctor; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_doctor_never_creates_a_ledger_and_names_an_unusable_one(tmp_path: Path, cpu_node: None) -> None:
    database = tmp_path / "mlflow.db"
    code, output = run_doctor("--tracking-uri", f"sqlite:///{database}", "--output", tmp_path / "o", "--json")
    by_name = {check["name"]: check for check in json.loads(output)["checks"]}
    assert (
        by_name["tracking"]["status"] == OK and "created by the first launch" in by_name["tracking"]["detail"]
    )
    assert not database.exists()
    code, output = run_doctor("--tracking-uri", "foo://bar", "--output", tmp_path / "o", "--json")
    by_name = {check["name"]: check for check in json.loads(output)["checks"]}
    assert (
        code == 1
        and by_name["tracking"]["status"] == FAIL
        and "unsupported scheme" in by_name["tracking"]["detail"]
    )
