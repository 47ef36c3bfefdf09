"""The paper's figures as matplotlib figures: pure functions of the tidy runs table (``ledger.runs``).

One function per figure, each taking the runs table the tables use (and, for training curves, the
per-epoch history) and returning a :class:`matplotlib.figure.Figure` — or ``None`` when the runs
hold nothing it could draw. Nothing here writes a file except :func:`save_figure` (PNG at 300 dpi,
PDF and SVG side by side).

House style of every figure:

- one colour and one marker per method (:func:`method_style`), the same in every figure, from the
  Okabe–Ito and Tol colour-blind-safe palettes;
- sizes in inches as printed: the full text width of a two-column paper (:data:`TEXT_WIDTH_IN`) or
  one column (:data:`COLUMN_WIDTH_IN`), 8 pt text, nothing below :data:`MIN_FONT_PT`;
- error bars (or bands) of the sample standard deviation over seeds wherever a mean is drawn, and
  ``n=k`` beside a mean of fewer seeds than the sweep plans;
- a series only where its values exist and vary over training: no line of zeros stands for a
  metric a method does not have;
- legends outside the axes, never over data.

Artists carry a ``gid`` naming what they show (``mean:<method>``, ``published:<method>``,
``band:<method>``, ``iso-hm:<level>``, ``sample:<method>``); the SVG files keep them as ids.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from orchestration.ledger.runs import RunsTable, attach_params
from orchestration.results import base2new, few_shot, search, transfer
from orchestration.results.base2new import BASE2NEW_DATASETS, base2new_summary
from orchestration.results.context import ResultsContext
from orchestration.results.few_shot import few_shot_summary
from orchestration.results.labels import AVERAGE, dataset_label, method_label, order_datasets, order_methods
from orchestration.results.published import subset_average
from orchestration.results.search import varying_params
from orchestration.results.transfer import TARGET_MEAN, transfer_summary
from prometar import metrics as names
from prometar import protocols
from prometar.metrics import ALIGNMENT_METRICS, GATE_METRICS
from prometar.protocols import harmonic_mean

TEXT_WIDTH_IN = 7.0
"""Width of a figure spanning both columns of a two-column paper (inches)."""
COLUMN_WIDTH_IN = 3.35
"""Width of a one-column figure (inches)."""
MIN_FONT_PT = 7.0
"""No text of a figure is smaller (at the printed size)."""
DPI = 300
"""Resolution of the PNG files."""
FORMATS: tuple[str, ...] = ("png", "pdf", "svg")
"""Every figure is written in each of these formats."""

STYLE: dict[str, object] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 8,
    "lines.linewidth": 1.2,
    "lines.markersize": 4.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "errorbar.capsize": 2,
    "legend.frameon": False,
    "savefig.dpi": DPI,
    "svg.hashsalt": "prometar",
    "pdf.fonttype": 42,
    "figure.dpi": 100,
    "text.usetex": False,
    "text.parse_math": False,
}
"""Matplotlib settings every figure is drawn and saved under; text is drawn literally (names from
run data are never mathtext or TeX)."""

METRIC_LABELS: dict[str, str] = {
    names.LOSS: "Training loss",
    names.CE: "Cross-entropy",
    names.TEXT_REG: "Text reg., weighted",
    names.IMAGE_REG: "Image reg., weighted",
    names.QUERY: "Meta (query) loss, scaled",
    names.TRAIN_ACC: "Training accuracy (%)",
    names.LR: "Prompt learning rate",
    names.GATE_LR: "Gate learning rate",
    names.META_SKIPPED: "Meta step skipped (fraction)",
    names.STEPS: "Steps per epoch",
    **{names.GATE_MEAN[tower]: f"Gate mean · {tower}" for tower in names.TOWERS},
    **{names.GATE_STD[tower]: f"Gate std · {tower}" for tower in names.TOWERS},
    **{names.GRAD_COS[tower]: f"cos(∇CE, ∇reg) · {tower}" for tower in names.TOWERS},
}
"""Panel titles of the logged per-epoch metrics (others are titled by their name)."""

_CURVE_ORDER: tuple[str, ...] = (
    *(
        m
        for m in names.STEP_METRICS
        if m not in (*GATE_METRICS, *ALIGNMENT_METRICS, names.META_SKIPPED, names.TRAIN_ACC)
    ),
    names.TRAIN_ACC,
    names.LR,
    names.GATE_LR,
    names.META_SKIPPED,
    names.STEPS,
)
"""Order of the training-curve panels: losses, accuracy, learning rates, bookkeeping."""

# ------------------------------------------------------------------------------------------- style


@dataclass(frozen=True)
class MethodStyle:
    """How one method is drawn in every figure.

    Attributes:
        color: Hex colour.
        marker: Matplotlib marker.
        label: Display name.
    """

    color: str
    marker: str
    label: str


_METHOD_COLORS: dict[str, tuple[str, str]] = {
    "clip": ("#000000", "v"),
    "zeroshot": ("#8C8C8C", "o"),
    "coop": ("#56B4E9", "s"),
    "cocoop": ("#009E73", "D"),
    "kgcoop": ("#E69F00", "^"),
    "maple": ("#CC79A7", "P"),
    "vpt": ("#999933", "<"),
    "ivlp": ("#0072B2", "X"),
    "ivlp_reg": ("#882255", "h"),
    "promptsrc": ("#332288", "p"),
    "prometar": ("#D55E00", "*"),
}
"""Colour (Okabe–Ito, then Tol's) and marker of the known methods; ProMetaR in vermillion."""
_OTHER_COLORS: tuple[str, ...] = ("#44AA99", "#117733", "#88CCEE", "#DDCC77", "#AA4499", "#661100")
_OTHER_MARKERS: tuple[str, ...] = ("o", "s", "D", "^", "v", "P")


def method_style(method: str) -> MethodStyle:
    """The colour, marker and label of a method: fixed for the known ones, else from its name's hash."""
    if method in _METHOD_COLORS:
        color, marker = _METHOD_COLORS[method]
    else:
        index = zlib.crc32(method.encode())
        color, marker = _OTHER_COLORS[index % len(_OTHER_COLORS)], _OTHER_MARKERS[index % len(_OTHER_MARKERS)]
    return MethodStyle(color, marker, method_label(method))


@contextmanager
def figure_style() -> Iterator[None]:
    """Draw (and save) under :data:`STYLE`."""
    with rc_context(STYLE):
        yield


def _figure(width: float, height: float) -> Figure:
    """A headless figure (Agg canvas) of the printed size, laid out by matplotlib's constrained layout."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _grid(figure: Figure, n_panels: int, *, columns: int = 4) -> list:
    columns = min(columns, max(1, n_panels))
    rows = math.ceil(n_panels / columns)
    return [figure.add_subplot(rows, columns, i + 1) for i in range(n_panels)]


def _panel_figure(
    n_panels: int,
    *,
    panel_width: float = 1.75,
    panel_height: float = 1.6,
    columns: int = 4,
    extra_height: float = 0.35,
) -> tuple[Figure, list]:
    """A figure of ``n_panels`` axes (at most ``columns`` per row), no wider than the text width."""
    columns = min(columns, max(1, n_panels))
    rows = math.ceil(n_panels / columns)
    width = min(TEXT_WIDTH_IN, max(COLUMN_WIDTH_IN, panel_width * columns))
    figure = _figure(width, panel_height * rows + extra_height)
    return figure, _grid(figure, n_panels, columns=columns)


def _legend(
    figure: Figure,
    methods: Sequence[str],
    *,
    kind: str = "line",
    published: bool = False,
    extra: Sequence = (),
    note: str = "",
) -> None:
    """One legend above the panels (outside every axes): one entry per method, then the extras.

    Args:
        kind: How a method's entry looks: ``line`` (line and marker), ``marker`` or ``bar`` (a patch).
    """
    handles: list = []
    labels: list[str] = []
    for method in methods:
        style = method_style(method)
        if kind == "bar":
            handles.append(Patch(facecolor=style.color))
        else:
            handles.append(
                Line2D(
                    [], [], color=style.color, marker=style.marker, linestyle="-" if kind == "line" else ""
                )
            )
        labels.append(style.label)
    if published:
        handles.append(Line2D([], [], color="0.2", marker="o", markerfacecolor="none", linestyle=""))
        labels.append("published")
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    if note:
        handles.append(Line2D([], [], linestyle=""))
        labels.append(note)
    if handles:
        per_row = max(2, int(figure.get_figwidth() / 1.25))
        figure.legend(
            handles,
            labels,
            loc="outside upper center",
            ncols=min(len(labels), per_row),
            handlelength=1.8,
            columnspacing=1.2,
        )


@dataclass(frozen=True)
class SeedNotes:
    """Where to say ``n=k``: beside a mean whose seed count is not the figure's usual one, and once in
    the legend when the usual count is below what the sweep plans.

    Attributes:
        expected: Seeds per cell the sweep plans.
        usual: The most common seed count of the figure's means.
    """

    expected: int
    usual: int

    @classmethod
    def of(cls, counts: Sequence[int] | pd.Series, expected: int) -> SeedNotes:
        counts = [int(c) for c in counts if int(c) > 0]
        usual = max(set(counts), key=lambda c: (counts.count(c), c)) if counts else expected
        return cls(expected, usual)

    def beside(self, n: int) -> bool:
        """Whether a mean of ``n`` seeds gets its own ``n=k``."""
        return 0 < n < self.expected and n != self.usual

    def legend(self) -> str:
        """The legend's line, or "" when the usual count is the planned one."""
        return f"n={self.usual} of {self.expected} seeds" if self.usual < self.expected else ""


def _tag(artists: object, gid: str) -> None:
    """Set ``gid`` on an artist or on every artist of a container."""
    if artists is None:
        return
    if hasattr(artists, "set_gid"):
        artists.set_gid(gid)  # type: ignore[union-attr]
        return
    for artist in artists:  # type: ignore[union-attr]
        _tag(artist, gid)


def _errorbar(ax, x, y, *, xerr=None, yerr=None, method: str, gid: str = "", **kwargs):
    """``ax.errorbar`` in the method's style, every part tagged ``mean:<method>``."""
    style = method_style(method)
    container = ax.errorbar(
        x, y, xerr=xerr, yerr=yerr, color=style.color, marker=style.marker, label=style.label, **kwargs
    )
    _tag(container.lines[0], gid or f"mean:{method}")
    _tag(container.lines[1], gid or f"mean:{method}")
    _tag(container.lines[2], gid or f"error:{method}")
    return container


def _std(value: object) -> float:
    """A std for drawing: 0 where undefined (one seed)."""
    number = float(value) if value is not None and not pd.isna(value) else math.nan  # type: ignore[arg-type]
    return 0.0 if math.isnan(number) else number


INTERVAL_BARS_NOTE = "error bars: 95% interval over seeds"
"""The legend's word on what the error bars of the base-to-new figures are."""


def _interval_bars(row: pd.Series, metric: str) -> list[list[float]] | None:
    """Asymmetric error-bar lengths (below, above) of one point's 95% interval; None without one."""
    low, high = row[f"{metric}_low"], row[f"{metric}_high"]
    if pd.isna(low) or pd.isna(high):
        return None
    return [[max(0.0, float(row[metric]) - float(low))], [max(0.0, float(high) - float(row[metric]))]]


def _n_note(ax, x: float, y: float, n: int, notes: SeedNotes, color: str, **kwargs) -> None:
    """``n=k`` beside a mean of an unusual number of seeds, fewer than planned."""
    if notes.beside(n):
        options = {"xytext": (3, 3), "textcoords": "offset points", **kwargs}
        ax.annotate(f"n={n}", (x, y), fontsize=MIN_FONT_PT, color=color, gid="n-note", **options)


# ------------------------------------------------------------------------------- seed statistics


def _per_seed(
    runs: pd.DataFrame, protocols: Sequence[str], metrics: Sequence[str], keys: Sequence[str]
) -> pd.DataFrame:
    """One row per run (``keys`` + seed) with the given metrics as columns (NaN where absent)."""
    rows = runs[runs["protocol"].isin(protocols) & runs["metric"].isin(metrics)]
    if rows.empty:
        return pd.DataFrame(columns=[*keys, "seed", *metrics])
    wide = rows.pivot_table(index=[*keys, "seed"], columns="metric", values="value", aggfunc="first")
    wide = wide.reset_index()  # [runs, keys + seed + metrics]
    wide.columns.name = None
    for metric in metrics:
        if metric not in wide.columns:
            wide[metric] = math.nan
    return wide


def _seed_averages(
    per_seed: pd.DataFrame,
    keys: Sequence[str],
    datasets: Sequence[str],
    metrics: Sequence[str],
    column: str = "dataset",
) -> pd.DataFrame:
    """Per (``keys``, seed): each metric's mean over ``datasets``, for seeds that have all of them."""
    inside = per_seed[per_seed[column].isin(datasets)].dropna(subset=list(metrics))
    if inside.empty:
        return pd.DataFrame(columns=[*keys, "seed", *metrics])
    grouped = inside.groupby([*keys, "seed"], sort=False)
    means = grouped[list(metrics)].mean()
    complete = grouped[column].nunique() == len(set(datasets))
    return means[complete].reset_index()


def _std_n(frame: pd.DataFrame, keys: Sequence[str], metric: str) -> pd.DataFrame:
    """Sample std (ddof=1) and count over seeds of one metric per ``keys``."""
    if frame.empty:
        return pd.DataFrame(columns=[*keys, f"{metric}_std", "n"])
    grouped = frame.dropna(subset=[metric]).groupby(list(keys), sort=False)[metric]
    return grouped.agg(**{f"{metric}_std": "std", "n": "count"}).reset_index()


def _fill(
    frame: pd.DataFrame, rows: pd.Series, stats: pd.DataFrame, keys: Sequence[str], columns: dict[str, str]
) -> pd.DataFrame:
    """``frame`` with ``columns`` (target → column of ``stats``) replaced on ``rows`` by the stats of the
    same ``keys`` (NaN, or 0 seeds, where ``stats`` has none); ``n_seeds`` stays an integer."""
    frame = frame.copy()
    found = frame.loc[rows, list(keys)].merge(stats, on=list(keys), how="left")  # [rows, keys + stats]
    for target, column in columns.items():
        values = found[column].to_numpy(dtype=float)
        frame[target] = frame[target].astype("float64")
        frame.loc[rows, target] = values
    frame["n_seeds"] = frame["n_seeds"].fillna(0).astype("int64")
    return frame


def base2new_stats(runs: pd.DataFrame, *, datasets: Sequence[str] = BASE2NEW_DATASETS) -> pd.DataFrame:
    """The base-to-new summary with the seed spread of every value, the Average row's included.

    The means are the table's (``results.base2new.base2new_summary``). ``hm_std`` is the sample std over seeds
    of each seed's HM; on Average rows every std is taken over the seeds that have all the Average's
    datasets (each seed's mean over datasets, and its HM), and ``n_seeds`` counts those seeds.

    Returns:
        Columns ``method, shots, dataset, base, new, hm, base_std, new_std, hm_std, n_seeds`` and
        the table's 95% intervals ``base_low, base_high, new_low, new_high, hm_low, hm_high`` (rows
        without runs left out).
    """
    summary = base2new_summary(runs, datasets=datasets)
    summary = summary[summary["base"].notna()]
    keys = ["method", "shots", "dataset"]
    base_metric, new_metric = base2new.BASE_METRIC, base2new.NEW_METRIC
    per_seed = _per_seed(runs, base2new.PROTOCOL.recorded_names, [base_metric, new_metric], keys)
    per_seed = per_seed.dropna(subset=[base_metric, new_metric])
    per_seed["hm"] = [
        harmonic_mean(b, n) for b, n in zip(per_seed[base_metric], per_seed[new_metric], strict=True)
    ]
    hm = _std_n(per_seed, keys, "hm").drop(columns="n")
    averages = _seed_averages(
        per_seed, ["method", "shots"], order_datasets(datasets), [base_metric, new_metric]
    )
    averages["hm"] = [
        harmonic_mean(b, n) for b, n in zip(averages[base_metric], averages[new_metric], strict=True)
    ]
    average_stats = _std_n(averages, ["method", "shots"], base_metric).rename(
        columns={f"{base_metric}_std": "base_std"}
    )
    for metric, name in ((new_metric, "new_std"), ("hm", "hm_std")):
        average_stats = average_stats.merge(
            _std_n(averages, ["method", "shots"], metric)
            .drop(columns="n")
            .rename(columns={f"{metric}_std": name}),
            on=["method", "shots"],
            how="left",
        )
    stats = summary.merge(hm, on=keys, how="left")
    stats = _fill(
        stats,
        stats["dataset"] == AVERAGE,
        average_stats,
        ["method", "shots"],
        {"base_std": "base_std", "new_std": "new_std", "hm_std": "hm_std", "n_seeds": "n"},
    )
    columns = [
        "method",
        "shots",
        "dataset",
        "base",
        "new",
        "hm",
        "base_std",
        "new_std",
        "hm_std",
        "n_seeds",
        *base2new.INTERVAL_COLUMNS,
    ]
    return stats[columns].reset_index(drop=True)


def few_shot_stats(runs: pd.DataFrame, *, datasets: Sequence[str] = BASE2NEW_DATASETS) -> pd.DataFrame:
    """The few-shot summary (``results.few_shot.few_shot_summary``) with the Average row's seed spread.

    Returns:
        Columns ``method, dataset, shots, acc, acc_std, n_seeds`` (rows without runs left out); on
        Average rows the std and count are over the seeds that have every dataset of the Average.
    """
    summary = few_shot_summary(runs, datasets=datasets)
    summary = summary[summary["acc"].notna()].copy()
    acc = few_shot.ACC_METRIC
    per_seed = _per_seed(runs, few_shot.PROTOCOL.recorded_names, [acc], ["method", "dataset", "shots"])
    averages = _seed_averages(per_seed, ["method", "shots"], order_datasets(datasets), [acc])
    stats = _std_n(averages, ["method", "shots"], acc).rename(columns={f"{acc}_std": "acc_std"})
    summary = _fill(
        summary,
        summary["dataset"] == AVERAGE,
        stats,
        ["method", "shots"],
        {"acc_std": "acc_std", "n_seeds": "n"},
    )
    return summary[["method", "dataset", "shots", "acc", "acc_std", "n_seeds"]].reset_index(drop=True)


def transfer_stats(runs: pd.DataFrame, *, protocol: str, targets: Sequence[str]) -> pd.DataFrame:
    """The transfer summary (``results.transfer.transfer_summary``) with the target mean's seed spread.

    Returns:
        ``TRANSFER_COLUMNS`` (rows without a value left out); the target mean's ``std`` and
        ``n_seeds`` are over the seeds that have every target.
    """
    summary = transfer_summary(runs, protocol=protocol, targets=targets)
    found = protocols.lookup(protocol)
    recorded = found.recorded_names if found is not None else (protocol,)
    metrics = [transfer.TARGET_METRIC.format(t) for t in targets]
    per_seed = _per_seed(runs, recorded, metrics, ["method", "shots", "dataset"])
    long = per_seed.melt(
        id_vars=["method", "shots", "dataset", "seed"],
        value_vars=metrics,
        var_name="target",
        value_name="acc",
    ).dropna(subset=["acc"])
    averages = _seed_averages(
        long.rename(columns={"dataset": "source"}),
        ["method", "shots", "source"],
        metrics,
        ["acc"],
        column="target",
    )
    stats = _std_n(averages, ["method", "shots", "source"], "acc")
    summary = _fill(
        summary,
        summary["column"] == TARGET_MEAN,
        stats,
        ["method", "shots", "source"],
        {"std": "acc_std", "n_seeds": "n"},
    )
    return summary[summary["mean"].notna()].reset_index(drop=True)


# ------------------------------------------------------------------------------------ base-to-new


def _iso_hm_levels(low: float, high: float) -> list[float]:
    """Round HM values inside (low, high), three to six of them."""
    span = max(high - low, 1e-6)
    step = next((s for s in (1, 2, 5, 10, 20) if span / s <= 6), 25)
    first = math.ceil(low / step) * step
    return [float(v) for v in np.arange(first, high, step) if low < v < high]


def _draw_iso_hm(ax, low: float, high: float) -> None:
    """Dashed grey curves of constant HM = 2BN/(B+N) across the panel, each labelled at its end."""
    for level in _iso_hm_levels(low, high):
        base = np.linspace(max(low, level / 2 + 1e-3), high, 200)
        new = level * base / (2 * base - level)  # HM(base, new) = level
        new = np.where((new >= low) & (new <= high), new, np.nan)
        if np.isfinite(new).sum() < 10:  # no curve, or one that only touches the panel's corner
            continue
        (line,) = ax.plot(base, new, linestyle="--", linewidth=0.6, color="0.65", zorder=0)
        line.set_gid(f"iso-hm:{level:g}")
        top = int(np.nanargmax(new))  # where the curve leaves the panel at the top (or the left)
        ax.annotate(
            f"{level:g}",
            (base[top], new[top]),
            xytext=(2, -2),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=MIN_FONT_PT,
            color="0.45",
            gid=f"iso-hm-label:{level:g}",
        )


def figure_base_vs_new(
    runs: pd.DataFrame,
    *,
    datasets: Sequence[str] = BASE2NEW_DATASETS,
    published: pd.DataFrame | None = None,
    expected_seeds: int = 3,
) -> Figure | None:
    """Base (x) against new (y) accuracy per dataset (Average first), with iso-HM curves.

    Points are seed means with their 95% intervals (the table's) as error bars in both directions;
    published numbers of the methods run are hollow markers of the same colour (the paper's Average
    recomputed over the same datasets).

    Args:
        runs: The tidy runs table (base-to-new rows are used).
        datasets: The sweep's datasets (the Average is taken over them).
        published: Published numbers (``results.published.load_published``), or None.
        expected_seeds: The sweep's seeds per cell (fewer are marked ``n=k``).
    """
    stats = base2new_stats(runs, datasets=datasets)
    if stats.empty:
        return None
    panels = list(dict.fromkeys(stats["dataset"]))
    methods = order_methods(stats["method"].unique())
    shown_published = False
    notes = SeedNotes.of(stats["n_seeds"], expected_seeds)
    with figure_style():
        figure, axes = _panel_figure(len(panels))
        for ax, dataset in zip(axes, panels, strict=True):
            rows = stats[stats["dataset"] == dataset]
            paper = _published_rows(published, dataset, methods, datasets)
            values = [
                *rows["base_low"].fillna(rows["base"]),
                *rows["base_high"].fillna(rows["base"]),
                *rows["new_low"].fillna(rows["new"]),
                *rows["new_high"].fillna(rows["new"]),
                *paper["base"],
                *paper["new"],
            ]
            low, high = min(values), max(values)
            pad = max(2.0, 0.08 * (high - low))
            low, high = max(0.0, low - pad), min(100.0, high + pad)
            for _, row in rows.iterrows():
                method = str(row["method"])
                _errorbar(
                    ax,
                    [row["base"]],
                    [row["new"]],
                    xerr=_interval_bars(row, "base"),
                    yerr=_interval_bars(row, "new"),
                    method=method,
                    linestyle="",
                    markersize=6 if method == "prometar" else 4.5,
                    zorder=3,
                )
                _n_note(ax, row["base"], row["new"], int(row["n_seeds"]), notes, method_style(method).color)
            for _, row in paper.iterrows():
                style = method_style(str(row["method"]))
                (mark,) = ax.plot(
                    [row["base"]],
                    [row["new"]],
                    linestyle="",
                    marker=style.marker,
                    markersize=5,
                    markerfacecolor="none",
                    markeredgecolor=style.color,
                    zorder=2,
                )
                mark.set_gid(f"published:{row['method']}")
                shown_published = True
            _draw_iso_hm(ax, low, high)
            ax.set_xlim(low, high)
            ax.set_ylim(low, high)
            ax.set_aspect("equal", adjustable="box")
            ax.set_title(dataset_label(dataset))
            ax.set_xlabel("Base accuracy (%)")
            ax.set_ylabel("New accuracy (%)")
        iso = Line2D([], [], linestyle="--", linewidth=0.6, color="0.65")
        _legend(
            figure,
            methods,
            kind="marker",
            published=shown_published,
            extra=[(iso, "equal HM"), (Line2D([], [], linestyle=""), INTERVAL_BARS_NOTE)],
            note=notes.legend(),
        )
    return figure


def _published_rows(
    published: pd.DataFrame | None, dataset: str, methods: Sequence[str], datasets: Sequence[str]
) -> pd.DataFrame:
    """Published rows of the methods run, for one dataset; the paper's Average is over the same
    datasets as ours (``results.published.subset_average``)."""
    empty = pd.DataFrame(columns=["method", "dataset", "base", "new", "hm"])
    if published is None:
        return empty
    if dataset == AVERAGE:
        published = subset_average(published, datasets)
    return published[(published["dataset"] == dataset) & published["method"].isin(methods)]


def figure_hm(
    runs: pd.DataFrame,
    *,
    datasets: Sequence[str] = BASE2NEW_DATASETS,
    published: pd.DataFrame | None = None,
    expected_seeds: int = 3,
) -> Figure | None:
    """HM per dataset (Average first) as grouped bars, one per method, with the published HM marked.

    Bars are the HM of the seed means (the table's); error bars are its 95% interval (the table's
    paired bootstrap over seeds). A published HM is a black bar-wide tick over the method's bar.
    """
    stats = base2new_stats(runs, datasets=datasets)
    if stats.empty:
        return None
    groups = list(dict.fromkeys(stats["dataset"]))
    methods = order_methods(stats["method"].unique())
    width = 0.8 / len(methods)
    x = np.arange(len(groups))
    lows: list[float] = []
    shown_published = False
    notes = SeedNotes.of(stats["n_seeds"], expected_seeds)
    with figure_style():
        figure = _figure(COLUMN_WIDTH_IN if len(groups) * len(methods) <= 16 else TEXT_WIDTH_IN, 2.4)
        ax = figure.add_subplot(1, 1, 1)
        for i, method in enumerate(methods):
            style = method_style(method)
            rows = stats[stats["method"] == method].set_index("dataset").reindex(groups)
            positions = x + (i - (len(methods) - 1) / 2) * width
            heights = rows["hm"].to_numpy(dtype=float)
            below = np.nan_to_num(np.clip(heights - rows["hm_low"].to_numpy(dtype=float), 0.0, None))
            above = np.nan_to_num(np.clip(rows["hm_high"].to_numpy(dtype=float) - heights, 0.0, None))
            errors = above
            bars = ax.bar(
                positions,
                heights,
                width * 0.92,
                yerr=np.vstack([below, above]),  # [2, groups]: below, above
                color=style.color,
                label=style.label,
                error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.15"},
            )
            _tag(bars.patches, f"bar:{method}")
            if bars.errorbar is not None:
                _tag(bars.errorbar.lines[2], f"error:{method}")
            lows += [h for h in heights if not math.isnan(h)]
            for position, height, error, n in zip(
                positions, heights, errors, rows["n_seeds"].fillna(0), strict=True
            ):
                if not math.isnan(height):
                    _n_note(
                        ax,
                        position,
                        height + error,
                        int(n),
                        notes,
                        "black",
                        xytext=(0, 2),
                        ha="center",
                        va="bottom",
                        rotation=90,
                    )
            for group, position in zip(groups, positions, strict=True):
                paper = _published_rows(published, group, [method], datasets)
                if not paper.empty:
                    (tick,) = ax.plot(
                        [position],
                        [float(paper["hm"].iloc[0])],
                        marker="_",
                        color="black",
                        markersize=max(4.0, 72 * width * 0.9 * _axes_width(figure) / len(groups)),
                        markeredgewidth=1.4,
                        linestyle="",
                        zorder=4,
                    )
                    tick.set_gid(f"published:{method}")
                    lows.append(float(paper["hm"].iloc[0]))
                    shown_published = True
        bottom = max(0.0, 5 * math.floor((min(lows) - 8) / 5)) if lows else 0.0
        ax.set_ylim(bottom=bottom)
        ax.set_xticks(
            x,
            [dataset_label(g) for g in groups],
            rotation=30 if len(groups) > 3 else 0,
            ha="right" if len(groups) > 3 else "center",
        )
        ax.set_ylabel("HM (%)")
        ax.grid(axis="x", visible=False)
        extra = (
            [
                (
                    Line2D(
                        [], [], marker="_", color="black", markersize=8, markeredgewidth=1.4, linestyle=""
                    ),
                    "published",
                )
            ]
            if shown_published
            else []
        )
        extra.append((Line2D([], [], linestyle=""), INTERVAL_BARS_NOTE))
        _legend(figure, methods, kind="bar", extra=extra, note=notes.legend())
    return figure


def _axes_width(figure: Figure) -> float:
    """Approximate width in inches of a single full-width axes."""
    return figure.get_figwidth() * 0.85


# ---------------------------------------------------------------------------------------- few-shot


def figure_few_shot(
    runs: pd.DataFrame, *, datasets: Sequence[str] = BASE2NEW_DATASETS, expected_seeds: int = 3
) -> Figure | None:
    """Accuracy against the number of shots K (log-2 axis), per dataset and on Average.

    Means over seeds with the seed std as error bars; Average: the mean over datasets, its std over
    the seeds that have every dataset.
    """
    stats = few_shot_stats(runs, datasets=datasets)
    if stats.empty:
        return None
    panels = [AVERAGE] + [d for d in order_datasets(stats["dataset"]) if d != AVERAGE]
    panels = [p for p in panels if (stats["dataset"] == p).any()]
    methods = order_methods(stats["method"].unique())
    shots = sorted(stats["shots"].unique())
    notes = SeedNotes.of(stats["n_seeds"], expected_seeds)
    with figure_style():
        figure, axes = _panel_figure(len(panels))
        for ax, dataset in zip(axes, panels, strict=True):
            rows = stats[stats["dataset"] == dataset]
            for method in methods:
                series = rows[rows["method"] == method].sort_values("shots")
                if series.empty:
                    continue
                _errorbar(
                    ax,
                    series["shots"],
                    series["acc"],
                    yerr=[_std(s) for s in series["acc_std"]],
                    method=method,
                    linestyle="-",
                    zorder=3,
                )
                for _, row in series.iterrows():
                    _n_note(
                        ax, row["shots"], row["acc"], int(row["n_seeds"]), notes, method_style(method).color
                    )
            ax.set_xscale("log", base=2)
            ax.set_xticks(shots, [str(k) for k in shots])
            ax.minorticks_off()
            ax.set_title(dataset_label(dataset))
            ax.set_xlabel("Shots per class (K)")
            ax.set_ylabel("Accuracy (%)")
        _legend(figure, methods, note=notes.legend())
    return figure


# ----------------------------------------------------------------------------------------- transfer


def figure_transfer(
    runs: pd.DataFrame, *, protocol: str, targets: Sequence[str], expected_seeds: int = 3
) -> Figure | None:
    """Per-target accuracy bars of models trained on one source (domain generalisation, cross-dataset).

    One group of bars per column: the source (shaded, left of a dashed divider), each target, then
    the target mean; one bar per method with the seed std as error bars.
    """
    stats = transfer_stats(runs, protocol=protocol, targets=targets)
    if stats.empty:
        return None
    sources = list(dict.fromkeys(zip(stats["source"], stats["shots"], strict=True)))
    methods = order_methods(stats["method"].unique())
    notes = SeedNotes.of(stats["n_seeds"], expected_seeds)
    with figure_style():
        columns = list(dict.fromkeys(stats["column"]))
        width_in = COLUMN_WIDTH_IN if len(columns) * len(methods) <= 16 else TEXT_WIDTH_IN
        figure = _figure(width_in, 2.3 * len(sources) + 0.3)
        axes = [figure.add_subplot(len(sources), 1, i + 1) for i in range(len(sources))]
        for ax, (source, shots) in zip(axes, sources, strict=True):
            block = stats[(stats["source"] == source) & (stats["shots"] == shots)]
            columns = list(dict.fromkeys(block["column"]))
            x = np.arange(len(columns))
            bar_width = 0.8 / len(methods)
            values: list[float] = []
            for i, method in enumerate(methods):
                style = method_style(method)
                rows = block[block["method"] == method].set_index("column").reindex(columns)
                positions = x + (i - (len(methods) - 1) / 2) * bar_width
                heights = rows["mean"].to_numpy(dtype=float)
                errors = np.nan_to_num(rows["std"].to_numpy(dtype=float))
                bars = ax.bar(
                    positions,
                    heights,
                    bar_width * 0.92,
                    yerr=errors,
                    color=style.color,
                    error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.15"},
                )
                _tag(bars.patches, f"bar:{method}")
                if bars.errorbar is not None:
                    _tag(bars.errorbar.lines[2], f"error:{method}")
                for patch, column in zip(bars.patches, columns, strict=True):
                    if column == "source":
                        patch.set_hatch("///")
                        patch.set_edgecolor("white")
                values += [h for h in heights if not math.isnan(h)]
                for position, height, error, n in zip(
                    positions, heights, errors, rows["n_seeds"].fillna(0), strict=True
                ):
                    if not math.isnan(height):
                        _n_note(
                            ax,
                            position,
                            height + error,
                            int(n),
                            notes,
                            "black",
                            xytext=(0, 2),
                            ha="center",
                            va="bottom",
                            rotation=90,
                        )
            if "source" in columns:
                ax.axvline(
                    columns.index("source") + 0.5,
                    color="0.5",
                    linestyle="--",
                    linewidth=0.8,
                    gid="source-divider",
                )
            labels = [
                f"{dataset_label(source)}\n(source)"
                if c == "source"
                else "Target\nmean"
                if c == TARGET_MEAN
                else dataset_label(c)
                for c in columns
            ]
            ax.set_xticks(
                x,
                labels,
                rotation=30 if len(columns) > 5 else 0,
                ha="right" if len(columns) > 5 else "center",
            )
            if values:
                ax.set_ylim(bottom=max(0.0, 5 * math.floor((min(values) - 8) / 5)))
            ax.set_ylabel("Accuracy (%)")
            ax.set_title(f"Trained on {dataset_label(source)}, {shots} shots")
            ax.grid(axis="x", visible=False)
        _legend(figure, methods, kind="bar", note=notes.legend())
    return figure


# ---------------------------------------------------------------------------------- training curves


def _varies(values: np.ndarray) -> bool:
    """Whether a curve changes (beyond float noise)."""
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return False
    return float(np.ptp(values)) > 1e-9 * max(1.0, float(np.abs(values).max()))


def curve_series(history: pd.DataFrame, runs: pd.DataFrame, metric: str) -> dict[str, pd.DataFrame]:
    """Per method, the mean curve of one metric and its seed spread — only for methods whose runs vary.

    A method's curve counts when at least one of its runs' values of the metric changes over the
    epochs; a metric a method does not have (logged as a constant, e.g. 0) is left out. Each seed's
    curve is first averaged over the method's datasets; the mean and sample std over seeds follow.

    Returns:
        Method → frame ``step, mean, std, n`` (empty dict: nothing varies).
    """
    identity = runs[["run_id", "method", "dataset", "seed"]].drop_duplicates("run_id")
    rows = history[history["metric"] == metric].merge(identity, on="run_id", how="inner")
    series: dict[str, pd.DataFrame] = {}
    for method in order_methods(rows["method"].unique()):
        mine = rows[rows["method"] == method]
        if not any(
            _varies(g.sort_values("step")["value"].to_numpy(dtype=float)) for _, g in mine.groupby("run_id")
        ):
            continue
        per_seed = mine.groupby(["seed", "step"])["value"].mean().reset_index()  # mean over datasets
        grouped = per_seed.groupby("step")["value"]
        series[method] = grouped.agg(mean="mean", std="std", n="count").reset_index()
    return series


def _curve_figure(
    history: pd.DataFrame,
    runs: pd.DataFrame,
    metrics: Sequence[str],
    *,
    expected_seeds: int,
    columns: int = 4,
) -> Figure | None:
    panels = {m: s for m in metrics if (s := curve_series(history, runs, m))}
    if not panels:
        return None
    methods = order_methods({method for series in panels.values() for method in series})
    notes = SeedNotes.of(
        [int(c["n"].min()) for series in panels.values() for c in series.values()], expected_seeds
    )
    with figure_style():
        figure, axes = _panel_figure(len(panels), columns=columns, panel_height=1.45)
        for ax, (metric, series) in zip(axes, panels.items(), strict=True):
            for method, curve in series.items():
                style = method_style(method)
                (line,) = ax.plot(
                    curve["step"],
                    curve["mean"],
                    color=style.color,
                    marker=style.marker,
                    markersize=3,
                    label=style.label,
                )
                line.set_gid(f"mean:{method}")
                std = curve["std"].fillna(0).to_numpy(dtype=float)
                if (curve["n"] > 1).any():
                    band = ax.fill_between(
                        curve["step"],
                        curve["mean"] - std,
                        curve["mean"] + std,
                        color=style.color,
                        alpha=0.2,
                        linewidth=0,
                    )
                    band.set_gid(f"band:{method}")
                last = curve.iloc[-1]
                _n_note(ax, last["step"], last["mean"], int(curve["n"].min()), notes, style.color)
            ax.set_title(METRIC_LABELS.get(metric, metric))
            ax.set_xlabel("Epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if metric in ("lr", "gate_lr"):
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        _legend(figure, methods, note=notes.legend())
    return figure


def figure_training_curves(
    history: pd.DataFrame, runs: pd.DataFrame, *, expected_seeds: int = 3
) -> Figure | None:
    """The per-epoch metrics that vary (losses, training accuracy, learning rate), one panel each.

    Lines: the mean over seeds of each seed's curve averaged over datasets; bands: the seed std.
    Gate statistics and gradient alignment have their own figure (:func:`figure_gate_alignment`).

    Args:
        history: Columns ``run_id, metric, step, value`` (``ledger.runs.read_metric_history``).
        runs: The tidy runs table (each run's method, dataset and seed).
        expected_seeds: The sweep's seeds per cell.
    """
    special = {*GATE_METRICS, *ALIGNMENT_METRICS}
    logged = [m for m in dict.fromkeys(history["metric"]) if m not in special]
    metrics = [m for m in _CURVE_ORDER if m in logged] + sorted(m for m in logged if m not in _CURVE_ORDER)
    return _curve_figure(history, runs, metrics, expected_seeds=expected_seeds)


def figure_gate_alignment(
    history: pd.DataFrame, runs: pd.DataFrame, *, expected_seeds: int = 3
) -> Figure | None:
    """Gate statistics and the CE-vs-regulariser gradient cosine over training, per tower.

    Only the methods whose values vary are drawn (the gate is a constant, and the cosine is not
    measured, outside the learned-gate ProMetaR scheme).
    """
    return _curve_figure(
        history, runs, [*GATE_METRICS, *ALIGNMENT_METRICS], expected_seeds=expected_seeds, columns=3
    )


# -------------------------------------------------------------------------------------------- search


def figure_search(
    runs: pd.DataFrame, params: Sequence[str], *, objective: str = search.OBJECTIVE, mode: str = "max"
) -> Figure | None:
    """The validation objective of every sampled configuration against each searched parameter.

    One panel per parameter (rows: one per searched dataset and shots); one point per run in its
    method's style, the best run ringed. Each point is one run, so no error bars.

    Args:
        runs: The tidy runs table carrying the ``params`` columns (``ledger.runs.attach_params``).
        params: The searched config keys.
        objective: The metric on the y axis (a ``val_*`` metric).
        mode: ``max`` or ``min``: which run is the best.
    """
    rows = runs[runs["metric"] == objective]
    if rows.empty or not params:
        return None
    groups = list(dict.fromkeys(zip(rows["dataset"], rows["shots"], strict=True)))
    methods = order_methods(rows["method"].unique())
    with figure_style():
        columns = min(len(params), 3)
        figure = _figure(
            min(TEXT_WIDTH_IN, max(COLUMN_WIDTH_IN, 2.2 * columns)),
            1.8 * len(groups) * math.ceil(len(params) / columns) + 0.35,
        )
        axes = _grid(figure, len(groups) * len(params), columns=columns)
        panels = [(g, p) for g in groups for p in params]
        for ax, ((dataset, shots), param) in zip(axes, panels, strict=True):
            group = rows[(rows["dataset"] == dataset) & (rows["shots"] == shots)]
            numeric = pd.to_numeric(group[param], errors="coerce")
            categorical = numeric.isna().any()
            if categorical:
                categories = sorted(group[param].astype(str).unique())
                positions = (
                    group[param].astype(str).map({c: i for i, c in enumerate(categories)}).astype(float)
                )
            else:
                positions = numeric
            for method in methods:
                mine = group["method"] == method
                if not mine.any():
                    continue
                style = method_style(method)
                points = ax.scatter(
                    positions[mine],
                    group.loc[mine, "value"],
                    s=14,
                    color=style.color,
                    marker=style.marker,
                    alpha=0.85,
                    linewidths=0,
                )
                points.set_gid(f"sample:{method}")
            best = group["value"].idxmax() if mode == "max" else group["value"].idxmin()
            ax.scatter(
                [positions[best]],
                [group.loc[best, "value"]],
                s=60,
                facecolors="none",
                edgecolors="black",
                linewidths=0.8,
                gid="best",
            )
            if categorical:
                ax.set_xticks(range(len(categories)), categories)
            elif (numeric > 0).all() and numeric.max() / numeric.min() > 20:
                ax.set_xscale("log")
            ax.set_xlabel(param)
            ax.set_ylabel(_objective_label(objective))
            if len(groups) > 1:
                ax.set_title(f"{dataset_label(dataset)}, {shots} shots")
        _legend(
            figure,
            methods,
            kind="marker",
            extra=[
                (
                    Line2D(
                        [],
                        [],
                        marker="o",
                        markerfacecolor="none",
                        markeredgecolor="black",
                        linestyle="",
                        markersize=7,
                    ),
                    "best",
                )
            ],
        )
    return figure


def _objective_label(objective: str) -> str:
    names = {
        "val_hm": "Validation HM (%)",
        "val_base": "Validation base acc. (%)",
        "val_new": "Validation new acc. (%)",
    }
    return names.get(objective, objective)


# -------------------------------------------------------------------------------------- everything


@dataclass(frozen=True)
class NamedFigure:
    """One figure of a sweep: file stem, the figure, and a caption saying what it shows.

    Attributes:
        name: File stem (``base_vs_new``, ``hm``, ``few_shot``, ...).
        figure: The matplotlib figure.
        caption: What is drawn, with what error bars.
    """

    name: str
    figure: Figure
    caption: str


_SPREAD = "Error bars: sample standard deviation over seeds; n=k marks a mean of fewer seeds than planned."


def build_figures(
    ledger: RunsTable, context: ResultsContext | None = None, *, history: pd.DataFrame | None = None
) -> list[NamedFigure]:
    """Every figure the runs support, by protocol, in the order a report shows them.

    Args:
        ledger: The runs.
        context: The sweep's facts (``results.context``): protocol, the Average rows' datasets,
            published numbers to mark, seeds per cell, search space and objective, transfer targets.
        history: Per-epoch metrics (``ledger.runs.read_metric_history``); None: no curve figures.
    """
    ctx = context or ResultsContext()
    protocol, published, expected_seeds = ctx.protocol, ctx.published, ctx.expected_seeds
    search_space, objective, targets = ctx.search_space, ctx.objective, ctx.targets
    runs = ledger.runs
    present = {found.name for found in map(protocols.lookup, set(runs["protocol"])) if found is not None}
    if protocol is None:
        wanted = present
    else:
        found = protocols.lookup(protocol)
        wanted = {found.name} if found is not None else set()
    grid = ctx.grid
    out: list[NamedFigure] = []

    def add(name: str, figure: Figure | None, caption: str) -> None:
        if figure is not None:
            out.append(NamedFigure(name, figure, caption))

    if base2new.PROTOCOL.name in wanted & present:
        add(
            "base_vs_new",
            figure_base_vs_new(runs, datasets=grid, published=published, expected_seeds=expected_seeds),
            "Base against new accuracy per dataset (Average first): seed means, dashed curves of equal "
            "harmonic mean (HM)"
            + (", hollow markers the published numbers" if published is not None else "")
            + ". "
            + _SPREAD,
        )
        add(
            "hm",
            figure_hm(runs, datasets=grid, published=published, expected_seeds=expected_seeds),
            "Harmonic mean of base and new accuracy per dataset (HM of the seed means)"
            + ("; black ticks: published HM" if published is not None else "")
            + ". Error bars: sample standard deviation over seeds of each seed's HM.",
        )
    if few_shot.PROTOCOL.name in wanted & present:
        add(
            few_shot.KIND,
            figure_few_shot(runs, datasets=grid, expected_seeds=expected_seeds),
            "Few-shot accuracy against shots per class K (log-2 axis), per dataset and on Average. "
            + _SPREAD,
        )
    for entry in transfer.PROTOCOLS:
        if entry.name in wanted & present:
            title = transfer.TITLES[entry.table].split(" (")[0]
            add(
                entry.table,
                figure_transfer(
                    runs,
                    protocol=entry.name,
                    targets=tuple(targets) or entry.default_targets,
                    expected_seeds=expected_seeds,
                ),
                f"{title}: accuracy on the source (hatched) and on each target, and the target mean. "
                + _SPREAD,
            )
    if history is not None and not history.empty:
        add(
            "training_curves",
            figure_training_curves(history, runs, expected_seeds=expected_seeds),
            "Per-epoch training metrics that vary, mean over seeds of each seed's curve averaged over "
            "datasets; bands: sample standard deviation over seeds.",
        )
        add(
            "gate_and_alignment",
            figure_gate_alignment(history, runs, expected_seeds=expected_seeds),
            "The gate's effective multiplier of the regulariser gradient (mean and spread over prompt "
            "entries) and the cosine between the cross-entropy and the regulariser gradients, per tower, "
            "for the methods where they vary; bands: sample standard deviation over seeds.",
        )
    has_objective = (runs["metric"] == objective).any()
    if has_objective and (search_space or search.PROTOCOL.name in present):
        space = list(search_space) or varying_params(ledger.params)
        if space:
            add(
                search.KIND,
                figure_search(attach_params(runs, ledger.params, space), space, objective=objective),
                f"Sampled hyper-parameters against {objective} (validation on base classes only), "
                "one point per run; ringed: the best.",
            )
    return out


def save_figure(figure: Figure, stem: Path | str) -> list[Path]:
    """Write ``<stem>.png`` (300 dpi), ``<stem>.pdf`` and ``<stem>.svg``; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "png": {"Software": None},
        "pdf": {"CreationDate": None, "ModDate": None},
        "svg": {"Date": None},
    }  # reproducible files
    written = []
    with figure_style():
        for fmt in FORMATS:
            path = stem.with_suffix(f".{fmt}")
            figure.savefig(path, format=fmt, dpi=DPI, metadata=metadata[fmt])
            written.append(path)
    return written


__all__ = [
    "ALIGNMENT_METRICS",
    "COLUMN_WIDTH_IN",
    "DPI",
    "FORMATS",
    "GATE_METRICS",
    "MIN_FONT_PT",
    "MethodStyle",
    "NamedFigure",
    "TEXT_WIDTH_IN",
    "base2new_stats",
    "build_figures",
    "curve_series",
    "few_shot_stats",
    "figure_base_vs_new",
    "figure_few_shot",
    "figure_gate_alignment",
    "figure_hm",
    "figure_search",
    "figure_training_curves",
    "figure_transfer",
    "method_style",
    "save_figure",
    "transfer_stats",
]
