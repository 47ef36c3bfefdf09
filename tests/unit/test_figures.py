"""The figures, checked on the figure objects and the written files from hand-made runs.

Acceptance (issue 16): error bars where seeds > 1, no all-zero or constant series, iso-HM curves,
one colour per method across every figure; plus print size, legends off the data, seed counts.
"""

from __future__ import annotations

import math
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from orchestration.ledger.runs import RunsTable as Ledger
from orchestration.ledger.runs import attach_params, tidy_from_wide
from orchestration.results.base2new import base2new_summary
from orchestration.results.context import ResultsContext
from orchestration.results.figures import (
    ALIGNMENT_METRICS,
    DPI,
    GATE_METRICS,
    MIN_FONT_PT,
    TEXT_WIDTH_IN,
    base2new_stats,
    build_figures,
    curve_series,
    few_shot_stats,
    figure_base_vs_new,
    figure_few_shot,
    figure_gate_alignment,
    figure_hm,
    figure_search,
    figure_training_curves,
    figure_transfer,
    method_style,
    save_figure,
    transfer_stats,
)
from orchestration.results.published import load_published
from orchestration.results.transfer import DOMAIN_TARGETS
from prometar.protocols import harmonic_mean

DATASETS = ["dtd", "eurosat"]

# method, dataset, seed, base, new — every seed differs, so every std is positive
B2N_ROWS = [
    ("zeroshot", "dtd", 1, 60.0, 70.0),
    ("zeroshot", "dtd", 2, 61.0, 69.0),
    ("zeroshot", "eurosat", 1, 50.0, 64.0),
    ("zeroshot", "eurosat", 2, 52.0, 66.0),
    ("ivlp", "dtd", 1, 75.0, 50.0),
    ("ivlp", "dtd", 2, 71.0, 46.0),
    ("ivlp", "eurosat", 1, 84.0, 60.0),
    ("ivlp", "eurosat", 2, 82.0, 55.0),
    ("prometar", "dtd", 1, 72.0, 55.0),
    ("prometar", "dtd", 2, 70.0, 51.0),
    ("prometar", "eurosat", 1, 83.0, 62.0),
    ("prometar", "eurosat", 2, 80.0, 58.0),
]


def b2n_ledger(rows=B2N_ROWS) -> Ledger:
    wide = pd.DataFrame(rows, columns=["method", "dataset", "seed", "base_acc", "new_acc"]).assign(shots=16)
    wide["run_id"] = [f"{m}-{d}-{s}" for m, d, s, *_ in rows]
    return tidy_from_wide(wide, source="hand")


def history_for(ledger: Ledger, epochs: int = 6) -> pd.DataFrame:
    """Per-epoch metrics as the step logs them: IVLP's gate, cosine and query are constants (its scheme
    has none), ``gate_lr`` and ``steps`` are constant for everyone."""
    rows = []
    for run_id, method, seed in (
        ledger.runs[["run_id", "method", "seed"]].drop_duplicates("run_id").itertuples(index=False)
    ):
        if method == "zeroshot":
            continue  # trains nothing: logs no curve
        meta = method == "prometar"
        for epoch in range(1, epochs + 1):
            values = {
                "loss": 2.0 / epoch + 0.05 * seed,
                "train_acc": 40 + 5 * epoch + seed,
                "lr": 0.0025 * (1 + math.cos(math.pi * epoch / epochs)) / 2,
                "gate_lr": 1e-6,
                "steps": 32.0,
                "meta_skipped": 0.0,
                "query": 0.3 / epoch if meta else 0.0,
            }
            for tower in ("text", "vision"):
                values[f"gate_mean/{tower}"] = 0.5 + 0.02 * epoch + 0.01 * seed if meta else 1.0
                values[f"gate_std/{tower}"] = 0.1 + 0.01 * epoch if meta else 0.0
                values[f"grad_cos/{tower}"] = -0.2 + 0.03 * epoch + 0.01 * seed if meta else 0.0
            rows += [(run_id, name, epoch, value) for name, value in values.items()]
    return pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])


def artists(figure: Figure, prefix: str) -> list:
    """Every artist of the figure whose gid starts with ``prefix``."""
    return [a for a in figure.findobj() if (a.get_gid() or "").startswith(prefix)]


