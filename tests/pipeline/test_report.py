"""The sweep report: a self-contained HTML page and its Markdown twin from a hand-made MLflow store."""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

import prometar
from orchestration.cli import main
from orchestration.errors import ResultsError
from orchestration.ledger.vocabulary import TRIAL_KEY_TAG
from orchestration.results.figures import ALIGNMENT_METRICS, GATE_METRICS
from orchestration.results.plots import collect_figures
from orchestration.results.publish import publish
from orchestration.results.published import load_published
from orchestration.results.report import Report
from orchestration.results.report_page import render_html, table_html
from orchestration.results.source import Source, load_source
from orchestration.results.tables import build_tables
from orchestration.sweeps.planning import load_plan

SWEEP = "name: rep\ngrid:\n  method: [ivlp, prometar]\n  dataset: [dtd, eurosat]\n  seed: [1, 2]\n"
TRACEBACK = (
    'Traceback (most recent call last):\n  File "prometar/run.py", line 10, in run\n'
    "    train()\nRuntimeError: CUDA out of memory (tried to allocate 2.00 GiB)\n"
)


def make_store(tmp_path: Path) -> tuple[Path, str, str]:
    """The sweep's runs under one launch: six FINISHED (with curves; IVLP's gate and cosine constant),
    prometar/eurosat/2 FAILED with a traceback, ivlp/eurosat/2 KILLED by a relaunch."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    sweep = tmp_path / "rep.yaml"
    sweep.write_text(SWEEP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("rep", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(
        experiment,
        tags={
            "prometar.role": "launch",
            "prometar.host": "node-7",
            "prometar.git_sha": "abc123def4567890",
            "prometar.result_revision": str(prometar.RESULT_REVISION),
            "prometar.trials_planned": "8",
        },
        start_time=1_700_000_000_000,
    ).info.run_id
    for trial in load_plan(sweep).trials:
        tags = {
            TRIAL_KEY_TAG: trial.key,
            "method": trial.method,
            "dataset": trial.dataset,
            "seed": str(trial.seed),
            "shots": "16",
            "protocol": "base2new",
            "sweep": "rep",
            "mlflow.parentRunId": parent,
            "prometar.git_sha": "abc123def4567890",
            "prometar.result_revision": str(prometar.RESULT_REVISION),
        }
        where = (trial.method, trial.dataset, trial.seed)
        status = {("prometar", "eurosat", 2): "FAILED", ("ivlp", "eurosat", 2): "KILLED"}.get(
            where, "FINISHED"
        )
        if status == "FAILED":
            tags["prometar.error"] = TRACEBACK
        if status == "KILLED":
            tags["prometar.closed_by"] = "relaunch"
        run = client.create_run(experiment, tags=tags, start_time=1_700_000_100_000).info.run_id
        meta = trial.method == "prometar"
        offset = (3.0 if meta else 0.0) + trial.seed
        metrics = [Metric("base_acc", 80 + offset, 0, 0), Metric("new_acc", 60 + 2 * offset, 0, 0)]
        for epoch in range(1, 5):
            metrics += [
                Metric("loss", 2.0 / epoch + 0.1 * trial.seed, 0, epoch),
                Metric("gate_lr", 1e-6, 0, epoch),
            ]
            for name in (*GATE_METRICS, *ALIGNMENT_METRICS):
                metrics.append(
                    Metric(name, 0.3 + 0.05 * epoch + 0.01 * trial.seed if meta else 0.0, 0, epoch)
                )
        params = [Param("backbone.name", "ViT-B-16-quickgelu"), Param("backbone.pretrained", "openai")]
        client.log_batch(run, metrics=metrics if status == "FINISHED" else metrics[2:], params=params)
        client.set_terminated(run, status, end_time=1_700_000_200_000)
    client.set_terminated(parent, "FAILED", end_time=1_700_000_300_000)
    return sweep, uri, parent


def publish_report(source: Source, out: Path) -> Report:
    """The report the ``report`` verb writes (not logged), its record returned."""
    done = publish(source.context, source.ledger, report_dir=out, strict=False)
    assert done.report is not None
    return done.report


class Collector(HTMLParser):
    """Every tag and attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]


def assert_self_contained(page: str) -> None:
    """Nothing in the page could make a browser reach the network."""
    # network schemes, and protocol-relative addresses (a SQLite URI's "sqlite:////tmp" is a path)
    assert not re.search(r"(https?|ftp|wss?):|(?<![:/])//[a-z0-9]", page, re.IGNORECASE)
    collector = Collector()
    collector.feed(page)
    assert not {"link", "script", "img", "iframe", "object", "embed", "base"} & set(collector.tags)
    for name, value in collector.attributes:
        if name in {"href", "xlink:href", "src"}:
            assert value.startswith("#"), (name, value)  # in-page references only (SVG glyphs, clip paths)
        assert "url(" not in value or re.fullmatch(r"url\(#[\w-]+\)", value.strip()), (name, value)


