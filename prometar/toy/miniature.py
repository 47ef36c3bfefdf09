"""Miniature copies of the 15 dataset layouts, for tests.

``write_miniatures(root)`` writes, under ``root``, each dataset's real folder and file names and
split-file schema (``split_zhou_*.json``, FGVC-Aircraft's text files, ImageNet's folders and
``classnames.txt``, the variants' folders) with a few classes and a few tiny generated images per
class. Everything is deterministic from ``seed``. The class names are real ones (already cleaned as
the released split files spell them), so readers are exercised on the real format.

Shape of a miniature: split-JSON datasets and FGVC-Aircraft have 5 classes (base/new = 3/2); each
class has ``images_per_class`` training images except the last, which has fewer (to exercise
"all of them when fewer than K"), and 2 validation and 2 test images. The ImageNet family shares
7 wnids; ImageNet-A and -R hold 4 of them each (different subsets), as the real ones hold 200 of
the 1000.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from prometar.data.catalog import get_dataset, list_datasets
from prometar.errors import DataError

IMAGE_SIDE = 16
VAL_PER_CLASS = 2
TEST_PER_CLASS = 2

#: (folder or file stem used in paths, class name as the split file spells it)
_CLASSES: dict[str, list[tuple[str, str]]] = {
    "caltech101": [
        ("accordion", "accordion"),
        ("Faces_easy", "face"),
        ("Leopards", "leopard"),
        ("airplanes", "airplane"),
        ("anchor", "anchor"),
    ],
    "oxford_pets": [
        ("Abyssinian", "abyssinian"),
        ("american_bulldog", "american_bulldog"),
        ("basset_hound", "basset_hound"),
        ("Bengal", "bengal"),
        ("beagle", "beagle"),
    ],
    "stanford_cars": [
        ("", "2012 Tesla Model S"),
        ("", "AM General Hummer SUV 2000"),
        ("", "Acura RL Sedan 2012"),
        ("", "BMW M3 Coupe 2012"),
        ("", "Volvo 240 Sedan 1993"),
    ],
    "oxford_flowers": [
        ("", "pink primrose"),
        ("", "hard-leaved pocket orchid"),
        ("", "canterbury bells"),
        ("", "sweet pea"),
        ("", "english marigold"),
    ],
    "food101": [
        ("apple_pie", "apple_pie"),
        ("baby_back_ribs", "baby_back_ribs"),
        ("baklava", "baklava"),
        ("beef_carpaccio", "beef_carpaccio"),
        ("beef_tartare", "beef_tartare"),
    ],
    "sun397": [
        ("a/abbey", "abbey"),
        ("a/airplane_cabin", "airplane cabin"),
        ("s/shop/bakery", "shop bakery"),
        ("b/bamboo_forest", "bamboo forest"),
        ("c/cathedral/outdoor", "cathedral outdoor"),
    ],
    "dtd": [
        ("banded", "banded"),
        ("blotchy", "blotchy"),
        ("braided", "braided"),
        ("bubbly", "bubbly"),
        ("bumpy", "bumpy"),
    ],
    "eurosat": [
        ("AnnualCrop", "Annual Crop Land"),
        ("Forest", "Forest"),
        ("HerbaceousVegetation", "Herbaceous Vegetation Land"),
        ("Highway", "Highway or Road"),
        ("Industrial", "Industrial Buildings"),
    ],
    "ucf101": [
        ("ApplyEyeMakeup", "Apply_Eye_Makeup"),
        ("ApplyLipstick", "Apply_Lipstick"),
        ("Archery", "Archery"),
        ("BabyCrawling", "Baby_Crawling"),
        ("BalanceBeam", "Balance_Beam"),
    ],
}

FGVC_VARIANTS = ["707-320", "727-200", "A300B4", "Cessna 172", "DC-3"]

IMAGENET_CLASSES: list[tuple[str, str]] = [
    ("n01440764", "tench"),
    ("n01443537", "goldfish"),
    ("n01484850", "great white shark"),
    ("n01491361", "tiger shark"),
    ("n01494475", "hammerhead shark"),
    ("n01496331", "electric ray"),
    ("n01498041", "stingray"),
]
IMAGENET_A_INDICES = (1, 3, 4, 6)
IMAGENET_R_INDICES = (0, 2, 5, 6)


@dataclass(frozen=True)
class MiniatureInfo:
    """What a miniature holds: class names in label order and the split sizes written."""

    key: str
    classnames: tuple[str, ...]
    train: int
    val: int
    test: int


def write_miniatures(
    root: str | os.PathLike, keys: Iterable[str] | None = None, *, seed: int = 0, images_per_class: int = 4
) -> dict[str, MiniatureInfo]:
    """Write miniature copies of dataset layouts under ``root``.

    Args:
        root: The data root to write into (created if needed).
        keys: Catalog keys to write; default all 15.
        seed: Seeds the generated pixels and file names.
        images_per_class: Training images per class (the last class of each dataset gets half).

    Returns:
        Per key, the class names and split sizes written.
    """
    if images_per_class < 2:
        raise ValueError(f"images_per_class must be at least 2, got {images_per_class}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    keys = list_datasets() if keys is None else list(keys)
    for key in keys:
        get_dataset(key)
    rng = np.random.default_rng(seed)
    written: dict[str, MiniatureInfo] = {}
    for key in keys:
        info = get_dataset(key)
        folder = root / info.folder
        image_root = folder / info.image_root if info.image_root else folder
        image_root.mkdir(parents=True, exist_ok=True)
        if info.split_source == "split_json":
            written[key] = _write_split_json(key, folder, image_root, rng, images_per_class)
        elif info.split_source == "fgvc_text":
            written[key] = _write_fgvc(key, folder, image_root, rng, images_per_class)
        else:
            written[key] = _write_imagenet_family(key, folder, image_root, rng, images_per_class)
    return written


def _train_counts(n_classes: int, images_per_class: int) -> list[int]:
    return [images_per_class] * (n_classes - 1) + [max(1, images_per_class // 2)]


def _write_image(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(pixels, "RGB").save(path, format=fmt)


def _relative_path(
    key: str, folder_name: str, split: str, index_in_class: int, counter: int, rng: np.random.Generator
) -> str:
    """Relative image path in ``key``'s real naming scheme."""
    n = index_in_class + 1
    if key == "caltech101":
        return f"{folder_name}/image_{n:04d}.jpg"
    if key == "oxford_pets":
        return f"{folder_name}_{n}.jpg"
    if key == "stanford_cars":
        return f"{'cars_test' if split == 'test' else 'cars_train'}/{counter:05d}.jpg"
    if key == "oxford_flowers":
        return f"image_{counter:05d}.jpg"
    if key == "food101":
        return f"{folder_name}/{1000000 + counter}.jpg"
    if key == "sun397":
        token = "".join(chr(ord("a") + int(c)) for c in rng.integers(0, 26, size=16))
        return f"{folder_name}/sun_{token}.jpg"
    if key == "dtd":
        return f"{folder_name}/{folder_name}_{n:04d}.jpg"
    if key == "eurosat":
        return f"{folder_name}/{folder_name}_{n}.jpg"
    if key == "ucf101":
        return f"{folder_name}/v_{folder_name}_g{n:02d}_c01.jpg"
    raise DataError(f"no miniature naming scheme for {key!r}")


