"""The evaluation protocols: THE registry of what each protocol trains on, evaluates and reports.

Every protocol-specific decision — which classes a run trains on, which sets it evaluates, the
names of its final metrics and how they combine, the default evaluation targets, the name sweep
files use, the table its runs go into — is read from the :class:`Protocol` entries below. Adding a
protocol is adding one entry here (and its tests).

========================  ==============  ==========================  ========================
protocol (run config)     sweep files     trains on / evaluates       final metrics
========================  ==============  ==========================  ========================
``base2new``              ``base2new``    base / base and new test    base_acc, new_acc, hm
``domain_generalization`` same            all / each target's test    acc/<target>, acc/mean
``cross_dataset``         same            all / each target's test    acc/<target>, acc/mean
``all_classes``           ``few_shot``    all / all classes' test     acc
``search``                (``search:``)   pseudo-base / both val      val_base, val_new, val_hm
``transfer_source``       (planned)       all / the source's test     acc/<source>
========================  ==============  ==========================  ========================

A trial carries its protocol's :attr:`Protocol.tag` (the sweep-file name; ``search`` for searched
trials): it is hashed into trial keys and written as the ``protocol`` tag of MLflow runs.

One source model per transfer: a sweep of a protocol that evaluates on other datasets
(:attr:`Protocol.takes_targets`) plans the source model as a trial of its own, protocol
``transfer_source`` (:data:`SOURCE`), whose config leaves out the targets and the transfer
protocol (:func:`source_config`); the sweep's trials then evaluate that model's prompts on their
targets. Domain generalisation and cross-dataset transfer of one (method, seed, recipe) share it.

Imports no torch: the driver validates and plans sweeps with this registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometar.data import catalog
from prometar.data.readers import DatasetSplits, Item, read_dataset
from prometar.data.splits import base_new_split, search_split
from prometar.errors import DataError

__all__ = [
    "DEFAULT",
    "SOURCE",
    "SOURCE_METRIC",
    "EvaluationSet",
    "Protocol",
    "final_metric_names",
    "for_table",
    "get_protocol",
    "harmonic_mean",
    "is_final_metric",
    "list_protocols",
    "list_sweep_protocols",
    "lookup",
    "search_protocol",
    "source_config",
    "sweep_protocol",
]


@dataclass(frozen=True)
class EvaluationSet:
    """One set a run evaluates with its own classifier.

    Attributes:
        metric: The final metric its accuracy is reported under (``base_acc``, ``acc/dtd``).
        items: The images.
        classnames: The classes, in label order.
        template: The single zero-shot template of the set's dataset.
    """

    metric: str
    items: list[Item]
    classnames: list[str]
    template: str | None


Planner = Callable[[DatasetSplits, str, Sequence[str], Path], tuple[DatasetSplits, list[EvaluationSet]]]
"""(few-shot sampled splits, dataset key, evaluation targets, data root) → (training split, sets)."""


def harmonic_mean(base: float | None, new: float | None) -> float:
    """HM = 2BN/(B+N) (docs/algorithm.md §6); NaN when either is missing, 0 when both are 0."""
    if base is None or new is None or math.isnan(base) or math.isnan(new):
        return math.nan
    if base + new == 0:
        return 0.0
    return 2.0 * base * new / (base + new)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol.

    Attributes:
        name: The run config's ``protocol``.
        sweep_name: What a sweep file's ``protocol:`` calls it; ``None`` when no sweep file names
            it (``search`` is chosen by a sweep's ``search:`` section).
        description: One line for help texts and docs.
        trains_on: The classes training sees (``base``, ``all``, ``pseudo-base``).
        set_metrics: The metric of each evaluation set, in order; ``acc/{}`` is one per target.
        combined: The metric combining the sets' accuracies, or ``None``.
        combine: How ``combined`` is computed from the sets' accuracies (in ``set_metrics`` order).
        default_targets: The evaluation targets of an empty ``eval.targets``; empty for protocols
            without targets.
        table: The table kind its runs go into (``orchestration.results``).
        evaluates_every_epoch: Whether the run evaluates its sets after every epoch too (so a
            search scheduler can stop a weak trial early).
        plan: Its training split and evaluation sets, from the few-shot sampled dataset.
        sources: The datasets it may train on; empty = any trainable dataset. Domain
            generalisation trains on ImageNet only: its targets share ImageNet's label space.
    """

    name: str
    sweep_name: str | None
    description: str
    trains_on: str
    set_metrics: tuple[str, ...]
    combined: str | None
    combine: Callable[[Sequence[float]], float] | None
    default_targets: tuple[str, ...]
    table: str
    evaluates_every_epoch: bool
    plan: Planner
    sources: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        """The protocol a trial carries (hashed into its key, its runs' ``protocol`` tag)."""
        return self.sweep_name or self.name

    @property
    def recorded_names(self) -> tuple[str, ...]:
        """The names runs of this protocol carry: the tag (MLflow), or the run name (a runs CSV)."""
        return tuple(dict.fromkeys((self.tag, self.name)))

    @property
    def takes_targets(self) -> bool:
        """Whether the protocol evaluates on other datasets (``eval.targets``)."""
        return bool(self.default_targets)

    def metric_names(self, targets: Sequence[str] = ()) -> tuple[str, ...]:
        """The final metric names a run reports, given its evaluation targets."""
        names = [m.format(t) for m in self.set_metrics for t in (targets if "{}" in m else [None])]
        return (*names, self.combined) if self.combined else tuple(names)

    def final_metrics(self, accuracies: Mapping[str, float]) -> dict[str, float]:
        """The sets' accuracies (metric name → %) plus the combined metric."""
        metrics = dict(accuracies)
        if self.combined is not None and self.combine is not None:
            metrics[self.combined] = self.combine(list(accuracies.values()))
        return metrics


