"""A trial's system metrics: MLflow's monitors sampled on the trial's node, one mean per epoch,
under MLflow's ``system/`` names, and never mistaken for a result or a training curve."""

from __future__ import annotations

from orchestration.launch.system_metrics import SystemSampler
from orchestration.ledger.vocabulary import is_measurement


def test_each_epoch_reports_the_means_of_its_samples() -> None:
    with SystemSampler("cpu", interval_s=3600) as sampler:  # no timed sample: the epoch's own
        first = sampler.epoch_metrics()
        second = sampler.epoch_metrics()
    for metrics in (first, second):
        assert 0 <= metrics["system/cpu_utilization_percentage"] <= 100
        assert metrics["system/system_memory_usage_megabytes"] > 0
        assert 0 < metrics["system/system_memory_usage_percentage"] <= 100
        assert all(name.startswith("system/") for name in metrics)
    assert not sampler._thread.is_alive()  # stopped with the block


def test_measurements_are_neither_results_nor_curves() -> None:
    assert is_measurement("epoch_seconds") and is_measurement("images_per_second")
    assert is_measurement("system/gpu_0_utilization_percentage")
    assert not is_measurement("loss") and not is_measurement("hm") and not is_measurement("lr")
