"""A ledger that cannot be read is one message, and a launch whose report could not be written
does not pass for a success."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration.cli import main

SWEEP = "name: tiny\nprotocol: base2new\ngrid:\n  method: [ivlp]\n  dataset: [dtd]\n  seed: [1]\n"


def _store_with_runs(path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{path}")
    experiment = client.create_experiment("tiny")
    for index in range(20):
        run = client.create_run(experiment, tags={"prometar.trial_key": f"k{index}"}).info.run_id
        client.log_metric(run, "base_acc", 50.0)
        client.set_terminated(run)


@pytest.fixture(scope="module")
def broken_stores(tmp_path_factory) -> dict[str, Path]:
    """A garbage file and a real ledger cut in half, each named ``mlflow.db``."""
    root = tmp_path_factory.mktemp("stores")
    good = root / "good.db"
    _store_with_runs(good)
    garbage = root / "garbage" / "mlflow.db"
    garbage.parent.mkdir()
    garbage.write_bytes(bytes(range(256)) * 16)
    truncated = root / "truncated" / "mlflow.db"
    truncated.parent.mkdir()
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return {"garbage": garbage, "truncated": truncated}


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
@pytest.mark.parametrize("verb", [["table"], ["plot", "--out"], ["report", "--no-log", "--out"]])
def test_reading_verbs_refuse_an_unreadable_ledger_with_one_message(
    broken_stores, tmp_path: Path, kind: str, verb: list[str]
) -> None:
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(SWEEP)
    uri = f"sqlite:///{broken_stores[kind]}"
    before = broken_stores[kind].read_bytes()
    out = [str(tmp_path / "out")] if len(verb) > 1 else []
    result = CliRunner().invoke(main, [verb[0], str(sweep), "--tracking-uri", uri, *verb[1:], *out])
    assert result.exit_code == 2, result.output
    (message,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert uri in message and "cannot be read" in message and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing written
    assert broken_stores[kind].read_bytes() == before  # the store itself untouched


def test_a_launch_whose_report_cannot_be_written_exits_1(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from orchestration.launch.runner import _publish
    from orchestration.launch.state import Launch, LaunchOptions, LaunchReport
    from orchestration.ledger.store import TrialLedger
    from orchestration.sweeps.planning import load_plan

    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(SWEEP)
    plan = load_plan(sweep)
    output = tmp_path / "out"
    output.mkdir()
    (output / "reports").write_text("a file where the reports folder goes: the report cannot be written")
    uri = f"sqlite:///{output / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("tiny")
    report = LaunchReport(plan.name, plan.total, 0, 0, plan=plan)
    assert report.exit_code == 0
    stream = io.StringIO()
    options = LaunchOptions(output=output, tables=False)
    _publish(Launch(plan, TrialLedger(uri, "tiny"), report, output, options, stream))
    assert "[tiny] no results:" in stream.getvalue() and "reports" in report.results_error
    assert report.exit_code == 1
