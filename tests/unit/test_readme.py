"""The README's usage commands, run as written (as litgpt's ``tests/test_readme.py`` does).

Every line of the README's "Using it" block is either run here — in a fresh folder holding the
shipped sweep files and miniature copies of the 15 dataset layouts as ``$DATA`` (and ``./data``)
— or named in :data:`NOT_RUN` with the reason it cannot run in a test (real data or weights, or
minutes of CPU that the demo's own tests cover in a reduced form). A new README command fails
this test until it is added to one of the two.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration.cli import main
from prometar.data.catalog import list_datasets
from prometar.toy.miniature import write_miniatures

ROOT = Path(__file__).resolve().parents[2]

RUN: dict[str, tuple[int, str]] = {
    "validate sweeps/base2new.yaml": (0, "trials: 33"),
    # A dry run checks what the launch would check first: here OpenAI's weights are not available
    # offline, so it refuses (with them, it prints "dry run: done 0 · to do 33 · total 33").
    "launch sweeps/base2new.yaml --dry-run": (2, "are not available locally"),
    "status sweeps/base2new.yaml": (0, "base2new: done 0 · failed 0 · running 0 · to do 33 · total 33"),
    "table sweeps/base2new.yaml": (2, "is not created"),  # nothing launched in this folder yet
    "table --runs runs.csv": (0, "| EuroSAT | ProMetaR | 80.00"),
    "plot sweeps/base2new.yaml -o figures/": (2, "is not created"),
    "table sweeps/base2new.yaml --per-run -o per_run.csv": (2, "is not created"),
    "report sweeps/base2new.yaml -o report/": (2, "is not created"),
    "data check --data-root $DATA": (0, "eurosat"),
    "data fewshot --dataset eurosat --shots 16 --seed 1 --data-root $DATA": (0, '"train": ['),
    "ui": (2, "no MLflow ledger at"),  # nothing launched here yet: no UI is started on nothing
}
"""README command (after ``prometar-sweep``) → expected exit code and a line of its output."""

TRAIN = "train --dataset eurosat --seed 1 --shots 16 --method prometar --data-root $DATA"
NOT_RUN: dict[str, str] = {
    "launch sweeps/base2new.yaml --data-root $DATA": "trains ViT-B/16 on the real datasets",
    TRAIN: "needs OpenAI's ViT-B/16 weights (test_run.py runs it on a tiny CLIP)",
    "toy build": "minutes of CPU (a reduced build is tested in test_toyclip.py)",
    "demo --output DIR": "minutes of CPU (a reduced demo is tested in test_demo.py)",
}


def readme_commands() -> list[str]:
    """The ``prometar-sweep`` lines of the README's "Using it" block, comments and padding removed."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Using it\n\n```bash\n(.*?)```", text, re.S)
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
    folder = tmp_path_factory.mktemp("readme")
    (folder / "sweeps").symlink_to(ROOT / "sweeps")
    write_miniatures(folder / "data", [key for key in list_datasets() if key != "eurosat"])
    write_miniatures(folder / "data", ["eurosat"], images_per_class=16)  # the README asks 16 shots
    (folder / "runs.csv").write_text(
        "method,dataset,seed,shots,base_acc,new_acc\nprometar,eurosat,1,16,80,60\n"
    )
    return folder


@pytest.mark.parametrize("command", sorted(RUN))
def test_readme_command(command: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    args = shlex.split(command.replace("$DATA", str(workdir / "data")))
    code, expected = RUN[command]
    result = CliRunner().invoke(main, args, env={**os.environ, "DATA": str(workdir / "data")})
    assert result.exit_code == code, result.output
    assert expected in result.output
    if "--dry-run" in args or args[0] in ("validate", "status", "table", "plot"):
        assert not (workdir / "prometar_runs").exists()  # reading verbs write nothing
