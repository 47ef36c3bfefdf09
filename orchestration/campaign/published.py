"""The published values a campaign cites, read from the published-numbers resources with their source.

:data:`RESOURCES` names each resource a campaign may cite: how to read it and which of our final
metrics each of its value columns is. :func:`cited_values` returns the values a table cites, one
:class:`PublishedValue` per (method, dataset, metric), each with the source the resource gives
for its row (:data:`SOURCE_COLUMNS`: the first of these columns the resource has).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from orchestration.results import base2new
from orchestration.results.published import load_published

SOURCE_COLUMNS: tuple[str, ...] = ("source", "provenance")
"""The column naming where a published row comes from: ``source`` (a citation), else the shipped
base-to-new resource's ``provenance`` (how the number was obtained)."""


@dataclass(frozen=True)
class PublishedResource:
    """A published-numbers resource: its reader and its value columns → our final metrics."""

    load: Callable[[], pd.DataFrame]
    metrics: Mapping[str, str]


@dataclass(frozen=True, kw_only=True)
class PublishedValue:
    """One published number: where it sits (method, dataset, our metric), its value and source.

    ``relation``: ``within`` (our interval should hold it: a published number) or ``above`` (our
    interval should lie above it: a floor of the toy world's, such as chance).
    """

    method: str
    dataset: str
    metric: str
    value: float
    source: str
    relation: Literal["within", "above"] = "within"


RESOURCES: dict[str, PublishedResource] = {
    base2new.KIND: PublishedResource(load_published, {"base": "base_acc", "new": "new_acc", "hm": "hm"}),
}
"""Resource name → reader; a campaign's ``published.resource`` names one."""


def cited_values(resource_name: str, methods: Sequence[str]) -> list[PublishedValue]:
    """The published values of ``methods`` in a resource (every dataset and metric it has).

    A row without a source gives a value with an empty ``source`` (the campaign test refuses it).
    """
    resource = RESOURCES[resource_name]
    table = resource.load()
    column = next((c for c in SOURCE_COLUMNS if c in table.columns), None)
    values: list[PublishedValue] = []
    for row in table[table["method"].isin(list(methods))].to_dict("records"):
        source = str(row[column]).strip() if column and pd.notna(row[column]) else ""
        for published, metric in resource.metrics.items():
            if pd.notna(row[published]):
                values.append(
                    PublishedValue(
                        method=str(row["method"]),
                        dataset=str(row["dataset"]),
                        metric=metric,
                        value=float(row[published]),
                        source=source,
                    )
                )
    return values