def _plan_base2new(
    sampled: DatasetSplits, key: str, targets: Sequence[str], data_root: Path
) -> tuple[DatasetSplits, list[EvaluationSet]]:
    template = catalog.get_dataset(key).template
    cut = base_new_split(sampled)
    return cut.base, [
        EvaluationSet("base_acc", cut.base.test, cut.base.classnames, template),
        EvaluationSet("new_acc", cut.new.test, cut.new.classnames, template),
    ]


def _plan_all_classes(
    sampled: DatasetSplits, key: str, targets: Sequence[str], data_root: Path
) -> tuple[DatasetSplits, list[EvaluationSet]]:
    return sampled, [
        EvaluationSet("acc", sampled.test, sampled.classnames, catalog.get_dataset(key).template)
    ]


def _plan_search(
    sampled: DatasetSplits, key: str, targets: Sequence[str], data_root: Path
) -> tuple[DatasetSplits, list[EvaluationSet]]:
    template = catalog.get_dataset(key).template
    cut = search_split(sampled)
    return cut.base, [
        EvaluationSet("val_base", cut.base.val, cut.base.classnames, template),
        EvaluationSet("val_new", cut.new.val, cut.new.classnames, template),
    ]


def _plan_source(
    sampled: DatasetSplits, key: str, targets: Sequence[str], data_root: Path
) -> tuple[DatasetSplits, list[EvaluationSet]]:
    return sampled, [
        EvaluationSet(
            SOURCE_METRIC.format(key), sampled.test, sampled.classnames, catalog.get_dataset(key).template
        )
    ]


def _plan_targets(
    sampled: DatasetSplits, key: str, targets: Sequence[str], data_root: Path
) -> tuple[DatasetSplits, list[EvaluationSet]]:
    sets = []
    for target in targets:
        target_splits = read_dataset(target, data_root)
        if not target_splits.test:
            raise DataError(f"{target}: no test split to evaluate")
        sets.append(
            EvaluationSet(
                f"acc/{target}",
                target_splits.test,
                target_splits.classnames,
                catalog.get_dataset(target).template,
            )
        )
    return sampled, sets


