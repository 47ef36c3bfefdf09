"""Labels and order of the tables' rows: dataset and method display names, the paper's order.

Dataset names are the catalog's (``prometar.data.catalog``); the Average row is :data:`AVERAGE`.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometar.data import catalog
from prometar.errors import DataError

AVERAGE = "average"
"""The dataset key of Average rows."""

METHOD_ORDER: tuple[str, ...] = (
    "clip",
    "zeroshot",
    "coop",
    "prometar_coop",
    "cocoop",
    "kgcoop",
    "maple",
    "vpt",
    "prometar_vpt",
    "ivlp",
    "ivlp_reg",
    "promptsrc",
    "prometar",
)
"""The paper's methods in its order, with this project's baselines (zeroshot, vpt, ivlp,
ivlp_reg) in place, and ProMetaR on CoOp and on VPT each after its base method."""
METHOD_LABELS: dict[str, str] = {
    "clip": "CLIP",
    "coop": "CoOp",
    "cocoop": "CoCoOp",
    "kgcoop": "KgCoOp",
    "maple": "MaPLe",
    "promptsrc": "PromptSRC",
    "prometar": "ProMetaR",
    "zeroshot": "Zero-shot CLIP",
    "vpt": "VPT",
    "ivlp": "IVLP",
    "ivlp_reg": "IVLP + reg.",
    "prometar_coop": "CoOp + ProMetaR",
    "prometar_vpt": "VPT + ProMetaR",
}


def dataset_label(key: str) -> str:
    """Display name of a dataset key (the catalog's; the key itself when unknown)."""
    if key == AVERAGE:
        return "Average"
    try:
        return catalog.get_dataset(key).display_name
    except DataError:
        return key


def method_label(key: str) -> str:
    """Display name of a method key (the key itself when unknown)."""
    return METHOD_LABELS.get(key, key)


def order_datasets(keys: Iterable[str]) -> list[str]:
    """Known datasets in the paper's order, then the others in first-seen order (no duplicates)."""
    keys = list(dict.fromkeys(keys))
    known = [k for k in catalog.list_datasets() if k in keys]
    return known + [k for k in keys if k not in known]


def order_methods(keys: Iterable[str]) -> list[str]:
    """Methods in the paper's order (baselines first, ProMetaR last), then the others sorted."""
    keys = set(keys)
    return [m for m in METHOD_ORDER if m in keys] + sorted(keys - set(METHOD_ORDER))
