"""The protocol registry: one entry per protocol decides its splits, sets, metrics, targets and table."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from prometar import protocols
from prometar.data.readers import DatasetSplits, Item

ROOT = Path(__file__).resolve().parents[2]


def splits_of(n_classes: int, per_class: int = 2) -> DatasetSplits:
    def items(split: str) -> list[Item]:
        return [
            Item(f"/{split}/{c}_{i}.jpg", c, f"class{c}") for c in range(n_classes) for i in range(per_class)
        ]

    return DatasetSplits(items("train"), items("val"), items("test"), [f"class{c}" for c in range(n_classes)])


def test_run_and_sweep_names() -> None:
    assert protocols.list_protocols() == [
        "base2new",
        "domain_generalization",
        "cross_dataset",
        "all_classes",
        "search",
        "transfer_source",
    ]
    assert protocols.list_sweep_protocols() == [
        "base2new",
        "domain_generalization",
        "cross_dataset",
        "few_shot",
    ]
    assert protocols.sweep_protocol("few_shot").name == "all_classes"
    assert protocols.search_protocol().tag == "search" and protocols.search_protocol().sweep_name is None
    assert (
        protocols.lookup("few_shot")
        is protocols.lookup("all_classes")
        is protocols.get_protocol("all_classes")
    )
    assert protocols.lookup("nope") is None
    with pytest.raises(KeyError, match="valid: base2new"):
        protocols.get_protocol("few")
    with pytest.raises(KeyError, match="few_shot"):
        protocols.sweep_protocol("zero_shot")


@pytest.mark.parametrize(
    "name, trained, metrics",
    [
        ("base2new", 4, ["base_acc", "new_acc"]),  # 7 classes: base = the first 4
        ("all_classes", 7, ["acc"]),
        ("search", 2, ["val_base", "val_new"]),  # pseudo-base = the first 2 of the 4 base classes
        ("transfer_source", 7, ["acc/eurosat"]),  # the source's own test set: the source column
    ],
)
def test_plans_cut_the_training_split_and_name_the_sets(name: str, trained: int, metrics: list[str]) -> None:
    protocol = protocols.get_protocol(name)
    train, sets = protocol.plan(splits_of(7), "eurosat", (), Path("/nowhere"))
    assert train.num_classes == trained
    assert [s.metric for s in sets] == metrics == list(protocol.metric_names(["eurosat"])[: len(metrics)])
    assert all(s.template == "a centered satellite photo of {}." for s in sets)
    split = "val" if name == "search" else "test"  # the search never sees test items
    assert all(item.path.startswith(f"/{split}/") for s in sets for item in s.items)
    assert all(item.path.startswith("/train/") for item in train.train)


def test_final_metrics_combine_the_sets() -> None:
    b2n = protocols.get_protocol("base2new").final_metrics({"base_acc": 80.0, "new_acc": 60.0})
    assert b2n == {"base_acc": 80.0, "new_acc": 60.0, "hm": pytest.approx(2 * 80 * 60 / 140)}
    search = protocols.search_protocol().final_metrics({"val_base": 50.0, "val_new": 0.0})
    assert search["val_hm"] == 0.0
    dg = protocols.get_protocol("domain_generalization").final_metrics(
        {"acc/imagenet_v2": 60.0, "acc/imagenet_a": 50.0}
    )
    assert dg["acc/mean"] == 55.0
    assert protocols.get_protocol("all_classes").final_metrics({"acc": 70.0}) == {"acc": 70.0}


def test_harmonic_mean() -> None:
    assert protocols.harmonic_mean(80.0, 60.0) == pytest.approx(68.5714285714)
    assert protocols.harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(protocols.harmonic_mean(math.nan, 60.0)) and math.isnan(
        protocols.harmonic_mean(None, 1.0)
    )


def test_targets_and_metric_names() -> None:
    cross = protocols.get_protocol("cross_dataset")
    assert cross.takes_targets and not protocols.get_protocol("base2new").takes_targets
    assert cross.metric_names(["dtd", "eurosat"]) == ("acc/dtd", "acc/eurosat", "acc/mean")
    for name in ("base_acc", "new_acc", "hm", "acc", "acc/dtd", "acc/mean", "val_base", "val_hm"):
        assert protocols.is_final_metric(name), name
    for name in ("loss", "gate_mean/text", "train_acc", "lr", "acc/unknown_dataset", "val_loss"):
        assert not protocols.is_final_metric(name), name


def test_every_protocol_has_a_table_kind() -> None:
    kinds = [protocols.get_protocol(name).table for name in protocols.list_protocols()]
    assert len(set(kinds)) == len(kinds)
    assert all(protocols.for_table(kind).table == kind for kind in kinds)


def test_protocol_names_are_written_only_in_the_registry() -> None:
    """Code outside the registry asks it; it never spells a protocol's name.

    Allowed: the table kinds of the results layer (named like the protocols whose runs they show)
    and the official preset's protocol in the run config.
    """
    names = {p.name for p in map(protocols.get_protocol, protocols.list_protocols())}
    names |= set(protocols.list_sweep_protocols())
    names -= {"search"}  # also the sweep file's ``search:`` section
    pattern = re.compile("[\"']({})[\"']".format("|".join(sorted(names))))
    offenders = []
    for package in ("prometar", "orchestration"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative == "prometar/protocols.py" or any(toy in relative for toy in TOY_WORLD):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and not _allowed(relative, line):
                    offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []


TOY_WORLD = ("toyworld", "toyclip", "miniature", "prometar/toy/")  # its own datasets, not protocol names


def _allowed(path: str, line: str) -> bool:
    if path.startswith("orchestration/results/"):  # a table kind's own name
        return line.startswith(("KIND = ", "KINDS: "))
    return path == "prometar/config.py" and '"protocol":' in line


def test_a_source_config_is_the_same_for_every_transfer_protocol() -> None:
    from prometar.config import resolve_config

    configs = [
        resolve_config("official", {"data.dataset": "imagenet", "protocol": name, "eval.targets": targets})
        for name, targets in (
            ("domain_generalization", ["imagenet_a"]),
            ("cross_dataset", ["dtd", "eurosat"]),
        )
    ]
    sources = [protocols.source_config(c.to_dict()) for c in configs]
    assert sources[0] == sources[1]
    assert sources[0]["protocol"] == protocols.SOURCE and sources[0]["eval"]["targets"] == []
    assert configs[0].to_dict()["protocol"] == "domain_generalization"  # the input is not changed
