"""``prometar-sweep ui``: the MLflow UI on a launch's ledger, on 127.0.0.1 unless asked otherwise
(``mlflow ui`` is not started here: the command it would run is checked; ``mlflow server`` itself
runs in ``tests/pipeline/test_servers.py``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.layout import default_tracking_uri
from orchestration.ui import ui_hint, ui_target


class _Started:
    """Stands in for ``subprocess.Popen``: records the command, ends at once."""

    commands: list[list[str]] = []

    def __init__(self, command: list[str]) -> None:
        self.commands.append(command)

    def wait(self) -> int:
        return 0


def test_ui_runs_mlflow_ui_on_the_output_ledger_bound_to_loopback(tmp_path: Path, monkeypatch) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "mlflow.db").write_bytes(b"")  # a ledger exists (its content is mlflow ui's business)
    _Started.commands = []
    monkeypatch.setattr(subprocess, "Popen", _Started)
    result = CliRunner().invoke(main, ["ui", "--output", str(output), "--port", "5123"])
    assert result.exit_code == 0, result.output
    assert f"MLflow UI of {default_tracking_uri(output)}: http://localhost:5123" in result.output
    (command,) = _Started.commands
    assert command[1:] == ["ui", "--backend-store-uri", default_tracking_uri(output), "--host", "127.0.0.1",
                           "--port", "5123"]  # fmt: skip
    assert Path(command[0]).name == "mlflow"


def test_ui_of_a_server_names_its_address_and_starts_nothing(monkeypatch) -> None:
    _Started.commands = []
    monkeypatch.setattr(subprocess, "Popen", _Started)
    result = CliRunner().invoke(main, ["ui"], env={"MLFLOW_TRACKING_URI": "http://mlflow.example:5000"})
    assert result.exit_code == 0 and "http://mlflow.example:5000" in result.output
    assert _Started.commands == []


def test_ui_refuses_a_missing_ledger_and_creates_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["ui", "--output", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no MLflow ledger at" in result.output
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize(
    "output, uri, expected",
    [
        ("prometar_runs", None, "look at the runs: prometar-sweep ui"),
        ("/data/runs", None, "look at the runs: prometar-sweep ui --output /data/runs"),
        (
            "x",
            "http://mlflow:5000",
            "look at the runs: http://mlflow:5000 (or prometar-sweep ui --tracking-uri",
        ),
        (
            "x",
            "sqlite:////shared/mlflow.db",
            "look at the runs: prometar-sweep ui --tracking-uri sqlite:////shared",
        ),
    ],
)
def test_the_hint_a_launch_prints_at_its_end(output: str, uri: str | None, expected: str) -> None:
    assert ui_hint(uri or default_tracking_uri(output), output=output).startswith(expected)


def test_another_host_is_asked_for_explicitly(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"")
    target = ui_target(default_tracking_uri(tmp_path), host="0.0.0.0", port=5001)
    assert target.command is not None and target.command[-4:] == ["--host", "0.0.0.0", "--port", "5001"]
