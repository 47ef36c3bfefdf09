"""Tracking URIs that name no usable store: one exit 2 naming the URI, and nothing created.

``table --tracking-uri foo://…`` used to end in MLflow's registry traceback, and a SQLite URI in a
missing folder used to make that folder and a database, even from ``status``. No Ray is started.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestration.cli import main
from prometar.toy.miniature import write_miniatures


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("uris")
    write_miniatures(folder / "data", ["eurosat"])
    (folder / "tiny.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "protocol": "base2new",
                "overrides": {
                    "backbone.name": "tiny-test",
                    "backbone.pretrained": None,
                    "prompts.deep_depth": 2,
                },
                "grid": {"method": ["ivlp"], "dataset": ["eurosat"], "seed": [1], "shots": [2]},
            }
        )
    )
    return folder


def refused(args: list[str], *words: str) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output


def test_an_unsupported_scheme_is_refused_by_every_verb(project):
    sweep = project / "tiny.yaml"
    for verb in (
        ["table", sweep],
        ["status", sweep],
        ["plot", sweep, "-o", project / "figs"],
        ["launch", sweep, "--dry-run", "--data-root", project / "data"],
    ):
        refused([*verb, "--tracking-uri", "foo://bar"], "tracking URI foo://bar", "unsupported scheme 'foo'")
    assert not (project / "figs").exists()


def test_a_sqlite_database_in_a_missing_folder_is_refused_and_not_created(project, tmp_path):
    uri = f"sqlite:///{tmp_path}/no/such/dir/mlflow.db"
    sweep = project / "tiny.yaml"
    for verb in (
        ["status", sweep],
        ["launch", sweep, "--dry-run", "--data-root", project / "data"],
        ["launch", sweep, "--data-root", project / "data", "--output", tmp_path / "out"],
    ):
        refused([*verb, "--tracking-uri", uri], f"{tmp_path}/no/such/dir does not exist")
    assert not (tmp_path / "no").exists()


def test_a_folder_where_the_embedded_ledger_belongs_is_refused(project, tmp_path):
    out = tmp_path / "out"
    (out / "mlflow.db").mkdir(parents=True)
    sweep = project / "tiny.yaml"
    for verb in (
        ["status", sweep, "--output", out],
        ["table", sweep, "--tracking-uri", f"sqlite:///{out}/mlflow.db"],
        ["launch", sweep, "--dry-run", "--output", out, "--data-root", project / "data"],
        ["launch", sweep, "--output", out, "--data-root", project / "data"],
    ):
        refused(verb, "mlflow.db is a folder, not a SQLite database")
    assert sorted(p.name for p in out.iterdir()) == ["mlflow.db"]
