"""Toy downstream datasets: toy stand-ins for the 11 base-to-new datasets, in their real layouts.

Each is written in the real on-disk layout of its benchmark key (folder names,
``split_zhou_*.json`` files, FGVC-Aircraft's variant lists, ImageNet's wnid folders and
``classnames.txt``), so that the real readers are exercised. Each has its own 4 colours × 4 shapes
class grid and its own rendering style (noise, blur, clutter, viewpoint, backgrounds, textures,
colour casts; ``prometar/toy/world.py`` renders them), so zero-shot is imperfect. Base and new
classes form a checkerboard of the grid, so knowing only the colour (or only the shape) of an
object gives 50%.

Writing is deterministic: the same seed writes the same files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from prometar.toy.world import COLOUR_NAMES, SHAPES, Style, render, sample_scene

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToyClass:
    """One class of a toy dataset: a colour × shape cell of its grid."""

    label: int
    colour: str
    shape: str
    name: str  # as stored in the split files (what the prompt sees, "_" -> " ")
    is_base: bool


@dataclass(frozen=True)
class ToyDatasetSpec:
    """A toy stand-in for one benchmark dataset: the layout key and its rendering style."""

    key: str
    style: Style
    underscore_names: bool = False  # class names stored as "red_star" (UCF101 style)


TOY_DATASETS: dict[str, ToyDatasetSpec] = {
    "imagenet": ToyDatasetSpec("imagenet", Style("noise+clutter", blur=0.8, noise=42.0, clutter=4)),
    "caltech101": ToyDatasetSpec(
        "caltech101", Style("clutter", systematic=False, clutter=8, occluders=3, rotation_deg=25.0)
    ),
    "oxford_pets": ToyDatasetSpec("oxford_pets", Style("noise", blur=0.8, noise=40.0)),
    "stanford_cars": ToyDatasetSpec(
        "stanford_cars",
        Style("viewpoint", systematic=False, rotation_deg=45.0, squash=0.55, scale=(0.75, 1.1)),
    ),
    "oxford_flowers": ToyDatasetSpec(
        "oxford_flowers", Style("backgrounds", systematic=False, background="random")
    ),
    "food101": ToyDatasetSpec("food101", Style("outline", fill="outline", noise=10.0)),
    "fgvc_aircraft": ToyDatasetSpec(
        "fgvc_aircraft", Style("tiny+blur", scale=(0.5, 0.65), blur=0.7, noise=15.0)
    ),
    "sun397": ToyDatasetSpec("sun397", Style("scenes", systematic=False, background="gradient", clutter=3)),
    "dtd": ToyDatasetSpec("dtd", Style("stripes", fill="stripes", noise=15.0)),
    "eurosat": ToyDatasetSpec(
        "eurosat", Style("colour-cast", colour_cast=(18.0, 6.0, -18.0), contrast=0.85, noise=12.0)
    ),
    "ucf101": ToyDatasetSpec(
        "ucf101", Style("motion-blur", motion_blur=5, noise=42.0), underscore_names=True
    ),
}


def list_toy_datasets() -> list[str]:
    """Keys of the toy datasets (the 11 base-to-new benchmark keys)."""
    return list(TOY_DATASETS)


def _get_spec(key: str) -> ToyDatasetSpec:
    if key not in TOY_DATASETS:
        raise KeyError(f"unknown toy dataset {key!r}; valid: {', '.join(TOY_DATASETS)}")
    return TOY_DATASETS[key]


def toy_dataset_classes(key: str, seed: int) -> list[ToyClass]:
    """The class grid of one toy dataset: 4 colours × 4 shapes chosen from ``seed`` and the key.

    Base and new classes form a checkerboard of the grid (cell (i, j) is base iff i + j is even);
    labels 0..7 are the base cells and 8..15 the new ones, so the readers' cut ("first ⌈n/2⌉ sorted
    labels are base") reproduces the checkerboard; each colour (and each shape) has two cells on
    each side.

    Args:
        key: Toy dataset key.
        seed: World seed.

    Returns:
        16 classes in label order.
    """
    spec = _get_spec(key)
    index = list(TOY_DATASETS).index(key)
    rng = np.random.default_rng([seed, 7919, index])
    colours = [COLOUR_NAMES[i] for i in sorted(rng.choice(len(COLOUR_NAMES), 4, replace=False))]
    shapes = [SHAPES[i] for i in sorted(rng.choice(len(SHAPES), 4, replace=False))]
    cells = [(i, j) for i in range(4) for j in range(4)]
    ordered = [c for c in cells if (c[0] + c[1]) % 2 == 0] + [c for c in cells if (c[0] + c[1]) % 2 == 1]
    sep = "_" if spec.underscore_names else " "
    return [
        ToyClass(label, colours[i], shapes[j], f"{colours[i]}{sep}{shapes[j]}", (i + j) % 2 == 0)
        for label, (i, j) in enumerate(ordered)
    ]


def single_attribute_baseline(classes: Sequence[ToyClass], attribute: Literal["colour", "shape"]) -> float:
    """Accuracy of an oracle that knows one attribute perfectly and guesses among the rest.

    For each true class, the oracle picks uniformly among the classes of ``classes`` that share
    its colour (or shape); the result is the expected top-1 accuracy with classes equally
    frequent. On a toy dataset's base (or new) half — a checkerboard — this is 50%.

    Args:
        classes: The candidate classes (e.g. only the base ones).
        attribute: ``colour`` or ``shape``.

    Returns:
        Expected accuracy in [0, 1].
    """
    if attribute not in ("colour", "shape"):
        raise ValueError(f"attribute must be 'colour' or 'shape', got {attribute!r}")
    if not classes:
        raise ValueError("single_attribute_baseline needs at least one class")
    values = [getattr(c, attribute) for c in classes]
    return float(np.mean([1.0 / values.count(v) for v in values]))


@dataclass(frozen=True)
class ToyImage:
    """One written image: path relative to the dataset's image root, label, stored class name."""

    path: str
    label: int
    classname: str


