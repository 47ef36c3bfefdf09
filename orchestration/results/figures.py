"""The paper's figures: every figure a sweep's runs support, by result kind (``results.kinds``).

Each result kind draws its own figures in its module (``base2new_figures``, ``few_shot``,
``transfer``, ``search``, ``curves``) with the shared style of ``results.figure_style``; this module
dispatches through the registry (:func:`build_figures`) and re-exports the figure functions.
"""

from __future__ import annotations

import pandas as pd

from orchestration.ledger.runs import RunsTable
from orchestration.results import curves
from orchestration.results.base2new import base2new_stats
from orchestration.results.base2new_figures import figure_base_vs_new, figure_hm
from orchestration.results.context import ResultsContext
from orchestration.results.curves import curve_series, figure_gate_alignment, figure_training_curves
from orchestration.results.few_shot import few_shot_stats, figure_few_shot
from orchestration.results.figure_style import (
    COLUMN_WIDTH_IN,
    DPI,
    FORMATS,
    MIN_FONT_PT,
    TEXT_WIDTH_IN,
    MethodStyle,
    NamedFigure,
    figure_style,
    method_style,
    save_figure,
)
from orchestration.results.kinds import RESULT_KINDS
from orchestration.results.search import figure_search
from orchestration.results.tables import chosen_protocols
from orchestration.results.transfer import figure_transfer, transfer_stats
from prometar.metrics import ALIGNMENT_METRICS, GATE_METRICS


def build_figures(
    ledger: RunsTable, context: ResultsContext | None = None, *, history: pd.DataFrame | None = None
) -> list[NamedFigure]:
    """Every figure the runs support, by protocol (the registry's order), then the training curves.

    Args:
        ledger: The runs.
        context: The sweep's facts (``results.context``): protocol, the Average rows' datasets,
            published numbers to mark, seeds per cell, search space and objective, transfer targets.
        history: Per-epoch metrics (``ledger.runs.read_metric_history``); None: no curve figures.
    """
    ctx = context or ResultsContext()
    out: list[NamedFigure] = []
    for entry in chosen_protocols(set(ledger.runs["protocol"]), ctx):
        out.extend(RESULT_KINDS[entry.table].figures(ledger, entry, ctx))
    out.extend(curves.figures(history, ledger.runs, ctx))
    return out


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
    "figure_style",
    "figure_training_curves",
    "figure_transfer",
    "method_style",
    "save_figure",
    "transfer_stats",
]