def error_lengths(figure: Figure, method: str) -> list[float]:
    """Lengths of the error-bar segments drawn for a method."""
    lengths = []
    for collection in artists(figure, f"error:{method}"):
        assert isinstance(collection, LineCollection)
        for segment in collection.get_segments():
            lengths.append(float(np.hypot(*(segment[1] - segment[0]))))
    return lengths


def artist_color(artist) -> str:
    if isinstance(artist, Rectangle):
        return to_hex(artist.get_facecolor())
    if isinstance(artist, Line2D):
        return to_hex(artist.get_color())
    if isinstance(artist, PathCollection | LineCollection):
        return to_hex(artist.get_facecolor()[0] if len(artist.get_facecolor()) else artist.get_edgecolor()[0])
    return to_hex(artist.get_facecolor()[0])


# ------------------------------------------------------------------------------------- statistics


def test_base2new_stats_by_hand():
    stats = base2new_stats(b2n_ledger().runs, datasets=DATASETS)
    summary = base2new_summary(b2n_ledger().runs, datasets=DATASETS)
    row = stats[(stats["method"] == "ivlp") & (stats["dataset"] == "dtd")].iloc[0]
    table = summary[(summary["method"] == "ivlp") & (summary["dataset"] == "dtd")].iloc[0]
    assert (row["base"], row["new"], row["hm"]) == (
        table["base"],
        table["new"],
        table["hm"],
    )  # the table's means
    assert row["hm_std"] == pytest.approx(np.std([harmonic_mean(75, 50), harmonic_mean(71, 46)], ddof=1))
    # Average: each seed's mean over the datasets, then the std over seeds
    average = stats[(stats["method"] == "ivlp") & (stats["dataset"] == "average")].iloc[0]
    seed_base = [(75 + 84) / 2, (71 + 82) / 2]
    seed_new = [(50 + 60) / 2, (46 + 55) / 2]
    assert average["base_std"] == pytest.approx(np.std(seed_base, ddof=1))
    assert average["new_std"] == pytest.approx(np.std(seed_new, ddof=1))
    assert average["hm_std"] == pytest.approx(
        np.std([harmonic_mean(b, n) for b, n in zip(seed_base, seed_new, strict=True)], ddof=1)
    )
    assert average["n_seeds"] == 2
    # a seed missing on one dataset leaves that seed out of the Average's spread
    partial = base2new_stats(
        b2n_ledger([r for r in B2N_ROWS if r[:3] != ("ivlp", "dtd", 2)]).runs, datasets=DATASETS
    )
    average = partial[(partial["method"] == "ivlp") & (partial["dataset"] == "average")].iloc[0]
    assert average["n_seeds"] == 1 and math.isnan(average["base_std"])


def test_few_shot_and_transfer_stats_by_hand():
    rows = [
        {"method": "coop", "dataset": d, "seed": s, "shots": k, "protocol": "all_classes", "acc": acc}
        for d, s, k, acc in [
            ("dtd", 1, 1, 40.0),
            ("dtd", 2, 1, 44.0),
            ("eurosat", 1, 1, 50.0),
            ("eurosat", 2, 1, 56.0),
            ("dtd", 1, 4, 60.0),
        ]
    ]
    stats = few_shot_stats(tidy_from_wide(pd.DataFrame(rows), source="hand").runs, datasets=DATASETS)
    average = stats[(stats["dataset"] == "average") & (stats["shots"] == 1)].iloc[0]
    assert average["acc"] == pytest.approx((42 + 53) / 2)
    assert average["acc_std"] == pytest.approx(np.std([45.0, 50.0], ddof=1)) and average["n_seeds"] == 2
    assert not ((stats["dataset"] == "average") & (stats["shots"] == 4)).any()  # eurosat has no K=4 run

    runs = []
    for seed, offset in ((1, 0.0), (2, 2.0)):
        run = {
            "method": "coop",
            "dataset": "imagenet",
            "seed": seed,
            "shots": 16,
            "protocol": "domain_generalization",
            "acc/imagenet": 70 + offset,
        }
        run.update({f"acc/{t}": 50 + i + offset for i, t in enumerate(DOMAIN_TARGETS)})
        runs.append(run)
    stats = transfer_stats(
        tidy_from_wide(pd.DataFrame(runs), source="hand").runs,
        protocol="domain_generalization",
        targets=DOMAIN_TARGETS,
    )
    mean = stats[stats["column"] == "target_mean"].iloc[0]
    assert mean["mean"] == pytest.approx(52.5) and mean["std"] == pytest.approx(np.std([51.5, 53.5], ddof=1))
    assert mean["n_seeds"] == 2