def _write_split_json(
    key: str, folder: Path, image_root: Path, rng: np.random.Generator, images_per_class: int
) -> MiniatureInfo:
    classes = _CLASSES[key]
    counts = {
        "train": _train_counts(len(classes), images_per_class),
        "val": [VAL_PER_CLASS] * len(classes),
        "test": [TEST_PER_CLASS] * len(classes),
    }
    split: dict[str, list[list[object]]] = {"train": [], "val": [], "test": []}
    counter = 0
    per_class_index = [0] * len(classes)
    for name in ("train", "val", "test"):
        for label, (folder_name, classname) in enumerate(classes):
            for _ in range(counts[name][label]):
                counter += 1
                rel = _relative_path(key, folder_name, name, per_class_index[label], counter, rng)
                per_class_index[label] += 1
                _write_image(image_root / rel, rng)
                split[name].append([rel, label, classname])
    info = get_dataset(key)
    assert info.split_file is not None
    (folder / info.split_file).write_text(json.dumps(split, indent=1), encoding="utf-8")
    return MiniatureInfo(
        key, tuple(c for _, c in classes), len(split["train"]), len(split["val"]), len(split["test"])
    )


def _write_fgvc(
    key: str, folder: Path, image_root: Path, rng: np.random.Generator, images_per_class: int
) -> MiniatureInfo:
    (folder / "variants.txt").write_text("".join(f"{v}\n" for v in FGVC_VARIANTS), encoding="utf-8")
    counts = {
        "train": _train_counts(len(FGVC_VARIANTS), images_per_class),
        "val": [VAL_PER_CLASS] * len(FGVC_VARIANTS),
        "test": [TEST_PER_CLASS] * len(FGVC_VARIANTS),
    }
    counter = 0
    sizes = {}
    for name in ("train", "val", "test"):
        lines = []
        for label, variant in enumerate(FGVC_VARIANTS):
            for _ in range(counts[name][label]):
                counter += 1
                image_id = f"{1000000 + 137 * counter:07d}"
                _write_image(image_root / f"{image_id}.jpg", rng)
                lines.append(f"{image_id} {variant}\n")
        (folder / f"images_variant_{name}.txt").write_text("".join(lines), encoding="utf-8")
        sizes[name] = len(lines)
    return MiniatureInfo(key, tuple(FGVC_VARIANTS), sizes["train"], sizes["val"], sizes["test"])


