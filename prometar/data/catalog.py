"""The dataset catalog: the 15 datasets of the CLIP prompt-learning benchmark.

Each entry says where a dataset lives under the data root (the layout every paper in the field
uses, see ``shared/reference/datasets.md``), where its split comes from, how many classes the full
benchmark has, and the single-template zero-shot prompt. The catalog is a plain module-level
registry: ``list_datasets()`` names the keys and ``get_dataset(key)`` looks one up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prometar.errors import DataError

SplitSource = Literal[
    "split_json",  # split_zhou_*.json: {"train"|"val"|"test": [[relpath, label, classname], ...]}
    "fgvc_text",  # FGVC-Aircraft: variants.txt + images_variant_{train,val,test}.txt
    "imagenet_folders",  # images/{train,val}/<wnid>/ + classnames.txt; val folder is the test set
    "numbered_folders",  # ImageNetV2: <image root>/<label>/ + classnames.txt; test only
    "wnid_folders",  # ImageNet-Sketch: <image root>/<wnid>/, label from classnames.txt; test only
    "wnid_subset_folders",  # ImageNet-A/-R: sorted wnid folders present -> 0..k-1; test only
]


@dataclass(frozen=True)
class DatasetInfo:
    """One catalog entry.

    Attributes:
        key: Registry key (``oxford_pets``).
        display_name: Name used in tables (``OxfordPets``).
        folder: Folder under the data root (``oxford_pets``).
        image_root: Image root inside ``folder``; ``""`` means the folder itself.
        split_source: How the train/val/test split is read.
        split_file: Split file name inside ``folder`` for ``split_json`` datasets, else ``None``.
        num_classes: Class count of the full benchmark dataset.
        template: Single-template zero-shot prompt with one ``{}`` for the class name.
    """

    key: str
    display_name: str
    folder: str
    image_root: str
    split_source: SplitSource
    split_file: str | None
    num_classes: int
    template: str

    @property
    def base_to_new(self) -> bool:
        """Whether the dataset takes part in the base-to-new protocol (has a training split)."""
        return self.split_source in ("split_json", "fgvc_text", "imagenet_folders")


_PHOTO = "a photo of a {}."

_DATASETS: dict[str, DatasetInfo] = {
    info.key: info
    for info in (
        DatasetInfo("imagenet", "ImageNet", "imagenet", "images", "imagenet_folders", None, 1000, _PHOTO),
        DatasetInfo(
            "caltech101",
            "Caltech101",
            "caltech-101",
            "101_ObjectCategories",
            "split_json",
            "split_zhou_Caltech101.json",
            100,
            _PHOTO,
        ),
        DatasetInfo(
            "oxford_pets",
            "OxfordPets",
            "oxford_pets",
            "images",
            "split_json",
            "split_zhou_OxfordPets.json",
            37,
            "a photo of a {}, a type of pet.",
        ),
        DatasetInfo(
            "stanford_cars",
            "StanfordCars",
            "stanford_cars",
            "",
            "split_json",
            "split_zhou_StanfordCars.json",
            196,
            _PHOTO,
        ),
        DatasetInfo(
            "oxford_flowers",
            "Flowers102",
            "oxford_flowers",
            "jpg",
            "split_json",
            "split_zhou_OxfordFlowers.json",
            102,
            "a photo of a {}, a type of flower.",
        ),
        DatasetInfo(
            "food101",
            "Food101",
            "food-101",
            "images",
            "split_json",
            "split_zhou_Food101.json",
            101,
            "a photo of {}, a type of food.",
        ),
        DatasetInfo(
            "fgvc_aircraft",
            "FGVCAircraft",
            "fgvc_aircraft",
            "images",
            "fgvc_text",
            None,
            100,
            "a photo of a {}, a type of aircraft.",
        ),
        DatasetInfo(
            "sun397",
            "SUN397",
            "sun397",
            "SUN397",
            "split_json",
            "split_zhou_SUN397.json",
            397,
            _PHOTO,
        ),
        DatasetInfo(
            "dtd",
            "DTD",
            "dtd",
            "images",
            "split_json",
            "split_zhou_DescribableTextures.json",
            47,
            "{} texture.",
        ),
        DatasetInfo(
            "eurosat",
            "EuroSAT",
            "eurosat",
            "2750",
            "split_json",
            "split_zhou_EuroSAT.json",
            10,
            "a centered satellite photo of {}.",
        ),
        DatasetInfo(
            "ucf101",
            "UCF101",
            "ucf101",
            "UCF-101-midframes",
            "split_json",
            "split_zhou_UCF101.json",
            101,
            "a photo of a person doing {}.",
        ),
        DatasetInfo(
            "imagenet_v2",
            "ImageNetV2",
            "imagenetv2",
            "imagenetv2-matched-frequency-format-val",
            "numbered_folders",
            None,
            1000,
            _PHOTO,
        ),
        DatasetInfo(
            "imagenet_sketch",
            "ImageNet-Sketch",
            "imagenet-sketch",
            "images",
            "wnid_folders",
            None,
            1000,
            _PHOTO,
        ),
        DatasetInfo(
            "imagenet_a",
            "ImageNet-A",
            "imagenet-adversarial",
            "imagenet-a",
            "wnid_subset_folders",
            None,
            200,
            _PHOTO,
        ),
        DatasetInfo(
            "imagenet_r",
            "ImageNet-R",
            "imagenet-rendition",
            "imagenet-r",
            "wnid_subset_folders",
            None,
            200,
            _PHOTO,
        ),
    )
}

#: The 11 datasets of the base-to-new, cross-dataset and few-shot protocols, in table order.
BASE_TO_NEW_DATASETS: tuple[str, ...] = (
    "imagenet",
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
)


def list_datasets() -> list[str]:
    """Return the registry keys of all 15 datasets, in table order."""
    return list(_DATASETS)


def get_dataset(key: str) -> DatasetInfo:
    """Look up a catalog entry.

    Args:
        key: A registry key such as ``"oxford_pets"``.

    Returns:
        The dataset's catalog entry.

    Raises:
        DataError: Unknown key; the message lists the valid keys.
    """
    try:
        return _DATASETS[key]
    except KeyError:
        raise DataError(f"unknown dataset {key!r}; valid datasets: {', '.join(_DATASETS)}") from None
