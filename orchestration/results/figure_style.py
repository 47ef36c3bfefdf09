"""Figure style and saving, shared by every result kind's figures, and the seed spread they draw.

Each result kind draws its own figures (``base2new_figures``, ``few_shot``, ``transfer``, ``search``,
``curves``): one function per figure, returning a :class:`matplotlib.figure.Figure` — or ``None``
when the runs hold nothing it could draw. This module holds what they share: the house style, the
figure and panel helpers, the per-seed spread helpers, :class:`NamedFigure`, and :func:`save_figure`
(PNG at 300 dpi, PDF and SVG side by side), the only writer of a file.

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

import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from orchestration.results.labels import method_label
from orchestration.results.statistics import seed_stats
from prometar import metrics as names
from prometar.files import write_atomic
from prometar.metrics import ALIGNMENT_METRICS, GATE_METRICS

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

CURVE_ORDER: tuple[str, ...] = (
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


def sized_figure(width: float, height: float) -> Figure:
    """A headless figure (Agg canvas) of the printed size, laid out by matplotlib's constrained layout."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def panel_grid(figure: Figure, n_panels: int, *, columns: int = 4) -> list:
    columns = min(columns, max(1, n_panels))
    rows = math.ceil(n_panels / columns)
    return [figure.add_subplot(rows, columns, i + 1) for i in range(n_panels)]


def panel_figure(
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
    figure = sized_figure(width, panel_height * rows + extra_height)
    return figure, panel_grid(figure, n_panels, columns=columns)


def add_legend(
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


def tag_artists(artists: object, gid: str) -> None:
    """Set ``gid`` on an artist or on every artist of a container."""
    if artists is None:
        return
    if hasattr(artists, "set_gid"):
        artists.set_gid(gid)  # type: ignore[union-attr]
        return
    for artist in artists:  # type: ignore[union-attr]
        tag_artists(artist, gid)


def draw_errorbar(ax, x, y, *, xerr=None, yerr=None, method: str, gid: str = "", **kwargs):
    """``ax.errorbar`` in the method's style, every part tagged ``mean:<method>``."""
    style = method_style(method)
    container = ax.errorbar(
        x, y, xerr=xerr, yerr=yerr, color=style.color, marker=style.marker, label=style.label, **kwargs
    )
    tag_artists(container.lines[0], gid or f"mean:{method}")
    tag_artists(container.lines[1], gid or f"mean:{method}")
    tag_artists(container.lines[2], gid or f"error:{method}")
    return container


def std_value(value: object) -> float:
    """A std for drawing: 0 where undefined (one seed)."""
    number = float(value) if value is not None and not pd.isna(value) else math.nan  # type: ignore[arg-type]
    return 0.0 if math.isnan(number) else number


def spread_value(value: object) -> list[float] | None:
    """Error-bar lengths of one point: None (no bar) where the std is undefined (one seed)."""
    return None if value is None or pd.isna(value) else [float(value)]  # type: ignore[arg-type]


def n_note(ax, x: float, y: float, n: int, notes: SeedNotes, color: str, **kwargs) -> None:
    """``n=k`` beside a mean of an unusual number of seeds, fewer than planned."""
    if notes.beside(n):
        options = {"xytext": (3, 3), "textcoords": "offset points", **kwargs}
        ax.annotate(f"n={n}", (x, y), fontsize=MIN_FONT_PT, color=color, gid="n-note", **options)


def bar_n_notes(ax, positions, heights, errors, counts, notes: SeedNotes) -> None:
    """:func:`n_note` above each drawn bar (and its error bar) of an unusual seed count."""
    for position, height, error, n in zip(positions, heights, errors, counts, strict=True):
        if not math.isnan(height):
            n_note(
                ax, position, height + error, int(n), notes, "black",
                xytext=(0, 2), ha="center", va="bottom", rotation=90,
            )  # fmt: skip


# ------------------------------------------------------------------------------- seed statistics


def per_seed_table(
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


def seed_averages(
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


def std_and_count(frame: pd.DataFrame, keys: Sequence[str], metric: str) -> pd.DataFrame:
    """Sample std (ddof=1) and count over seeds of one metric per ``keys`` (``statistics.seed_stats``)."""
    if frame.empty:
        return pd.DataFrame(columns=[*keys, f"{metric}_std", "n"])
    return seed_stats(frame, keys, metric).drop(columns="mean").rename(columns={"std": f"{metric}_std"})


def fill_stats(
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


def axes_width(figure: Figure) -> float:
    """Approximate width in inches of a single full-width axes."""
    return figure.get_figwidth() * 0.85


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


SPREAD_CAPTION = (
    "Error bars: sample standard deviation over seeds; n=k marks a mean of fewer seeds than planned."
)


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
            write_atomic(  # never half-written (a full disk): DiskFullError names the file
                path,
                lambda handle, fmt=fmt: figure.savefig(handle, format=fmt, dpi=DPI, metadata=metadata[fmt]),
                binary=True,
            )
            written.append(path)
    return written