@dataclass(frozen=True)
class WrittenDataset:
    """What ``write_toy_dataset`` wrote for one key (all paths absolute)."""

    key: str
    dataset_dir: Path
    image_root: Path
    classes: list[ToyClass]
    splits: dict[str, list[ToyImage]] = field(default_factory=dict)  # train / val / test


# key -> (folder under the data root, image root inside it, split file or None)
LAYOUTS: dict[str, tuple[str, str, str | None]] = {
    "imagenet": ("imagenet", "images", None),
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json"),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "food101": ("food-101", "images", "split_zhou_Food101.json"),
    "fgvc_aircraft": ("fgvc_aircraft", "images", None),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json"),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
}


def _wnid(label: int) -> str:
    return f"n{90000000 + label:08d}"


def _relative_path(key: str, cls: ToyClass, split: str, per_class: int, serial: int) -> str:
    """The file name a real dataset of this layout would use (relative to the image root)."""
    slug = f"{cls.colour}_{cls.shape}"
    camel = f"{cls.colour.capitalize()}{cls.shape.capitalize()}"
    if key == "imagenet":
        if split == "test":
            return f"val/{_wnid(cls.label)}/ILSVRC2012_val_{serial:08d}.JPEG"
        return f"train/{_wnid(cls.label)}/{_wnid(cls.label)}_{per_class}.JPEG"
    if key == "caltech101":
        return f"{slug}/image_{serial:04d}.jpg"
    if key == "oxford_pets":
        return f"{slug}_{serial}.jpg"
    if key == "stanford_cars":
        return f"cars_{'test' if split == 'test' else 'train'}/{serial:05d}.jpg"
    if key == "oxford_flowers":
        return f"image_{serial:05d}.jpg"
    if key == "food101":
        return f"{slug}/{serial}.jpg"
    if key == "fgvc_aircraft":
        return f"{serial:07d}.jpg"
    if key == "sun397":
        return f"{slug[0]}/{slug}/sun_{serial:08d}.jpg"
    if key == "dtd":
        return f"{slug}/{slug}_{serial:04d}.jpg"
    if key == "eurosat":
        return f"{camel}/{camel}_{serial}.jpg"
    if key == "ucf101":
        return f"{camel}/v_{camel}_g{serial // 7 + 1:02d}_c{serial % 7 + 1:02d}.jpg"
    raise KeyError(key)


def _write_json_atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_toy_dataset(
    data_root: Path | str,
    key: str,
    *,
    seed: int,
    train_per_class: int = 24,
    val_per_class: int = 8,
    test_per_class: int = 100,
    image_size: int = 32,
) -> WrittenDataset:
    """Render one toy dataset and write it in the real layout of ``key`` under ``data_root``.

    An existing folder for this key is replaced. Split lists are in a deterministic shuffled
    order, like the released split files.

    Args:
        data_root: The data root (``$DATA``).
        key: A benchmark key, e.g. ``oxford_pets``.
        seed: World seed; the same seed writes the same files.
        train_per_class: Training images per class (16-shot sampling needs at least 16).
        val_per_class: Validation images per class (unused by ImageNet, whose val split is its test).
        test_per_class: Test images per class.
        image_size: Side of the written images in pixels.

    Returns:
        What was written.
    """
    spec = _get_spec(key)
    folder, image_root_name, split_file = LAYOUTS[key]
    dataset_dir = Path(data_root) / folder
    image_root = dataset_dir / image_root_name if image_root_name else dataset_dir
    if dataset_dir.exists():
        shutil.rmtree(dataset_dir)
    dataset_dir.mkdir(parents=True)
    classes = toy_dataset_classes(key, seed)
    index = list(TOY_DATASETS).index(key)
    counts = {
        "train": train_per_class,
        "val": 0 if key == "imagenet" else val_per_class,
        "test": test_per_class,
    }
    splits: dict[str, list[ToyImage]] = {}
    serial = 1
    for split_index, (split, per_class) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, 104729, index, split_index])
        order = [(cls, k) for cls in classes for k in range(per_class)]
        perm = rng.permutation(len(order))
        items: list[ToyImage] = []
        for p in perm.tolist():
            cls, k = order[p]
            scene = sample_scene(rng, [(cls.colour, cls.shape)])
            pixels = render(scene, spec.style, rng, image_size)
            rel = _relative_path(key, cls, split, k + 1, serial)
            serial += 1
            out = image_root / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, "RGB").save(out, format="JPEG", quality=95, subsampling=0)
            items.append(ToyImage(rel, cls.label, cls.name))
        splits[split] = items

    if split_file is not None:
        _write_json_atomic(
            dataset_dir / split_file,
            {s: [[it.path, it.label, it.classname] for it in items] for s, items in splits.items()},
        )
    elif key == "fgvc_aircraft":
        _write_text_atomic(dataset_dir / "variants.txt", "".join(f"{c.name}\n" for c in classes))
        for split, items in splits.items():
            lines = "".join(f"{Path(it.path).stem} {it.classname}\n" for it in items)
            _write_text_atomic(dataset_dir / f"images_variant_{split}.txt", lines)
    elif key == "imagenet":
        _write_text_atomic(
            dataset_dir / "classnames.txt", "".join(f"{_wnid(c.label)} {c.name}\n" for c in classes)
        )
        splits["val"] = []
    logger.debug("wrote toy %s: %s", key, {s: len(v) for s, v in splits.items()})
    return WrittenDataset(key, dataset_dir, image_root, classes, splits)