# --------------------------------------------------------------------------------------- acceptance


def test_error_bars_exist_where_seeds_exceed_one():
    ledger = b2n_ledger()
    for figure in (
        figure_base_vs_new(ledger.runs, datasets=DATASETS, expected_seeds=2),
        figure_hm(ledger.runs, datasets=DATASETS, expected_seeds=2),
    ):
        for method in ("zeroshot", "ivlp", "prometar"):
            lengths = error_lengths(figure, method)
            assert lengths and all(length > 0 for length in lengths), (method, lengths)
    scatter = figure_base_vs_new(ledger.runs, datasets=DATASETS, expected_seeds=2)
    # three panels (Average, DTD, EuroSAT) x three methods, each with a horizontal and a vertical bar
    assert len([c for ax in scatter.axes for c in ax.containers if isinstance(c, ErrorbarContainer)]) == 9
    assert len(error_lengths(scatter, "ivlp")) == 3 * 2
    # one seed: the point is drawn without a bar, nothing pretends to a spread
    single = b2n_ledger([r for r in B2N_ROWS if r[2] == 1])
    assert error_lengths(figure_base_vs_new(single.runs, datasets=DATASETS, expected_seeds=1), "ivlp") == []


def test_curves_draw_no_constant_or_zero_series():
    ledger = b2n_ledger()
    history = history_for(ledger)
    curves = figure_training_curves(history, ledger.runs, expected_seeds=2)
    titles = [ax.get_title() for ax in curves.axes]
    assert titles == [
        "Training loss",
        "Meta (query) loss, scaled",
        "Training accuracy (%)",
        "Prompt learning rate",
    ]
    gates = figure_gate_alignment(history, ledger.runs, expected_seeds=2)
    assert len(gates.axes) == len(GATE_METRICS) + len(ALIGNMENT_METRICS)
    for figure in (curves, gates):
        lines = artists(figure, "mean:")
        assert lines
        for line in lines:
            values = np.asarray(line.get_ydata(), dtype=float)
            assert np.ptp(values) > 0 and not np.allclose(values, 0), line.get_gid()
    # IVLP's gate, cosine and query are constants of its scheme: not drawn
    assert not artists(gates, "mean:ivlp") and artists(gates, "mean:prometar")
    query_panel = curves.axes[titles.index("Meta (query) loss, scaled")]
    assert {line.get_gid() for line in query_panel.get_lines()} == {"mean:prometar"}
    assert set(curve_series(history, ledger.runs, "loss")) == {"ivlp", "prometar"}
    assert curve_series(history, ledger.runs, "steps") == {}
    # two seeds: a band of the seed spread under every line
    assert {a.get_gid() for a in artists(curves, "band:")} == {"band:ivlp", "band:prometar"}
    # nothing varies: no figure at all
    flat = history[history["metric"].isin(["gate_lr", "steps"])]
    assert figure_training_curves(flat, ledger.runs) is None


def test_iso_hm_curves_are_curves_of_equal_harmonic_mean():
    figure = figure_base_vs_new(b2n_ledger().runs, datasets=DATASETS, expected_seeds=2)
    for ax in figure.axes:
        curves = [line for line in ax.get_lines() if (line.get_gid() or "").startswith("iso-hm:")]
        assert len(curves) >= 2, ax.get_title()
        for line in curves:
            level = float(line.get_gid().split(":")[1])
            x, y = (np.asarray(v, dtype=float) for v in line.get_data())
            keep = np.isfinite(y)
            assert keep.sum() > 10
            assert np.allclose(2 * x[keep] * y[keep] / (x[keep] + y[keep]), level)
        labels = [t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("iso-hm-label:")]
        assert len(labels) == len(curves)
    assert (
        figure.axes[0].get_xlabel() == "Base accuracy (%)"
        and figure.axes[0].get_ylabel() == "New accuracy (%)"
    )