def test_report_html_is_self_contained_and_holds_every_table_and_figure(tmp_path: Path):
    from mlflow import MlflowClient

    sweep, uri, parent = make_store(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(sweep), "--tracking-uri", uri, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(out / "report.html"), str(out / "report.md")]
    assert f"of run {parent}" in result.stderr
    page = (out / "report.html").read_text()
    assert_self_contained(page)

    source = load_source(sweep, tracking_uri=uri)
    context = replace(source.context, published=load_published())
    assert context.expected_seeds == 2 and context.protocol == "base2new"
    tables = build_tables(source.ledger, context)
    assert [t.name for t in tables] == ["base2new"]
    for table in tables:
        assert table_html(table.display) in page  # the whole table, every cell
    figures = collect_figures(source.ledger, context)
    names = [f.name for f in figures]
    assert names == ["base_vs_new", "hm", "training_curves", "gate_and_alignment"]
    inline = re.findall(r'<figure class="plot" id="figure-([\w-]+)"><svg\b.*?</svg>', page, re.DOTALL)
    assert inline == names
    for name in names:
        for ext in ("png", "pdf", "svg"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 1000

    # counts, the failure's reason, provenance, the launch
    assert "<dt>planned</dt><dd>8</dd><dt>finished</dt><dd>6</dd><dt>failed</dt><dd>1</dd>" in page
    assert "<dt>killed</dt><dd>1</dd><dt>not started</dt><dd>0</dd>" in page
    assert "RuntimeError: CUDA out of memory (tried to allocate 2.00 GiB)" in page
    assert "ProMetaR · EuroSAT · seed 2 · 16 shots" in page and "closed by a later launch" in page
    assert f"<code>r{prometar.RESULT_REVISION} (6 runs)</code>" in page
    assert "abc123def4567890 (6 runs)" in page and uri in page and "node-7" in page and parent in page
    assert (
        "version of mlflow" in page and "2023-11-14 22:13:20 UTC" in page
    )  # the launch's start, from MLflow

    markdown = (out / "report.md").read_text()
    for table in tables:
        assert table.render("markdown") in markdown
    for name in names:
        assert f"![{name}](figures/{name}.png)" in markdown
    assert (
        "CUDA out of memory" in markdown
        and f"| result revision (this code) | `{prometar.RESULT_REVISION}` |" in markdown
    )

    logged = {Path(f.path).name for f in MlflowClient(uri).list_artifacts(parent, "report")}
    assert logged == {"report.html", "report.md", "figures"}
    logged_figures = {Path(f.path).name for f in MlflowClient(uri).list_artifacts(parent, "report/figures")}
    assert logged_figures == {f"{n}.{e}" for n in names for e in ("png", "pdf", "svg")}


def test_report_of_a_sweep_without_finished_runs_still_shows_the_failures(tmp_path: Path):
    sweep, uri, _ = make_store(tmp_path)
    other = tmp_path / "other.yaml"  # plans only the failed trial's cell
    other.write_text("name: rep\ngrid:\n  method: [prometar]\n  dataset: [eurosat]\n  seed: [2]\n")
    report = publish_report(load_source(other, tracking_uri=uri), tmp_path / "other-report")
    assert (report.counts.planned, report.counts.finished, report.counts.failed) == (1, 0, 1)
    assert report.tables == [] and report.figures == []
    assert report.notes == ["No FINISHED run yet: no table and no figure."]
    page = render_html(report)
    assert_self_contained(page)
    assert "CUDA out of memory" in page


def test_report_bad_input_writes_nothing(tmp_path: Path):
    sweep, uri, _ = make_store(tmp_path)
    out = tmp_path / "none"
    runs = tmp_path / "runs.csv"
    runs.write_text("method,dataset,seed,shots,base_acc,new_acc\ncoop,dtd,1,16,80,60\n")
    result = CliRunner().invoke(
        main, ["report", "--experiment", "nope", "--tracking-uri", uri, "-o", str(out)]
    )
    assert result.exit_code == 2 and "experiment 'nope' not found" in result.output
    result = CliRunner().invoke(main, ["report", "--tracking-uri", uri, "-o", str(out)])
    assert result.exit_code == 2 and "give a sweep file, --experiment NAME" in result.output
    csv = load_source(sweep, runs_csv=runs)
    with pytest.raises(ResultsError, match="a report reads the MLflow ledger"):
        publish(csv.context, csv.ledger, report_dir=out)
    assert not out.exists()


def test_report_no_log_and_experiment_source(tmp_path: Path):
    from mlflow import MlflowClient

    _, uri, parent = make_store(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        [
            "report",
            "--experiment",
            "rep",
            "--tracking-uri",
            uri,
            "--no-log",
            "--no-published",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert MlflowClient(uri).list_artifacts(parent, "report") == []
    page = (out / "report.html").read_text()
    assert "<dt>planned</dt><dd>–</dd>" in page and "(paper)" not in page  # no sweep file: nothing planned
    assert_self_contained(page)


def test_status_and_report_agree_on_a_key_whose_newer_run_failed_after_an_older_one_ran(tmp_path: Path):
    """One outcome rule (``ledger.outcomes``): a key's newer FAILED run outranks an older RUNNING one."""
    from mlflow import MlflowClient

    from orchestration.launch.status import sweep_status

    sweep, uri, parent = make_store(tmp_path)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("rep").experiment_id
    failed = next(
        t for t in load_plan(sweep).trials if (t.method, t.dataset, t.seed) == ("prometar", "eurosat", 2)
    )
    older = client.create_run(
        experiment,
        tags={TRIAL_KEY_TAG: failed.key, "mlflow.parentRunId": parent, "sweep": "rep"},
        start_time=1_699_999_000_000,  # before the FAILED run, and never closed
    )
    assert older.info.status == "RUNNING"
    status = sweep_status(sweep, output=tmp_path, tracking_uri=uri)
    report = publish_report(load_source(sweep, tracking_uri=uri), tmp_path / "report")
    assert (status.done, status.failed, status.running) == (6, 1, 0)
    assert (report.counts.finished, report.counts.failed, report.counts.running) == (
        status.done,
        status.failed,
        status.running,
    )
    assert [f.trial_key for f in report.failures if f.status == "FAILED"] == [failed.key]


def test_the_end_of_a_launch_reads_the_ledger_once_and_builds_the_tables_once(tmp_path: Path, monkeypatch):
    """The launch's end publishes the tables, the figures and the report from one read of the ledger
    and one build of the tables (``results.publish``), and logs each file once on its parent run."""
    import io

    from mlflow import MlflowClient

    import orchestration.ledger.runs as runs_module
    import orchestration.ledger.store as store_module
    import orchestration.results.publish as publish_module
    from orchestration.launch.runner import Launch, LaunchOptions, LaunchReport, _finish
    from orchestration.ledger.store import TrialLedger

    sweep, uri, parent = make_store(tmp_path)
    client = MlflowClient(uri)
    client.update_run(parent, status="RUNNING")  # the launch in progress, ended by _finish
    plan = load_plan(sweep)
    counts = {"reads": 0, "tables": 0}
    real_search, real_build = store_module.search_runs, publish_module.build_tables

    def counting_search(*args, **kwargs):
        counts["reads"] += 1
        return real_search(*args, **kwargs)

    def counting_build(*args, **kwargs):
        counts["tables"] += 1
        return real_build(*args, **kwargs)

    monkeypatch.setattr(store_module, "search_runs", counting_search)
    monkeypatch.setattr(runs_module, "search_runs", counting_search)
    monkeypatch.setattr(publish_module, "build_tables", counting_build)
    output = tmp_path / "out"
    report = LaunchReport(
        plan.name, plan.total, 0, plan.total, finished=6, failed=1, killed=1, parent_run_id=parent
    )
    out = io.StringIO()
    launch = Launch(plan, TrialLedger(uri, plan.name), report, output, LaunchOptions(output=output), out)
    _finish(launch)

    assert counts == {"reads": 1, "tables": 1}, out.getvalue()
    assert client.get_run(parent).info.status == "FAILED"  # ended before the report read the ledger
    tables = sorted(p.name for p in (output / "tables" / "rep").iterdir())
    assert tables == ["base2new.csv", "base2new.md", "base2new.tex"]
    page = (output / "reports" / "rep" / "report.html").read_text()
    assert "<dt>finished</dt><dd>6</dd>" in page and "FAILED" in page
    logged = {Path(f.path).name for f in client.list_artifacts(parent, "tables")}
    assert logged == set(tables)
    assert {Path(f.path).name for f in client.list_artifacts(parent, "report")} == {
        "report.html",
        "report.md",
        "figures",
    }
    assert f"report: {output / 'reports' / 'rep' / 'report.html'}" in out.getvalue()