def write_toy_datasets(
    data_root: Path | str, *, seed: int, keys: Iterable[str] | None = None, **sizes: int
) -> dict[str, WrittenDataset]:
    """Write every toy dataset (or those in ``keys``) under ``data_root``; sizes: ``write_toy_dataset``."""
    return {
        key: write_toy_dataset(data_root, key, seed=seed, **sizes) for key in (keys or list(TOY_DATASETS))
    }


IMAGENET_VARIANTS: dict[str, Style] = {
    "imagenet_v2": TOY_DATASETS["imagenet"].style,  # a new draw of the same look: a mild shift
    "imagenet_sketch": Style("sketch", fill="outline", noise=10.0),
    "imagenet_a": Style("adversarial", systematic=False, clutter=8, occluders=3, blur=0.8, noise=42.0),
    "imagenet_r": Style("rendition", systematic=False, fill="stripes", background="gradient", noise=10.0),
}
"""Toy stand-ins for the domain-generalisation targets: the toy ImageNet's classes in other looks."""

_VARIANT_LAYOUTS: dict[str, tuple[str, str]] = {
    "imagenet_v2": ("imagenetv2", "imagenetv2-matched-frequency-format-val"),
    "imagenet_sketch": ("imagenet-sketch", "images"),
    "imagenet_a": ("imagenet-adversarial", "imagenet-a"),
    "imagenet_r": ("imagenet-rendition", "imagenet-r"),
}


def write_toy_imagenet_variants(
    data_root: Path | str, *, seed: int, test_per_class: int = 50, image_size: int = 32
) -> dict[str, Path]:
    """Write the toy ImageNet's domain-generalisation targets in the real layouts of their keys.

    Each variant holds test images of the toy ImageNet's classes (same class grid and names as
    ``write_toy_dataset(..., "imagenet", seed=seed)``) rendered in its own style
    (:data:`IMAGENET_VARIANTS`); ImageNet-A and -R hold a 12-class subset (the real ones hold 200 of
    the 1000 classes). An existing folder of a variant is replaced. Deterministic in ``seed``.

    Returns:
        Variant key → its dataset folder.
    """
    classes = toy_dataset_classes("imagenet", seed)
    written: dict[str, Path] = {}
    for index, (key, style) in enumerate(IMAGENET_VARIANTS.items()):
        folder_name, image_root_name = _VARIANT_LAYOUTS[key]
        dataset_dir = Path(data_root) / folder_name
        if dataset_dir.exists():
            shutil.rmtree(dataset_dir)
        image_root = dataset_dir / image_root_name
        image_root.mkdir(parents=True)
        chosen = [c for c in classes if c.label % 4 != 3] if key in ("imagenet_a", "imagenet_r") else classes
        rng = np.random.default_rng([seed, 15485863, index])
        for cls in chosen:
            sub = str(cls.label) if key == "imagenet_v2" else _wnid(cls.label)
            (image_root / sub).mkdir()
            for n in range(test_per_class):
                pixels = render(sample_scene(rng, [(cls.colour, cls.shape)]), style, rng, image_size)
                Image.fromarray(pixels, "RGB").save(
                    image_root / sub / f"{key}_{n:04d}.jpg", format="JPEG", quality=95, subsampling=0
                )
        _write_text_atomic(
            dataset_dir / "classnames.txt", "".join(f"{_wnid(c.label)} {c.name}\n" for c in classes)
        )
        written[key] = dataset_dir
    return written
