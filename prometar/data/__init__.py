"""Data: the 15 benchmark datasets, few-shot sampling, protocols, transforms and loaders.

``catalog`` (where each dataset lives), ``readers`` (on-disk layouts into items), ``fewshot``
(the field's K-shot convention, cached atomically), ``protocols`` (base/new cut, search split,
generalisation targets), ``transforms`` and ``loaders`` (images into tensors) and ``check`` (is a
data root usable?). Miniature copies of every layout, for tests, are in ``prometar.toy.miniature``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives. The submodules load on first use (PEP 562), so that reading the
# catalog (``prometar.data.catalog``: sweep validation, the CLI driver) does not import torch.
_HOME: dict[str, str] = {
    "BASE_TO_NEW_DATASETS": "catalog", "CROSS_DATASET_TARGETS": "catalog",
    "DOMAIN_GENERALIZATION_TARGETS": "catalog", "GENERALIZATION_SOURCE": "catalog", "DataError": "catalog",
    "DatasetInfo": "catalog", "get_dataset": "catalog", "list_datasets": "catalog",
    "DatasetReport": "check", "check_datasets": "check",
    "few_shot": "fewshot", "sample_few_shot": "fewshot",
    "ImageDataset": "loaders", "SeededSampler": "loaders", "build_loader": "loaders",
    "load_image": "loaders",
    "BaseNewSplits": "protocols", "base_new_split": "protocols", "generalization_targets": "protocols",
    "search_split": "protocols", "select_classes": "protocols", "subsample_classes": "protocols",
    "DatasetSplits": "readers", "Item": "readers", "read_dataset": "readers",
    "build_test_transform": "transforms", "build_train_transform": "transforms",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


if TYPE_CHECKING:
    from prometar.data.catalog import (
        BASE_TO_NEW_DATASETS,
        CROSS_DATASET_TARGETS,
        DOMAIN_GENERALIZATION_TARGETS,
        GENERALIZATION_SOURCE,
        DataError,
        DatasetInfo,
        get_dataset,
        list_datasets,
    )
    from prometar.data.check import DatasetReport, check_datasets
    from prometar.data.fewshot import few_shot, sample_few_shot
    from prometar.data.loaders import ImageDataset, SeededSampler, build_loader, load_image
    from prometar.data.protocols import (
        BaseNewSplits,
        base_new_split,
        generalization_targets,
        search_split,
        select_classes,
        subsample_classes,
    )
    from prometar.data.readers import DatasetSplits, Item, read_dataset
    from prometar.data.transforms import build_test_transform, build_train_transform

__all__ = [
    "BASE_TO_NEW_DATASETS",
    "CROSS_DATASET_TARGETS",
    "DOMAIN_GENERALIZATION_TARGETS",
    "GENERALIZATION_SOURCE",
    "BaseNewSplits",
    "DataError",
    "DatasetInfo",
    "DatasetReport",
    "DatasetSplits",
    "ImageDataset",
    "SeededSampler",
    "Item",
    "base_new_split",
    "build_loader",
    "build_test_transform",
    "build_train_transform",
    "check_datasets",
    "few_shot",
    "generalization_targets",
    "get_dataset",
    "list_datasets",
    "load_image",
    "read_dataset",
    "sample_few_shot",
    "search_split",
    "select_classes",
    "subsample_classes",
]
