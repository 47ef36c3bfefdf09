"""``prometar-sweep reproduce`` end to end on a reduced campaign: local Ray, SQLite MLflow, tiny CLIP.

Two tables (base-to-new with zero-shot CLIP and IVLP, cited against the published zero-shot row;
few-shot after it, with a named recipe deviation) of two tiny sweeps on a miniature EuroSAT. The
first run launches them in dependency order into one output and writes the report with a verdict
on every table, logged on the campaign's MLflow run; the second run starts no trial.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from tiny import TINY_OVERRIDES, local_test_ray

from orchestration.campaign.runner import ReproduceOptions, reproduce
from orchestration.campaign.verdicts import VERDICTS
from orchestration.layout import default_tracking_uri
from orchestration.ledger.vocabulary import CAMPAIGN_ROLE, ROLE_TAG, TRIAL_KEY_TAG
from orchestration.results.labels import method_label

ZEROSHOT = method_label("zeroshot")

OVERRIDES = {
    **{key: value for key, value in TINY_OVERRIDES.items() if not key.startswith("prompts.")},
    "prompts.deep_depth": 1,
}
"""The tiny trials, their prompt depth set by ``prompts.deep_depth``."""


def _sweep(folder: Path, name: str, protocol: str, methods: list[str], shots: list[int]) -> None:
    data = {
        "name": name,
        "protocol": protocol,
        "overrides": OVERRIDES,
        "grid": {"method": methods, "dataset": ["eurosat"], "seed": [1, 2], "shots": shots},
        "resources": {"default": {"cpu": 1}},
        "max_failures": 0,
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("campaign")
    sweeps = root / "sweeps"
    sweeps.mkdir()
    _sweep(sweeps, "b2n", "base2new", ["zeroshot", "ivlp"], [16])  # the published shot count
    _sweep(sweeps, "fs", "few_shot", ["ivlp"], [1])
    data = {
        "name": "tiny_campaign",
        "sweeps_folder": "sweeps",
        "tables": [
            {
                "name": "few",
                "kind": "few_shot",
                "sweeps": ["fs"],
                "after": ["b2n"],
                "deviations": [{"name": "recipe: tiny test recipe", "source": "this test"}],
            },
            {
                "name": "b2n",
                "kind": "base2new",
                "sweeps": ["b2n"],
                "published": {"resource": "base2new", "methods": ["zeroshot"]},
            },
            {  # a paired table reading the shared sweep: no trial of its own
                "name": "pairs",
                "kind": "base2new",
                "sweeps": ["b2n"],
                "pairs": [["zeroshot", "ivlp"]],
                "published": {"resource": "base2new", "methods": ["zeroshot"]},
            },
        ],
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prometar.toy.miniature import write_miniatures

    root = tmp_path_factory.mktemp("data")
    write_miniatures(root, ["eurosat"], images_per_class=16)
    return root


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    with local_test_ray():
        yield


def _trial_runs(output: Path) -> list:
    client = MlflowClient(default_tracking_uri(output))
    runs = []
    for experiment in client.search_experiments():
        runs += [
            r
            for r in client.search_runs([experiment.experiment_id], max_results=1000)
            if TRIAL_KEY_TAG in r.data.tags
        ]
    return runs


@pytest.mark.ray
@pytest.mark.slow
def test_reproduce_runs_the_campaign_in_order_then_judges_every_table(
    campaign: Path, data_root: Path, ray_instance: None, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    options = ReproduceOptions(data_root=data_root, output=output)
    stream = io.StringIO()
    first = reproduce(campaign, options, stream=stream)
    text = stream.getvalue()
    assert first.exit_code == 0, text
    assert list(first.launches) == ["b2n", "fs"]  # the dependency before its dependant
    assert first.started == 6
    runs = _trial_runs(output)
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}

    assert first.files is not None
    markdown = first.files.markdown.read_text()
    html = first.files.html.read_text()
    for table in ("b2n", "few", "pairs"):
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {table} |"))
        assert any(f"| {verdict} |" in line for verdict in VERDICTS), line
    # the paired table: IVLP − zero-shot per seed, beside no published value (none for IVLP); its
    # per-method cells are the base-to-new table's, judged there once
    pairs = markdown.split("Table `pairs`")[1]
    paired = [line for line in pairs.splitlines() if line.startswith("| ivlp − zeroshot | EuroSAT | 16 |")]
    assert len(paired) == 3 and all("paired by seed: not separable with 2 seeds" in p for p in paired), paired
    assert all("(n=2) |" in p and "no published value of ivlp" in p for p in paired), paired
    assert not [line for line in pairs.splitlines() if line.startswith(f"| {ZEROSHOT} |")]
    assert "Not comparable: recipe: tiny test recipe (source: this test)" in markdown
    # the published zero-shot EuroSAT cells are judged against ours (2 seeds: an interval exists)
    [zeroshot] = [
        line
        for line in markdown.splitlines()
        if line.startswith(f"| {ZEROSHOT} | EuroSAT | 16 |  | base\\_acc |")
    ]
    assert "(n=2) |" in zeroshot and "| not comparable" not in zeroshot, zeroshot
    assert "<script" not in html and "Summary:" in html
    assert {p.name for p in first.files.latex} >= {
        "b2n-base2new.tex",
        "few-few_shot.tex",
        "pairs-compare-ivlp-zeroshot.tex",
    }

    client = MlflowClient(default_tracking_uri(output))
    experiment = client.get_experiment_by_name("tiny_campaign")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.tags[ROLE_TAG] == CAMPAIGN_ROLE and run.info.status == "FINISHED"
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "reproduction")}
    assert {"reproduction/reproduction.html", "reproduction/reproduction.md"} <= logged

    again = io.StringIO()
    second = reproduce(campaign, options, stream=again)
    assert second.exit_code == 0 and second.launches == {} and second.started == 0, again.getvalue()
    assert "b2n: all 4 trials FINISHED" in again.getvalue()
    assert len(_trial_runs(output)) == 6
    dry = io.StringIO()
    reproduce(campaign, ReproduceOptions(data_root=data_root, output=output, dry_run=True), stream=dry)
    assert "total: trials 6 · done 6 · to do 0" in dry.getvalue()


REDUCED_TOY = {
    "seed": 0,
    "steps": 40,
    "n_pretrain": 2000,
    "batch_size": 64,
    "warmup_steps": 5,
    "train_per_class": 4,
    "val_per_class": 1,
    "test_per_class": 10,
    "eval_per_combination": 4,
    "datasets": ("eurosat",),
    "min_heldout_acc": 0.0,
}


@pytest.mark.ray
@pytest.mark.slow
def test_toy_reproduce_narrows_the_sweeps_and_judges_against_chance(
    ray_instance: None, tmp_path: Path
) -> None:
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    data = {
        "name": "b2n_toy_test",
        "protocol": "base2new",
        "overrides": {"optim.epochs": 1, "data.batch_size": 2},
        "grid": {
            "method": ["zeroshot", "ivlp"],
            "dataset": ["eurosat", "caltech101"],
            "seed": [1, 2, 3],
            "shots": [2],
        },
        "resources": {"default": {"gpu": 0.5, "cpu": 4}},
    }
    (sweeps / "b2n.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    campaign = tmp_path / "c.yaml"
    campaign.write_text(
        yaml.safe_dump(
            {
                "name": "toy_test",
                "sweeps_folder": "sweeps",
                "tables": [
                    {
                        "name": "b2n",
                        "kind": "base2new",
                        "sweeps": ["b2n"],
                        "published": {"resource": "base2new", "methods": ["zeroshot"]},
                        "deviations": [{"name": "the paper's deviation", "source": "here"}],
                    },
                    {"name": "pairs", "kind": "base2new", "sweeps": ["b2n"], "pairs": [["zeroshot", "ivlp"]]},
                ],
            }
        )
    )
    output = tmp_path / "out"
    options = ReproduceOptions(output=output, toy=True, toy_options=REDUCED_TOY)
    stream = io.StringIO()
    first = reproduce(campaign, options, stream=stream)
    assert first.exit_code == 0, stream.getvalue()
    derived = yaml.safe_load((output / "toy-campaign" / "sweeps" / "b2n.yaml").read_text())
    assert derived["grid"]["dataset"] == ["eurosat"] and derived["grid"]["seed"] == [1, 2]
    assert derived["overrides"]["backbone.name"] == "toy-clip"
    assert derived["overrides"]["backbone.pretrained"] == str((output / "toy" / "toy_clip.pt").resolve())
    assert derived["resources"] == {"default": {"cpu": 1.0, "gpu": 0.0}}
    assert first.started == 4
    markdown = first.files.markdown.read_text()
    assert "the toy world's own references" in markdown and "the paper's deviation" not in markdown
    cells = [line for line in markdown.splitlines() if line.startswith(f"| {ZEROSHOT} | EuroSAT | 2 |")]
    # base, new, HM of the two seeds, each judged against its chance level and the single-attribute
    # oracle (zero-shot is no reference of itself)
    assert len(cells) == 6, cells
    assert sum("toy world: chance" in line for line in cells) == 3
    assert sum("toy world: single-attribute oracle" in line for line in cells) == 3
    assert all(("| reproduced |" in line) or ("| not reproduced (by " in line) for line in cells), cells
    base = next(line for line in cells if "| base\\_acc |" in line and "chance" in line)
    assert "| 12.50 |" in base  # 1 in the 8 base classes
    oracle = next(line for line in cells if "| base\\_acc |" in line and "oracle" in line)
    assert "| 50.00 |" in oracle  # colour (or shape) alone: half of a checkerboard half
    ivlp = [
        line for line in markdown.splitlines() if line.startswith("| IVLP | EuroSAT | 2 |  | base\\_acc |")
    ]
    assert len(ivlp) == 3 and any("toy world: zero-shot toy CLIP" in line for line in ivlp), ivlp

    # the toy world expects no sign of a paired difference: shown, not comparable
    paired = [line for line in markdown.splitlines() if line.startswith("| ivlp − zeroshot | EuroSAT | 2 |")]
    assert len(paired) == 3 and all("the toy world expects no sign of this difference" in p for p in paired)

    again = io.StringIO()
    second = reproduce(campaign, options, stream=again)
    assert second.exit_code == 0 and second.started == 0 and second.launches == {}, again.getvalue()
