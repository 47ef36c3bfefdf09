"""The README's usage commands, run as written (as litgpt's ``tests/test_readme.py`` does).

Every line of the README's "Using it" block is either run here — in a fresh folder holding the
shipped sweep files, miniature copies of the 15 dataset layouts as ``$DATA``, and what ``make
demo`` leaves in ``./prometar_runs`` (a reduced demo: the shipped demo sweep cut to one short trial
on a reduced toy build, run once for the module) — or named in :data:`NOT_RUN` with the reason it
cannot run in a test (real data or weights, or minutes of CPU that the demo's own tests cover in a
reduced form). A new README command fails this test until it is added to one of the two.
"""

from __future__ import annotations

import io
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestration import demo
from orchestration.cli import main
from prometar.data.catalog import list_datasets
from prometar.toy.miniature import write_miniatures

ROOT = Path(__file__).resolve().parents[2]

# A toy build reduced to run in well under a minute: few steps, one dataset, few images.
REDUCED_TOY = {
    "seed": 0,
    "steps": 40,
    "n_pretrain": 2000,
    "batch_size": 64,
    "warmup_steps": 5,
    "train_per_class": 16,
    "val_per_class": 1,
    "test_per_class": 10,
    "eval_per_combination": 4,
    "datasets": ("eurosat",),
    "min_heldout_acc": 0.0,
}
ROW = "| EuroSAT | IVLP |"
"""The reduced demo's one table row."""

RUN: dict[str, tuple[int, str]] = {
    "validate sweeps/base2new.yaml": (0, "trials: 33"),
    # A dry run checks what the launch would check first: here OpenAI's weights are not available
    # offline, so it refuses (with them, it prints "dry run: done 0 · to do 33 · total 33").
    "launch sweeps/base2new.yaml --dry-run": (2, "are not available locally"),
    "doctor --data-root prometar_runs/toy/data": (0, "gpus (torch)"),  # no sweep asks for GPUs
    "status sweeps/demo.yaml": (0, "demo: done 1 · failed 0 · running 0 · to do 0 · total 1"),
    "table sweeps/demo.yaml": (0, ROW),
    "table sweeps/demo.yaml --per-run -o per_run.csv": (0, ""),
    "table sweeps/demo.yaml --runs per_run.csv": (0, ROW),
    "plot sweeps/demo.yaml -o figures/": (0, "figures/base_vs_new.png"),
    "report sweeps/demo.yaml -o report/": (0, "report/report.html"),
    "data check --data-root prometar_runs/toy/data": (0, "(absent; not requested)"),
    "data check sweeps/demo.yaml --data-root prometar_runs/toy/data": (0, "eurosat"),
    "data fewshot --dataset eurosat --shots 16 --seed 1 --data-root prometar_runs/toy/data": (
        0,
        '"train": [',
    ),
    # the plan of the paper's campaign, and what is missing here (OpenAI's weights, offline)
    "reproduce campaigns/prometar_cvpr2024.yaml --dry-run": (
        0,
        "  base2new (base2new): trials 198 · done 0 · to do 198 · cost unknown",
    ),
}
"""README command (after ``prometar-sweep``) → expected exit code and a line of its output."""

FIRST: dict[str, str] = {
    "table sweeps/demo.yaml --runs per_run.csv": "table sweeps/demo.yaml --per-run -o per_run.csv",
}
"""A command → the README command before it that writes what it reads."""

TRAIN = "train --dataset eurosat --seed 1 --shots 16 --method prometar --data-root $DATA"
NOT_RUN: dict[str, str] = {
    "launch sweeps/base2new.yaml --data-root $DATA": "trains ViT-B/16 on the real datasets",
    TRAIN: "needs OpenAI's ViT-B/16 weights (test_run.py runs it on a tiny CLIP)",
    "toy build": "minutes of CPU (a reduced build is tested in test_toyclip.py)",
    "demo --output DIR": "minutes of CPU (the workdir fixture runs a reduced demo)",
    "ui --output prometar_runs": "serves the MLflow UI until stopped (test_ui.py starts and stops it)",
    "reproduce campaigns/prometar_cvpr2024.yaml --data-root $DATA": "trains ViT-B/16 on the real datasets",
    "reproduce --toy": "half an hour of CPU (a reduced toy campaign is tested in test_reproduce.py)",
}


def readme_commands() -> list[str]:
    """The ``prometar-sweep`` lines of the README's "Using it" block, comments and padding removed."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Using it\n.*?```bash\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no 'Using it' bash block"
    commands = []
    for line in block.group(1).splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            assert command.startswith("prometar-sweep "), command
            commands.append(" ".join(command.split()[1:]))
    return commands


def test_every_readme_command_is_run_or_says_why_not() -> None:
    commands = readme_commands()
    assert commands and set(commands) == set(RUN) | set(NOT_RUN)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as ``make demo`` leaves it (reduced), with the sweep files and ``$DATA``."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "sweeps").mkdir()
    for path in (ROOT / "sweeps").glob("*.yaml"):
        (folder / "sweeps" / path.name).symlink_to(path)
    # The shipped demo sweep, reduced to one short IVLP trial on the one toy dataset built.
    sweep = yaml.safe_load((ROOT / "sweeps" / "demo.yaml").read_text())
    sweep["grid"] = {"method": ["ivlp"], "dataset": ["eurosat"], "seed": [1], "shots": [2]}
    sweep["overrides"] = {**sweep["overrides"], "prompts.deep_depth": 3, "optim.epochs": 1}
    (folder / "sweeps" / "demo.yaml").unlink()
    (folder / "sweeps" / "demo.yaml").write_text(yaml.safe_dump(sweep))
    (folder / "campaigns").symlink_to(ROOT / "campaigns")
    write_miniatures(folder / "data", [key for key in list_datasets() if key != "eurosat"])
    write_miniatures(folder / "data", ["eurosat"], images_per_class=16)  # the README asks 16 shots
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        report = demo.run_demo(
            "prometar_runs", sweep="sweeps/demo.yaml", toy_options=REDUCED_TOY, stream=io.StringIO()
        )
    finally:
        os.chdir(cwd)
    assert report.exit_code == 0 and report.launch.finished == 1
    return folder


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def _run(command: str, workdir: Path):
    args = shlex.split(command.replace("$DATA", str(workdir / "data")))
    return CliRunner().invoke(main, args, env={**os.environ, "DATA": str(workdir / "data")})


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(RUN))
def test_readme_command(command: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    if command in FIRST:
        assert _run(FIRST[command], workdir).exit_code == 0
    before = _files(workdir / "prometar_runs")
    result = _run(command, workdir)
    code, expected = RUN[command]
    assert result.exit_code == code, result.output
    assert expected in result.output
    assert "warning" not in result.output
    verb = command.split()[0]
    if "--dry-run" in command or verb in ("validate", "status", "table", "plot", "data", "doctor"):
        assert _files(workdir / "prometar_runs") == before  # reading verbs write nothing there
    if command == "table sweeps/demo.yaml --runs per_run.csv":  # the same tables as the ledger's
        assert result.output == _run("table sweeps/demo.yaml", workdir).output
