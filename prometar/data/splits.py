"""Class splits of a dataset: the base/new cut, all classes, and the search split inside the base classes.

* Base-to-new (docs/algorithm.md §6): sort the labels present in the training split; the first
  ``ceil(n/2)`` are base, the rest new; each half is relabelled ``0..k-1`` keeping the order. Apply
  it after few-shot sampling (which draws from all classes).
* All classes (few-shot, and the source of the generalisation protocols): the splits unchanged.
* Search: the hyper-parameter search must never see new classes or test images. The base classes
  are cut again the same way into pseudo-base (first ``ceil(b/2)``) and pseudo-new; training uses
  pseudo-base training items, and both halves are evaluated on their validation items. Test
  lists are emptied.

Which protocol uses which split is the protocol registry's business (``prometar.protocols``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometar.data.readers import DatasetSplits, Item
from prometar.errors import DataError

Subsample = Literal["all", "base", "new"]


@dataclass(frozen=True)
class BaseNewSplits:
    """The two halves of a class cut, each relabelled ``0..k-1``.

    Attributes:
        base: Splits restricted to the base classes.
        new: Splits restricted to the new classes.
        base_labels: Original labels of the base classes, in their new label order.
        new_labels: Original labels of the new classes, in their new label order.
    """

    base: DatasetSplits
    new: DatasetSplits
    base_labels: tuple[int, ...]
    new_labels: tuple[int, ...]


def cut_labels(labels: Sequence[int]) -> tuple[list[int], list[int]]:
    """Split label ids into (base, new): sorted, the first ``ceil(n/2)`` are base.

    Args:
        labels: Label ids (duplicates allowed).

    Returns:
        Sorted base labels and sorted new labels.
    """
    ordered = sorted(set(labels))
    m = math.ceil(len(ordered) / 2)
    return ordered[:m], ordered[m:]


def select_classes(splits: DatasetSplits, labels: Sequence[int]) -> DatasetSplits:
    """Keep only the items of ``labels`` and relabel them ``0..k-1`` in the order given.

    Args:
        splits: The splits to filter.
        labels: Original labels to keep; their position is the new label.

    Raises:
        DataError: A label is not a class of ``splits``.
    """
    bad = [label for label in labels if not 0 <= label < len(splits.classnames)]
    if bad:
        raise DataError(f"labels {bad} out of range for {len(splits.classnames)} classes")
    relabel = {old: new for new, old in enumerate(labels)}

    def keep(items: list[Item]) -> list[Item]:
        return [dataclasses.replace(i, label=relabel[i.label]) for i in items if i.label in relabel]

    return DatasetSplits(
        keep(splits.train), keep(splits.val), keep(splits.test), [splits.classnames[old] for old in labels]
    )


def base_new_split(splits: DatasetSplits) -> BaseNewSplits:
    """Cut a dataset into base and new classes (labels present in the training split).

    Args:
        splits: All classes (few-shot train/val already sampled, full test).

    Returns:
        The base half and the new half, each relabelled ``0..k-1``.

    Raises:
        DataError: The training split is empty (nothing defines the classes).
    """
    if not splits.train:
        raise DataError("base/new cut needs a training split: it defines the classes")
    base, new = cut_labels([item.label for item in splits.train])
    return BaseNewSplits(select_classes(splits, base), select_classes(splits, new), tuple(base), tuple(new))


def subsample_classes(splits: DatasetSplits, subsample: Subsample) -> DatasetSplits:
    """Return all classes, or the base or new half of the cut (relabelled).

    Args:
        splits: All classes.
        subsample: ``"all"`` (unchanged), ``"base"`` or ``"new"``.
    """
    if subsample == "all":
        return splits
    if subsample not in ("base", "new"):
        raise ValueError(f"subsample must be 'all', 'base' or 'new', got {subsample!r}")
    cut = base_new_split(splits)
    return cut.base if subsample == "base" else cut.new


def all_classes(splits: DatasetSplits) -> DatasetSplits:
    """The all-class protocol: the splits unchanged (named for symmetry with the cut)."""
    return splits


def search_split(splits: DatasetSplits) -> BaseNewSplits:
    """The hyper-parameter search protocol: pseudo-base / pseudo-new inside the base classes.

    The base classes of the base/new cut are cut again (first ``ceil(b/2)`` pseudo-base). Train on
    ``result.base.train``; evaluate ``result.base.val`` with the pseudo-base classifier and
    ``result.new.val`` with the pseudo-new classifier. The new classes and every test item are
    left out, and ``result.new.train`` is emptied so that pseudo-new images are only for
    evaluation.

    Args:
        splits: All classes (few-shot train/val already sampled).

    Returns:
        Pseudo-base and pseudo-new halves; ``*_labels`` are labels of ``splits``.

    Raises:
        DataError: Fewer than 2 base classes, or no validation items.
    """
    cut = base_new_split(splits)
    if len(cut.base_labels) < 2:
        raise DataError("search split needs at least 2 base classes")
    base = DatasetSplits(cut.base.train, cut.base.val, [], cut.base.classnames)
    if not base.val:
        raise DataError("search split needs validation items for held-out evaluation")
    inner = base_new_split(base)
    pseudo_base = DatasetSplits(inner.base.train, inner.base.val, [], inner.base.classnames)
    pseudo_new = DatasetSplits([], inner.new.val, [], inner.new.classnames)
    return BaseNewSplits(
        pseudo_base,
        pseudo_new,
        tuple(cut.base_labels[i] for i in inner.base_labels),
        tuple(cut.base_labels[i] for i in inner.new_labels),
    )
