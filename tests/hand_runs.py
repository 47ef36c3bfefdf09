"""Hand-made runs shared by the table tests (unit tier: pure tables; pipeline tier: from MLflow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from orchestration.ledger.runs import RunsTable as Ledger
from orchestration.ledger.runs import tidy_from_wide
from orchestration.sweeps.planning import load_plan

# dtd: 3 seeds; eurosat: 2 seeds. Means and sample std (ddof=1) computed by hand below.
HAND_ROWS = [
    # method, dataset, seed, base, new
    ("prometar", "dtd", 1, 80.0, 60.0),
    ("prometar", "dtd", 2, 82.0, 63.0),
    ("prometar", "dtd", 3, 84.0, 66.0),
    ("prometar", "eurosat", 1, 90.0, 70.0),
    ("prometar", "eurosat", 2, 91.0, 74.0),
    ("coop", "dtd", 1, 85.0, 50.0),
    ("coop", "eurosat", 1, 89.0, 80.0),
]


def ledger_from(rows, protocol: str = "base2new", shots: int = 16) -> Ledger:
    wide = pd.DataFrame(rows, columns=["method", "dataset", "seed", "base_acc", "new_acc"])
    wide["shots"] = shots
    wide["protocol"] = protocol
    return tidy_from_wide(wide, source="hand")


def cell(summary: pd.DataFrame, method: str, dataset: str) -> pd.Series:
    rows = summary[(summary["method"] == method) & (summary["dataset"] == dataset)]
    assert len(rows) == 1
    return rows.iloc[0]


def transfer_rows(protocol: str, targets: dict[str, list[float]], source: list[float]) -> Ledger:
    records = []
    for seed, source_acc in enumerate(source, start=1):
        record = {
            "method": "prometar",
            "dataset": "imagenet",
            "seed": seed,
            "shots": 16,
            "protocol": protocol,
            "acc/imagenet": source_acc,
        }
        for target, values in targets.items():
            if seed <= len(values):
                record[f"acc/{target}"] = values[seed - 1]
        records.append(record)
    return tidy_from_wide(pd.DataFrame(records), source="hand")


# ------------------------------------------------------------------------------- ablation sweeps

# Two arms of a `variant` axis x 2 datasets x 2 seeds: (setting, dataset, seed, base, new).
# learned:  dtd base (80+84)/2=82, new (60+64)/2=62; eurosat base (90+92)/2=91, new (70+72)/2=71
#           -> Average base 86.5, new 66.5, HM 2*86.5*66.5/153.
# constant: dtd base 79, new 59; eurosat base 89, new 67 -> Average base 84, new 63, HM 72.
ABLATION_ROWS = [
    ("learned", "dtd", 1, 80.0, 60.0),
    ("learned", "dtd", 2, 84.0, 64.0),
    ("learned", "eurosat", 1, 90.0, 70.0),
    ("learned", "eurosat", 2, 92.0, 72.0),
    ("constant", "dtd", 1, 78.0, 58.0),
    ("constant", "dtd", 2, 80.0, 60.0),
    ("constant", "eurosat", 1, 88.0, 66.0),
    ("constant", "eurosat", 2, 90.0, 68.0),
]


def ablation_wide(rows=ABLATION_ROWS) -> pd.DataFrame:
    wide = pd.DataFrame(rows, columns=["meta.gate_mode", "dataset", "seed", "base_acc", "new_acc"])
    # optim.lr never changes; data.num_workers differs between the arms but never changes a result.
    workers = wide["meta.gate_mode"].map({"learned": 4, "constant": 8})
    return wide.assign(method="prometar", shots=16, **{"optim.lr": 0.0025, "data.num_workers": workers})


TOY_SWEEP = "grid:\n  method: [prometar]\n  dataset: [dtd, eurosat]\n  seed: [1, 2, 3]\n"
"""The sweep of the hand-made MLflow store: ProMetaR x (dtd, eurosat) x seeds 1-3 (experiment ``toy``)."""

SEARCH_SWEEP = (
    "grid:\n  method: [prometar]\n  dataset: [dtd]\n  seed: [1]\n"
    "search:\n  num_samples: 2\n  space:\n    regularizer.text_weight: {loguniform: [5, 200]}\n"
)


def planned_keys(sweep: Path, overrides: dict | None = None) -> dict[tuple[str, int], str]:
    """(dataset, seed) -> the trial key a launch of ``sweep`` (with ``--set overrides``) records."""
    return {(t.dataset, t.seed): t.key for t in load_plan(sweep, overrides=overrides).trials}