def every_figure(ledger: Ledger, history: pd.DataFrame) -> list[Figure]:
    runs = ledger.runs
    search_rows = pd.DataFrame(
        [
            {
                "method": m,
                "dataset": "dtd",
                "seed": 1,
                "shots": 16,
                "protocol": "search",
                "val_hm": 50.0 + i + j,
                "regularizer.text_weight": 5.0 * 2**i,
            }
            for j, m in enumerate(("ivlp", "prometar"))
            for i in range(6)
        ]
    )
    search = tidy_from_wide(search_rows, source="search")
    few = tidy_from_wide(
        pd.DataFrame(
            [
                {
                    "method": m,
                    "dataset": d,
                    "seed": s,
                    "shots": k,
                    "protocol": "all_classes",
                    "acc": 40.0 + k + s + j,
                }
                for j, m in enumerate(("zeroshot", "ivlp", "prometar"))
                for d in DATASETS
                for s in (1, 2)
                for k in (1, 4, 16)
            ]
        ),
        source="few",
    )
    dg = tidy_from_wide(
        pd.DataFrame(
            [
                {
                    "method": m,
                    "dataset": "imagenet",
                    "seed": s,
                    "shots": 16,
                    "protocol": "domain_generalization",
                    "acc/imagenet": 70.0 + j + s,
                    **{f"acc/{t}": 50.0 + i + j + s for i, t in enumerate(DOMAIN_TARGETS)},
                }
                for j, m in enumerate(("ivlp", "prometar"))
                for s in (1, 2)
            ]
        ),
        source="dg",
    )
    return [
        figure_base_vs_new(runs, datasets=DATASETS, published=load_published(), expected_seeds=2),
        figure_hm(runs, datasets=DATASETS, published=load_published(), expected_seeds=2),
        figure_training_curves(history, runs, expected_seeds=2),
        figure_gate_alignment(history, runs, expected_seeds=2),
        figure_few_shot(few.runs, datasets=DATASETS, expected_seeds=2),
        figure_transfer(dg.runs, protocol="domain_generalization", targets=DOMAIN_TARGETS, expected_seeds=2),
        figure_search(
            attach_params(search.runs, search.params, ["regularizer.text_weight"]),
            ["regularizer.text_weight"],
        ),
    ]


def test_every_method_has_one_colour_across_figures():
    ledger = b2n_ledger()
    figures = every_figure(ledger, history_for(ledger))
    colours: dict[str, set[str]] = {}
    for figure in figures:
        for artist in figure.findobj():
            gid = artist.get_gid() or ""
            kind, _, method = gid.partition(":")
            if kind in {"mean", "bar", "sample", "band", "published"} and method:
                if kind == "published" and isinstance(artist, Line2D) and artist.get_marker() == "_":
                    continue  # the HM chart's published ticks are black by design
                colour = to_hex(artist.get_markeredgecolor()) if kind == "published" else artist_color(artist)
                colours.setdefault(method, set()).add(colour)
        legend_entries = {t.get_text() for legend in figure.legends for t in legend.get_texts()}
        assert legend_entries, "every figure has a legend"
    assert set(colours) == {"zeroshot", "ivlp", "prometar"}
    for method, seen in colours.items():
        assert seen == {method_style(method).color.lower()}, (method, seen)
    assert len({method_style(m).color for m in colours}) == len(colours)  # and one method per colour


def test_printed_size_text_and_legends_off_the_data():
    ledger = b2n_ledger()
    for figure in every_figure(ledger, history_for(ledger)):
        assert figure.get_figwidth() <= TEXT_WIDTH_IN + 1e-9
        figure.canvas.draw()
        for text in figure.findobj(Text):
            if text.get_text().strip() and text.get_visible():
                assert text.get_fontsize() >= MIN_FONT_PT, text.get_text()
        renderer = figure.canvas.get_renderer()
        for legend in figure.legends:
            box = legend.get_window_extent(renderer)
            for ax in figure.axes:
                assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()


