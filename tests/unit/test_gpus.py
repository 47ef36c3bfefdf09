"""The CUDA probe and the trial's device: a granted GPU torch cannot use is one clear error, never a
silent CPU run; ``backbone.device: cpu`` is the explicit way to the CPU."""

from __future__ import annotations

import pickle

import pytest
import torch

from orchestration import gpus
from orchestration.gpus import CudaReport, GpuDevice, GpuUnusableError, trial_device, unusable_message


def report(**changes) -> CudaReport:
    base = {
        "torch_version": "2.14.1",
        "cuda_runtime": "13.0",
        "available": False,
        "driver": "535.104.05",
        "visible_devices": "0",
    }
    return CudaReport(**{**base, **changes})


def test_the_message_names_the_grant_torch_the_driver_and_what_to_do() -> None:
    line = unusable_message(report(), "Ray granted GPU 0")
    assert "\n" not in line
    assert line.startswith("Ray granted GPU 0 but torch cannot use CUDA: torch 2.14.1 is built for CUDA 13.0")
    assert "(needs driver >= 580.65.06)" in line and "NVIDIA driver 535.104.05" in line
    assert "CUDA_VISIBLE_DEVICES=0" in line
    assert "TORCH_VARIANT=cu126" in line and "backbone.device: cpu" in line


def test_the_message_of_a_cpu_wheel_without_driver() -> None:
    line = unusable_message(report(cuda_runtime=None, driver=None, visible_devices=None), "the sweep asks")
    assert "torch 2.14.1 is a CPU-only build" in line
    assert "NVIDIA driver: none found" in line and "CUDA_VISIBLE_DEVICES=unset" in line


def test_min_driver_by_cuda_major() -> None:
    assert gpus.min_driver("12.6") == "525.60.13" and gpus.min_driver("13.0") == "580.65.06"
    assert gpus.min_driver(None) is None and gpus.min_driver("9.2") is None


def test_driver_version_is_read_from_the_kernel_module(tmp_path, monkeypatch) -> None:
    version = tmp_path / "version"
    version.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
        "GCC version:  gcc version 12.2.0\n"
    )
    monkeypatch.setattr(gpus, "DRIVER_FILE", version)
    assert gpus.driver_version() == "535.104.05"
    version.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build\n")
    assert gpus.driver_version() == "580.65.06"


def test_no_gpu_granted_or_device_cpu_trains_on_the_cpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trial_device(0, "auto") == "cpu"
    assert trial_device(1, "cpu") == "cpu"  # the explicit override


def test_a_granted_gpu_torch_cannot_use_fails(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(GpuUnusableError) as caught:
        trial_device(0.5, "auto", ["3"])
    message = str(caught.value)
    assert message.startswith("Ray granted GPU 3 but torch cannot use CUDA")
    assert f"torch {torch.__version__}" in message and "CUDA_VISIBLE_DEVICES=3" in message
    # it crosses from a Ray worker to the driver intact
    assert str(pickle.loads(pickle.dumps(caught.value))) == message


def test_a_granted_gpu_torch_can_use_is_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert trial_device(1, "auto") == "cuda" and trial_device(1, "cuda:1") == "cuda"


def test_the_probe_in_a_child_process_reports_this_torch() -> None:
    probed = gpus.probe_here()
    assert probed.torch_version == torch.__version__ and probed.cuda_runtime == torch.version.cuda
    assert probed.available == torch.cuda.is_available()
    assert len(probed.devices) == (torch.cuda.device_count() if probed.available else 0)


def test_a_report_round_trips_through_json() -> None:
    device = GpuDevice(index=0, name="H100", bf16=True, fp16=True, free_mib=80000, total_mib=81559)
    full = report(available=True, devices=[device])
    assert CudaReport.from_dict(full.to_dict()) == full
