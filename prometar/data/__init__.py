"""Data: the 15 benchmark datasets, few-shot sampling, protocols, transforms and loaders.

``catalog`` (where each dataset lives), ``readers`` (on-disk layouts into items), ``fewshot``
(the field's K-shot convention, cached atomically), ``protocols`` (base/new cut, search split,
generalisation targets), ``transforms`` and ``loaders`` (images into tensors), ``check`` (is a
data root usable?) and ``miniature`` (tiny copies of every layout, for tests).
"""

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
from prometar.data.loaders import ImageDataset, build_loader, load_image
from prometar.data.miniature import write_miniatures
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
    "write_miniatures",
]
