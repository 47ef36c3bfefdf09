"""Exit codes and one-message refusals: a taken UI port, a missing preset file, a backbone
checkpoint that cannot be reached, a resume from a folder that is not this run's."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration.cli import main


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


def test_ui_on_a_taken_port_exits_2_and_starts_nothing(tmp_path: Path, monkeypatch) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "mlflow.db").write_bytes(b"")
    started: list[list[str]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda command: started.append(command))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["ui", "--output", str(output), "--port", str(port)])
    assert result.exit_code == 2, result.output
    (message,) = _error_lines(result.output)
    assert f"--port {port}" in message and "Traceback" not in result.output
    assert started == []


def test_a_missing_preset_file_names_the_path_looked_for(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        "name: s\nprotocol: base2new\npreset: presets/mine.yaml\n"
        "grid:\n  method: [ivlp]\n  dataset: [dtd]\n  seed: [1]\n"
    )
    result = CliRunner().invoke(main, ["validate", str(sweep)])
    assert result.exit_code == 2, result.output
    (message,) = _error_lines(result.output)
    assert str(tmp_path / "presets" / "mine.yaml") in message and "preset" in message


TINY = [
    "--set=backbone.name=tiny-test",
    "--set=backbone.pretrained=null",
    "--set=prompts.text_depth=2",
    "--set=prompts.vision_depth=2",
    "--set=optim.epochs=2",
    "--set=data.num_workers=0",
]


def test_train_resume_from_a_foreign_folder_leaves_no_run_behind(tmp_path: Path) -> None:
    from prometar.toy.miniature import write_miniatures

    data_root = tmp_path / "data"
    write_miniatures(data_root, ["eurosat"])
    foreign = tmp_path / "someone-elses"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a checkpoint")
    out = tmp_path / "run"
    args = ["train", "--dataset", "eurosat", "--seed", "1", "--shots", "2", "--data-root", str(data_root)]
    result = CliRunner().invoke(main, [*args, "--output", str(out), *TINY, "--resume", str(foreign)])
    assert result.exit_code == 2, result.output
    (message,) = _error_lines(result.output)
    assert str(foreign) in message and "Traceback" not in result.output
    assert not out.exists()  # nothing half-written


def test_a_checkpoint_behind_an_unsearchable_folder_is_one_message(tmp_path: Path, monkeypatch) -> None:
    """``launch --dry-run`` checks the weights; a folder on the way that may not be searched
    (``PermissionError`` from ``stat``; made here by refusing the stat, as root may search any
    folder) is a message naming the checkpoint, exit 2, and nothing written."""
    locked = tmp_path / "locked"
    checkpoint = locked / "weights.pt"
    real_stat = Path.stat

    def stat(self: Path, *args, **kwargs):
        if self == checkpoint:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        "name: s\nprotocol: base2new\noverrides:\n  backbone.name: tiny-test\n"
        f"  backbone.pretrained: {checkpoint}\n"
        "grid:\n  method: [ivlp]\n  dataset: [eurosat]\n  seed: [1]\n  shots: [2]\n"
    )
    from prometar.toy.miniature import write_miniatures

    data_root = tmp_path / "data"
    write_miniatures(data_root, ["eurosat"])
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["launch", str(sweep), "--dry-run", "--data-root", str(data_root), "--output", str(out)]
    )
    assert result.exit_code == 2, result.output
    (message,) = _error_lines(result.output)
    assert str(checkpoint) in message and "Permission denied" in message
    assert "Traceback" not in result.output and not out.exists()
    # train loads the weights itself
    args = ["train", "--dataset", "eurosat", "--seed", "1", "--shots", "2", "--data-root", str(data_root)]
    tiny = [*(a for a in TINY if "pretrained" not in a), f"--set=backbone.pretrained={checkpoint}"]
    result = CliRunner().invoke(main, [*args, "--output", str(out), *tiny])
    assert result.exit_code == 2, result.output
    (message,) = _error_lines(result.output)
    assert str(checkpoint) in message and "Permission denied" in message and not out.exists()


@pytest.mark.parametrize("port_text", ["0"])
def test_ui_port_check_accepts_a_free_port(port_text: str) -> None:
    from orchestration.ui import check_port_free

    check_port_free("127.0.0.1", int(port_text))  # the OS picks a free one: nothing raised


@pytest.mark.parametrize(
    "verb",
    [
        ["table", "--per-run", "-o", "{blocker}/runs.csv"],
        ["report", "-o", "{blocker}/report"],
        ["plot", "-o", "{blocker}/figures"],
        ["launch", "--dry-run", "--output", "{blocker}/out"],
    ],
    ids=["table", "report", "plot", "launch"],
)
def test_an_output_inside_a_file_is_one_message_and_exit_2(tmp_path: Path, verb: list[str]) -> None:
    """A path to write whose folder would have to be made inside an existing file: refused before
    anything runs, naming both."""
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        "name: s\nprotocol: base2new\ngrid: {method: [ivlp], dataset: [eurosat], seed: [1], shots: [1]}\n"
    )
    blocker = tmp_path / "blocker"
    blocker.write_text("a file\n")
    args = [arg.format(blocker=blocker) for arg in verb]
    result = CliRunner().invoke(main, [args[0], str(sweep), *args[1:]])
    assert result.exit_code == 2, result.output
    (message,) = _error_lines(result.output)
    assert f"lies inside '{blocker}', which is a file" in message and "Traceback" not in result.output
    assert blocker.read_text() == "a file\n"
