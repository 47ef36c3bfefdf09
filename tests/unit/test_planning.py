"""A sweep is planned once per command: each trial's run config is built exactly once.

``prometar.config.build_config`` is counted while ``validate``, ``launch --dry-run``, ``launch``
(its Tune fan-out stubbed), ``status`` and ``table SWEEP`` run; the plan travels to every step
(dedupe, resources, the trainable's table, the tables of the planned runs), so nothing builds a
trial's config a second time. Searched trials are resolved in one place (their search group).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import prometar.config
from orchestration.cli import main
from orchestration.launch.runner import LaunchOptions, launch
from orchestration.launch.trial_table import TrialTable
from orchestration.launch.tuner import resources_request
from orchestration.sweeps.planning import load_plan

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
TINY = {"backbone.name": "tiny-test", "backbone.pretrained": None, "optim.epochs": 1, "prompts.deep_depth": 2}


@pytest.fixture()
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``build_config`` call from now on, by source."""
    calls: list[str] = []
    real = prometar.config.build_config

    def counting(d, *, source="<dict>"):
        calls.append(source)
        return real(d, source=source)

    monkeypatch.setattr(prometar.config, "build_config", counting)
    return calls


def tiny_sweep(folder: Path, **extra) -> Path:
    data = {
        "name": "tiny",
        "protocol": "base2new",
        "overrides": TINY,
        "grid": {"method": ["ivlp", "coop"], "dataset": ["eurosat", "dtd"], "seed": [1, 2], "shots": [2]},
        **extra,
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def data_root_for(folder: Path, datasets: list[str]) -> Path:
    """Miniature datasets: a launch checks every trial's split files and images before it starts."""
    from prometar.toy.miniature import write_miniatures

    root = folder / "data"
    write_miniatures(root, datasets)
    return root


def test_validate_builds_each_trial_config_once(builds: list[str]) -> None:
    result = CliRunner().invoke(main, ["validate", str(SWEEPS / "base2new.yaml")])
    assert result.exit_code == 0, result.output
    assert "trials: 33" in result.output
    assert len(builds) == 33


def test_launch_dry_run_and_status_build_each_trial_config_once(tmp_path: Path, builds: list[str]) -> None:
    sweep = tiny_sweep(tmp_path)
    root = data_root_for(tmp_path, ["eurosat", "dtd"])
    result = CliRunner().invoke(
        main, ["launch", str(sweep), "--dry-run", "--data-root", str(root), "--output", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    assert "to do 8 · total 8" in result.output and len(builds) == 8
    builds.clear()
    result = CliRunner().invoke(main, ["status", str(sweep), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0 and "total 8" in result.output and len(builds) == 8


def test_launch_builds_each_trial_config_once_and_hands_the_plan_on(
    tmp_path: Path, builds: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchestration.launch.runner as runner

    handed: list[TrialTable] = []
    monkeypatch.setattr(runner, "run_tuner", lambda launch, table, *args, **kwargs: handed.append(table))
    monkeypatch.setattr(runner, "ray_session", lambda address: contextlib.nullcontext())
    monkeypatch.setattr(runner, "check_cluster", lambda *args, **kwargs: None)  # no Ray here
    sweep = tiny_sweep(tmp_path)
    root = data_root_for(tmp_path, ["eurosat", "dtd"])
    report = launch(sweep, LaunchOptions(data_root=root, output=tmp_path / "out"))
    assert report.to_run == 8 and len(builds) == 8
    (table,) = handed
    assert {t.key for t in table.trials.values()} == {t.key for t in report.plan.trials}
    # the trainable runs the trials' validated configs as they are: nothing to rebuild in a worker
    assert all(t.run_config is not None and t.run_config.to_dict() == t.config for t in table.trials.values())
    assert len(builds) == 8


def test_table_verb_plans_the_sweep_once(tmp_path: Path, builds: list[str]) -> None:
    sweep = tiny_sweep(tmp_path)
    runs = tmp_path / "runs.csv"
    runs.write_text("method,dataset,seed,shots,base_acc,new_acc\nivlp,eurosat,1,2,80,60\n")
    result = CliRunner().invoke(main, ["table", str(sweep), "--runs", str(runs), "--no-published"])
    assert result.exit_code == 0, result.output
    assert len(builds) == 8


def test_a_search_sweep_builds_each_group_once_plus_its_space_checks(builds: list[str]) -> None:
    result = CliRunner().invoke(main, ["validate", str(SWEEPS / "reg_strength_search.yaml")])
    assert result.exit_code == 0, result.output
    groups, keys = 4, 3  # 4 datasets; 3 loguniform keys, each checked at its lower bound once per group
    assert len(builds) == groups * (1 + keys)


def test_searched_trials_are_resolved_only_by_their_group(builds: list[str]) -> None:
    plan = load_plan(SWEEPS / "reg_strength_search.yaml")
    group = plan.groups[0]
    table = TrialTable(groups={g.key: g for g in plan.groups})
    config = {
        "group": group.key,
        "regularizer.text_weight": 10.0,
        "regularizer.image_weight": 5.0,
        "meta.inner_lr": 1e-3,
    }
    builds.clear()
    request = resources_request(plan.spec, table)
    assert request(config).bundles == [{"CPU": 2.0, "GPU": 0.25}]
    assert table.dataset(config) == group.dataset and builds == []  # no resolution for resources
    trial = table.resolve(config)
    assert len(builds) == 1 and trial.group == group.key and trial.protocol == "search"
    assert trial.config["regularizer"]["text_weight"] == 10.0 and trial.dataset == group.dataset