def _write_imagenet_family(
    key: str, folder: Path, image_root: Path, rng: np.random.Generator, images_per_class: int
) -> MiniatureInfo:
    (folder / "classnames.txt").write_text(
        "".join(f"{wnid} {name}\n" for wnid, name in IMAGENET_CLASSES), encoding="utf-8"
    )
    all_names = tuple(name for _, name in IMAGENET_CLASSES)
    if key == "imagenet":
        counts = _train_counts(len(IMAGENET_CLASSES), images_per_class)
        counter = 0
        for label, (wnid, _) in enumerate(IMAGENET_CLASSES):
            for n in range(counts[label]):
                _write_image(image_root / "train" / wnid / f"{wnid}_{10000 + n}.JPEG", rng)
            for _ in range(TEST_PER_CLASS):
                counter += 1
                _write_image(image_root / "val" / wnid / f"ILSVRC2012_val_{counter:08d}.JPEG", rng)
        return MiniatureInfo(key, all_names, sum(counts), 0, TEST_PER_CLASS * len(IMAGENET_CLASSES))
    if key == "imagenet_v2":
        for label in range(len(IMAGENET_CLASSES)):
            for _ in range(TEST_PER_CLASS):
                digest = "".join(f"{int(b):02x}" for b in rng.integers(0, 256, size=20))
                _write_image(image_root / str(label) / f"{digest}.jpeg", rng)
        return MiniatureInfo(key, all_names, 0, 0, TEST_PER_CLASS * len(IMAGENET_CLASSES))
    if key == "imagenet_sketch":
        for wnid, _ in IMAGENET_CLASSES:
            for n in range(TEST_PER_CLASS):
                _write_image(image_root / wnid / f"sketch_{n + 1}.JPEG", rng)
        return MiniatureInfo(key, all_names, 0, 0, TEST_PER_CLASS * len(IMAGENET_CLASSES))
    indices = IMAGENET_A_INDICES if key == "imagenet_a" else IMAGENET_R_INDICES
    for index in indices:
        wnid, name = IMAGENET_CLASSES[index]
        for n in range(TEST_PER_CLASS):
            if key == "imagenet_a":
                filename = f"0.{int(rng.integers(0, 10**6)):06d}_{name.replace(' ', '_')}_{n}.jpg"
            else:
                filename = f"art_{n}.jpg"
            _write_image(image_root / wnid / filename, rng)
    names = tuple(IMAGENET_CLASSES[i][1] for i in sorted(indices, key=lambda i: IMAGENET_CLASSES[i][0]))
    return MiniatureInfo(key, names, 0, 0, TEST_PER_CLASS * len(indices))