_PROTOCOLS: dict[str, Protocol] = {
    protocol.name: protocol
    for protocol in (
        Protocol(
            "base2new",
            "base2new",
            "train on the base half of the classes, test base and new apart",
            "base",
            ("base_acc", "new_acc"),
            "hm",
            lambda accs: harmonic_mean(*accs),
            (),
            "base2new",
            False,
            _plan_base2new,
        ),
        Protocol(
            "domain_generalization",
            "domain_generalization",
            "train on the source (ImageNet), test on its four shifted variants",
            "all",
            ("acc/{}",),
            "acc/mean",
            _mean,
            ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"),
            "domain_generalization",
            False,
            _plan_targets,
            sources=("imagenet",),
        ),
        Protocol(
            "cross_dataset",
            "cross_dataset",
            "train on the source, test on the 10 other datasets",
            "all",
            ("acc/{}",),
            "acc/mean",
            _mean,
            tuple(k for k in catalog.BASE_TO_NEW_DATASETS if k != "imagenet"),
            "cross_dataset",
            False,
            _plan_targets,
        ),
        Protocol(
            "all_classes",
            "few_shot",
            "train and test on all classes (few-shot classification)",
            "all",
            ("acc",),
            None,
            None,
            (),
            "few_shot",
            False,
            _plan_all_classes,
        ),
        Protocol(
            "search",
            None,
            "pseudo-base / pseudo-new inside the base classes, validation items only",
            "pseudo-base",
            ("val_base", "val_new"),
            "val_hm",
            lambda accs: harmonic_mean(*accs),
            (),
            "search",
            True,
            _plan_search,
        ),
        Protocol(
            "transfer_source",
            None,
            "the source model of the transfer protocols: train on all classes, test the source",
            "all",
            ("acc/{}",),
            None,
            None,
            (),
            "transfer_source",
            False,
            _plan_source,
        ),
    )
}

DEFAULT = "base2new"
"""The protocol of a run config or sweep file that names none."""


SOURCE = "transfer_source"
"""The protocol of a transfer's source model (planned by the transfer sweeps, never named by one)."""
SOURCE_METRIC = "acc/{}"
"""The source model's test accuracy (``acc/imagenet``): the transfer tables' source column."""


def source_config(config: Mapping[str, object]) -> dict[str, object]:
    """The run-config dict of the source model a transfer trial evaluates (nested, as ``to_dict``).

    The transfer protocol becomes :data:`SOURCE` and the evaluation targets are emptied: every
    transfer trial of one (method, seed, recipe, source) gets the same source config, hence one
    trial key, whichever protocol planned it.
    """
    out = {key: (dict(value) if isinstance(value, Mapping) else value) for key, value in config.items()}
    out["protocol"] = SOURCE
    out["eval"] = {**dict(out.get("eval") or {}), "targets": []}  # type: ignore[arg-type]
    return out


def list_protocols() -> list[str]:
    """The run-config protocol names."""
    return list(_PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    """A protocol by its run-config name.

    Raises:
        KeyError: Unknown name; the message lists the valid ones.
    """
    try:
        return _PROTOCOLS[name]
    except KeyError:
        raise KeyError(f"unknown protocol {name!r}; valid: {', '.join(_PROTOCOLS)}") from None


def list_sweep_protocols() -> list[str]:
    """The protocol names a sweep file's ``protocol:`` takes."""
    return [p.sweep_name for p in _PROTOCOLS.values() if p.sweep_name]


def sweep_protocol(sweep_name: str) -> Protocol:
    """The protocol a sweep file's ``protocol:`` names.

    Raises:
        KeyError: Unknown name; the message lists the valid ones.
    """
    for protocol in _PROTOCOLS.values():
        if protocol.sweep_name == sweep_name:
            return protocol
    raise KeyError(f"unknown protocol {sweep_name!r}; valid: {', '.join(list_sweep_protocols())}")


def search_protocol() -> Protocol:
    """The protocol of searched trials (a sweep file's ``search:`` section)."""
    return _PROTOCOLS["search"]


def for_table(kind: str) -> Protocol:
    """The protocol whose runs go into the table kind ``kind``.

    Raises:
        KeyError: No protocol has this table kind.
    """
    for protocol in _PROTOCOLS.values():
        if protocol.table == kind:
            return protocol
    raise KeyError(f"no protocol has the table kind {kind!r}")


def lookup(name: str) -> Protocol | None:
    """The protocol a recorded run names, by its tag or its run-config name; ``None`` if unknown."""
    for protocol in _PROTOCOLS.values():
        if name in (protocol.name, protocol.tag):
            return protocol
    return None


def final_metric_names(protocols: Iterable[Protocol] | None = None) -> frozenset[str]:
    """Every final metric name the protocols can report (targets: every catalog dataset)."""
    datasets = catalog.list_datasets()
    chosen = _PROTOCOLS.values() if protocols is None else protocols
    return frozenset(name for protocol in chosen for name in protocol.metric_names(datasets))


def is_final_metric(name: str) -> bool:
    """Whether a metric is a final result of some protocol (else a training curve)."""
    return name in _FINAL_METRICS


_FINAL_METRICS = final_metric_names()
