"""The demo: its sweep file, its baseline table, the verb, and a reduced demo end to end (tier 2)."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestration import demo
from orchestration.cli import main
from orchestration.results.labels import method_label, order_methods
from orchestration.results.render import to_markdown
from orchestration.sweeps.planning import load_plan
from prometar.toy import datasets as toy_datasets

REPO = Path(__file__).resolve().parents[2]


def test_demo_sweep_is_the_checkout_file_and_validates() -> None:
    path = demo.demo_sweep_path()
    assert path.resolve() == (REPO / "sweeps" / "demo.yaml").resolve()  # one source of truth
    plan = load_plan(path)
    assert plan.notes == ()  # the demo's own sweep file draws no warning of the product's
    trials = list(plan.trials)
    assert len(trials) == 3 * 3 * 2
    assert {t.method for t in trials} == {"zeroshot", "ivlp", "prometar"}
    assert {t.seed for t in trials} == {1, 2} and {t.shots for t in trials} == {16}
    for trial in trials:
        assert trial.protocol == "base2new"
        assert trial.config["backbone"]["name"] == "toy-clip"
        depth = 0 if trial.method == "zeroshot" else 3
        assert trial.method == "zeroshot" or trial.config["prompts"]["deep_depth"] == 3
        assert (
            trial.config["prompts"]["text_depth"] == depth
            and trial.config["prompts"]["vision_depth"] == depth
        )
        assert toy_datasets.TOY_DATASETS[trial.dataset].style.systematic
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0 and "trials: 18" in result.output and result.stderr == ""


def test_baseline_table_shows_chance_and_single_attribute_oracles() -> None:
    rows = {
        "eurosat": {
            "style": "colour-cast",
            "systematic": True,
            "chance_base": 0.125,
            "chance_new": 0.125,
            "colour_only_base": 0.5,
            "colour_only_new": 0.5,
            "shape_only_base": 0.5,
            "shape_only_new": 0.25,
        },
        "dtd": {
            "style": "stripes",
            "systematic": False,
            "chance_base": 0.25,
            "chance_new": 0.125,
            "colour_only_base": 0.5,
            "colour_only_new": 0.5,
            "shape_only_base": 0.5,
            "shape_only_new": 0.75,
        },
    }
    text = to_markdown(demo.baseline_table(rows, ["eurosat", "dtd"]))
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[1] == "| Average |  |  | 18.75 | 12.50 | 50.00 | 50.00 | 50.00 | 50.00 |"
    assert (
        lines[2] == "| EuroSAT | colour-cast | systematic | 12.50 | 12.50 | 50.00 | 50.00 | 50.00 | 25.00 |"
    )
    assert lines[3] == "| DTD | stripes | random | 25.00 | 12.50 | 50.00 | 50.00 | 50.00 | 75.00 |"
    single = to_markdown(demo.baseline_table(rows, ["dtd"]))
    assert "Average" not in single


def test_demo_methods_are_labelled_and_ordered_as_in_the_paper() -> None:
    assert order_methods(["prometar", "ivlp", "zeroshot"]) == ["zeroshot", "ivlp", "prometar"]
    assert [method_label(m) for m in ("zeroshot", "ivlp", "prometar")] == [
        "Zero-shot CLIP",
        "IVLP",
        "ProMetaR",
    ]


def test_demo_verb_runs_the_library_function_and_maps_bad_input_to_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from orchestration.errors import LaunchError
    from orchestration.launch.runner import LaunchReport

    calls = []

    def fake_run_demo(output: str) -> demo.DemoReport:
        calls.append(output)
        return demo.DemoReport(toy_reused=True, launch=LaunchReport("demo", 2, 1, 1, failed=1))

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    result = CliRunner().invoke(main, ["demo", "--output", str(tmp_path)])
    assert calls == [str(tmp_path)] and result.exit_code == 1  # a failed trial

    def broken(output: str) -> demo.DemoReport:
        raise LaunchError(f"data root {output}/toy/data does not exist (--data-root)")

    monkeypatch.setattr(demo, "run_demo", broken)
    result = CliRunner().invoke(main, ["demo", "--output", str(tmp_path)])
    assert result.exit_code == 2 and "toy/data does not exist" in result.output


# A toy build reduced to run in well under a minute: few steps, one dataset, few images.
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


@pytest.mark.slow
def test_reduced_demo_runs_one_trial_end_to_end_a_second_starts_none_a_rebuild_reruns(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    # The shipped demo sweep, reduced to one short IVLP trial on the one toy dataset built.
    sweep = yaml.safe_load((REPO / "sweeps" / "demo.yaml").read_text())
    sweep["grid"] = {"method": ["ivlp"], "dataset": ["eurosat"], "seed": [1], "shots": [2]}
    sweep["overrides"]["prompts.deep_depth"] = 3  # the demo's variants set it for its prompted methods
    sweep["overrides"]["optim.epochs"] = 2
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(sweep))
    output = tmp_path / "runs"

    stream = io.StringIO()
    report = demo.run_demo(output, sweep=path, toy_options=REDUCED_TOY, stream=stream)
    text = stream.getvalue()
    assert report.exit_code == 0 and not report.toy_reused
    manifest = json.loads((output / "toy" / "manifest.json").read_text())
    assert manifest["results"]["steps"] == 40
    assert f"checkpoint sha256 {manifest['results']['checkpoint_sha256'][:12]}" in text
    assert (report.launch.to_run, report.launch.finished, report.launch.failed) == (1, 1, 0)

    # The ledger: one FINISHED child run, trained on the toy build's checkpoint and data.
    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo")
    children = [
        r for r in client.search_runs([experiment.experiment_id]) if "prometar.trial_key" in r.data.tags
    ]
    assert len(children) == 1
    run = children[0]
    assert run.info.status == "FINISHED"
    assert (run.data.tags["method"], run.data.tags["dataset"], run.data.tags["protocol"]) == (
        "ivlp",
        "eurosat",
        "base2new",
    )
    assert run.data.params["backbone.pretrained"] == str(output / "toy" / "toy_clip.pt")
    assert run.data.params["prompts.text_depth"] == "3"
    metrics = {k: run.data.metrics[k] for k in ("base_acc", "new_acc", "hm")}
    assert all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in metrics.values())
    assert (output / "trials" / run.data.tags["prometar.trial_key"] / "prompts.pt").is_file()

    # The printed table holds the ledger's numbers; the baselines and plots are there.
    assert "Base-to-new generalisation" in text
    row = next(line for line in text.splitlines() if line.startswith("| EuroSAT | IVLP |"))
    assert f"{metrics['base_acc']:.2f}" in row and f"{metrics['hm']:.2f}" in row
    assert "| EuroSAT | colour-cast | systematic | 12.50 | 12.50 | 50.00 | 50.00 |" in text
    assert (output / "tables" / "demo" / "base2new.csv").is_file()
    assert {p.name for p in report.plots} >= {"base_vs_new.png", "hm.png", "base_vs_new.pdf", "hm.svg"}
    assert all(p.is_file() and p.parent == output / "plots" for p in report.plots)

    # The report: self-contained, with the tables and every figure; the `report` verb on the demo's
    # output writes the same sections.
    from test_report import assert_self_contained

    assert report.report == output / "reports" / "demo" / "report.html" and f"open {report.report}" in text
    figures = sorted({p.stem for p in report.plots})
    page = report.report.read_text()
    assert_self_contained(page)
    assert "Base-to-new generalisation" in page and "Toy datasets: chance and single-attribute" in page
    assert sorted(re.findall(r'<figure class="plot" id="figure-([\w-]+)"><svg\b', page)) == figures
    result = CliRunner().invoke(
        main,
        [
            "report",
            str(path),
            "--tracking-uri",
            f"sqlite:///{output / 'mlflow.db'}",
            "--set",
            f"backbone.pretrained={output / 'toy' / 'toy_clip.pt'}",
            "--no-published",
            "-o",
            str(tmp_path / "report"),
        ],
    )
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "report.html").read_text()
    assert_self_contained(page)
    assert "<dt>planned</dt><dd>1</dd><dt>finished</dt><dd>1</dd>" in page and row.split(" | ")[2] in page
    assert sorted(re.findall(r'<figure class="plot" id="figure-([\w-]+)"><svg\b', page)) == figures

    # Again: the toy build is reused, no trial starts, the same table is printed.
    stream = io.StringIO()
    again = demo.run_demo(output, sweep=path, toy_options=REDUCED_TOY, stream=stream)
    assert again.exit_code == 0 and again.toy_reused
    assert (again.launch.to_run, again.launch.done_before, again.launch.finished) == (0, 1, 0)
    assert "nothing to do: all 1 trials FINISHED" in stream.getvalue()
    assert row in stream.getvalue()
    children = [
        r for r in client.search_runs([experiment.experiment_id]) if "prometar.trial_key" in r.data.tags
    ]
    assert len(children) == 1

    # A rebuilt toy CLIP (other weights) is a new trial; the table shows only the current one.
    stream = io.StringIO()
    rebuilt = demo.run_demo(output, sweep=path, toy_options={**REDUCED_TOY, "steps": 30}, stream=stream)
    assert not rebuilt.toy_reused and (rebuilt.launch.to_run, rebuilt.launch.finished) == (1, 1)
    children = [
        r for r in client.search_runs([experiment.experiment_id]) if "prometar.trial_key" in r.data.tags
    ]
    assert len(children) == 2
    latest = max(children, key=lambda r: r.info.start_time)
    rows = [line for line in stream.getvalue().splitlines() if line.startswith("| EuroSAT | IVLP |")]
    assert len(rows) == 1 and f"{latest.data.metrics['base_acc']:.2f}" in rows[0]