def test_seed_counts_below_the_plan_are_shown():
    # one IVLP seed missing on DTD: its points say n=1; the others are the usual 2 of 3 planned
    ledger = b2n_ledger([r for r in B2N_ROWS if r[:3] != ("ivlp", "dtd", 2)])
    figure = figure_base_vs_new(ledger.runs, datasets=DATASETS, expected_seeds=3)
    notes = [t.get_text() for t in artists(figure, "n-note")]
    assert notes == ["n=1", "n=1"]  # Average and DTD
    assert "n=2 of 3 seeds" in {t.get_text() for t in figure.legends[0].get_texts()}
    everything = figure_base_vs_new(b2n_ledger().runs, datasets=DATASETS, expected_seeds=2)
    assert not artists(everything, "n-note")
    assert "n=2 of 2 seeds" not in {t.get_text() for t in everything.legends[0].get_texts()}


def test_published_values_are_marked():
    published = load_published()
    figure = figure_hm(b2n_ledger().runs, datasets=DATASETS, published=published, expected_seeds=2)
    ticks = artists(figure, "published:prometar")
    paper = published[(published["method"] == "prometar") & published["dataset"].isin(DATASETS)]
    assert sorted(float(t.get_ydata()[0]) for t in ticks) == sorted(
        paper["hm"]
    )  # no Average: not the paper's 11
    assert not artists(figure, "published:ivlp")  # the paper has no IVLP row
    scatter = figure_base_vs_new(b2n_ledger().runs, datasets=DATASETS, published=published, expected_seeds=2)
    marks = artists(scatter, "published:prometar")
    assert len(marks) == 2 and all(m.get_markerfacecolor() == "none" for m in marks)


def test_few_shot_transfer_and_search_figures():
    ledger = b2n_ledger()
    few, dg, search = every_figure(ledger, history_for(ledger))[4:]
    assert [ax.get_title() for ax in few.axes] == ["Average", "DTD", "EuroSAT"]
    for ax in few.axes:
        assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "16"]
    lengths = error_lengths(few, "prometar")
    assert len(lengths) == 3 * 3 and all(length > 0 for length in lengths)  # 3 panels x 3 K, seeds differ

    divider = artists(dg, "source-divider")
    assert len(divider) == 1
    labels = [t.get_text() for t in dg.axes[0].get_xticklabels()]
    assert labels[0] == "ImageNet\n(source)" and labels[-1] == "Target\nmean" and len(labels) == 6
    source_bars = [p for p in artists(dg, "bar:prometar") if p.get_hatch()]
    assert len(source_bars) == 1
    assert all(length > 0 for length in error_lengths(dg, "prometar"))

    assert dg.axes[0].get_ylabel() == "Accuracy (%)"
    points = artists(search, "sample:")
    assert sum(len(p.get_offsets()) for p in points) == 12 and search.axes[0].get_xscale() == "log"
    (best,) = artists(search, "best")
    assert tuple(best.get_offsets()[0]) == (5.0 * 2**5, 56.0)


def test_build_figures_by_protocol_and_save(tmp_path: Path):
    ledger = b2n_ledger()
    named = build_figures(
        ledger, ResultsContext(datasets=tuple(DATASETS), expected_seeds=2), history=history_for(ledger)
    )
    assert [n.name for n in named] == ["base_vs_new", "hm", "training_curves", "gate_and_alignment"]
    assert all(n.caption for n in named)
    assert [n.name for n in build_figures(ledger, ResultsContext(datasets=tuple(DATASETS)))] == [
        "base_vs_new",
        "hm",
    ]
    assert build_figures(ledger, ResultsContext(protocol="few_shot")) == []

    paths = save_figure(named[0].figure, tmp_path / "base_vs_new")
    assert [p.name for p in paths] == ["base_vs_new.png", "base_vs_new.pdf", "base_vs_new.svg"]
    png = paths[0].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = struct.unpack(">I", png[16:20])[0]  # IHDR
    assert width == round(named[0].figure.get_figwidth() * DPI)
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    svg = ET.parse(paths[2]).getroot()
    ids = {element.get("id") for element in svg.iter() if element.get("id")}
    assert {"iso-hm:60", "error:prometar", "mean:ivlp"} <= ids
    assert b"<dc:date>" not in paths[2].read_bytes()  # no creation date in the files
