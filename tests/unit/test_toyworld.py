"""The toy world: rendering determinism, captions, held-out pairs, and the on-disk layouts.

The layout checks read the written files with plain ``json``/``os`` against
``shared/reference/datasets.md``, then once more through the real readers.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from prometar.toy import datasets as td
from prometar.toy import world as tw

SPLIT_FILES = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json"),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "food101": ("food-101", "images", "split_zhou_Food101.json"),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json"),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
}
SIZES = {"train_per_class": 3, "val_per_class": 2, "test_per_class": 4}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toydata")
    td.write_toy_datasets(root, seed=5, **SIZES)
    return root


def test_held_out_combinations_cover_each_colour_and_shape_twice() -> None:
    held = tw.HELD_OUT_COMBINATIONS
    assert len(set(held)) == 16
    assert set(Counter(c for c, _ in held).values()) == {2}
    assert set(Counter(s for _, s in held).values()) == {2}
    assert not set(held) & set(tw.SEEN_COMBINATIONS)
    assert len(tw.SEEN_COMBINATIONS) == 48


def test_rendering_is_deterministic_from_the_seed() -> None:
    a = tw.render_set(40, seed=3)
    b = tw.render_set(40, seed=3)
    c = tw.render_set(40, seed=4)
    assert a.images.shape == (40, 32, 32, 3) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    assert a.captions == b.captions
    assert not np.array_equal(a.images, c.images)


def test_every_style_renders_deterministically() -> None:
    scene = tw.Scene("red", "star", "large", "left")
    for spec in td.TOY_DATASETS.values():
        first = tw.render(scene, spec.style, np.random.default_rng(0))
        second = tw.render(scene, spec.style, np.random.default_rng(0))
        np.testing.assert_array_equal(first, second)
        assert first.shape == (32, 32, 3)


def test_pretraining_set_never_shows_held_out_pairs_and_captions_name_both_attributes() -> None:
    world = tw.render_set(300, seed=1)
    held = {(tw.COLOUR_NAMES.index(c), tw.SHAPES.index(s)) for c, s in tw.HELD_OUT_COMBINATIONS}
    for colour, shape, text in zip(
        world.colours.tolist(), world.shapes.tolist(), world.captions, strict=True
    ):
        assert (colour, shape) not in held
        assert f"{tw.COLOUR_NAMES[colour]} {tw.SHAPES[shape]}" in text


def test_object_colour_is_visible_in_the_pixels() -> None:
    """The clean pretraining render of a large red circle has clearly red pixels in the middle."""
    img = tw.render(
        tw.Scene("red", "circle", "large", "center"), tw.PRETRAINING_STYLE, np.random.default_rng(0)
    )
    r, g, b = img[14:18, 14:18].reshape(-1, 3).mean(axis=0)
    assert r > 170 and g < 90 and b < 90


@pytest.mark.parametrize("key", td.list_toy_datasets())
def test_class_grid_is_a_checkerboard_with_base_labels_first(key: str) -> None:
    classes = td.toy_dataset_classes(key, seed=0)
    assert [c.label for c in classes] == list(range(16))
    assert len({(c.colour, c.shape) for c in classes}) == 16
    base = [c for c in classes if c.is_base]
    new = [c for c in classes if not c.is_base]
    # The readers' cut "first ceil(n/2) sorted labels = base" must give the checkerboard.
    assert [c.label for c in base] == list(range(8))
    for half in (base, new):
        assert set(Counter(c.colour for c in half).values()) == {2}
        assert set(Counter(c.shape for c in half).values()) == {2}
        assert td.single_attribute_baseline(half, "colour") == pytest.approx(0.5)
        assert td.single_attribute_baseline(half, "shape") == pytest.approx(0.5)
    sep = "_" if key == "ucf101" else " "
    assert all(c.name == f"{c.colour}{sep}{c.shape}" for c in classes)


def test_single_attribute_baseline_is_the_expected_oracle_accuracy() -> None:
    make = td.ToyClass
    classes = [
        make(0, "red", "star", "red star", True),
        make(1, "red", "ring", "red ring", True),
        make(2, "blue", "star", "blue star", True),
    ]
    assert td.single_attribute_baseline(classes, "colour") == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert td.single_attribute_baseline(classes, "shape") == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    with pytest.raises(ValueError, match="attribute"):
        td.single_attribute_baseline(classes, "size")  # type: ignore[arg-type]


def test_class_vocabularies_differ_between_datasets() -> None:
    grids = {
        frozenset((c.colour, c.shape) for c in td.toy_dataset_classes(k, seed=0)) for k in td.TOY_DATASETS
    }
    assert len(grids) > 5


@pytest.mark.parametrize("key", sorted(SPLIT_FILES))
def test_split_json_layout(data_root: Path, key: str) -> None:
    folder, image_root, split_file = SPLIT_FILES[key]
    path = data_root / folder / split_file
    split = json.loads(path.read_text())
    assert set(split) == {"train", "val", "test"}
    per_class = {
        "train": SIZES["train_per_class"],
        "val": SIZES["val_per_class"],
        "test": SIZES["test_per_class"],
    }
    names: dict[int, str] = {}
    for name, entries in split.items():
        assert len(entries) == 16 * per_class[name]
        for entry in entries:
            assert isinstance(entry, list) and len(entry) == 3
            rel, label, classname = entry
            assert isinstance(rel, str) and isinstance(label, int) and isinstance(classname, str)
            assert 0 <= label < 16
            assert names.setdefault(label, classname) == classname
            assert not os.path.isabs(rel)
            assert (data_root / folder / image_root / rel).is_file(), rel
        assert Counter(e[1] for e in entries) == {label: per_class[name] for label in range(16)}
    assert sorted(names) == list(range(16))
    if key == "stanford_cars":
        assert all(e[0].startswith(("cars_train/", "cars_test/")) for s in split.values() for e in s)
    if key == "ucf101":
        assert all("_" in n and " " not in n for n in names.values())


def test_fgvc_aircraft_layout(data_root: Path) -> None:
    folder = data_root / "fgvc_aircraft"
    variants = (folder / "variants.txt").read_text().splitlines()
    assert len(variants) == 16 and len(set(variants)) == 16
    for split, per_class in (("train", 3), ("val", 2), ("test", 4)):
        lines = (folder / f"images_variant_{split}.txt").read_text().splitlines()
        assert len(lines) == 16 * per_class
        for line in lines:
            image_id, variant = line.split(" ", 1)
            assert variant in variants
            assert (folder / "images" / f"{image_id}.jpg").is_file()


def test_imagenet_layout(data_root: Path) -> None:
    folder = data_root / "imagenet"
    lines = (folder / "classnames.txt").read_text().splitlines()
    assert len(lines) == 16
    wnids = [line.split(" ", 1)[0] for line in lines]
    assert wnids == sorted(wnids)  # line order = label order = sorted folder order
    for sub, per_class in (("train", 3), ("val", 4)):
        assert sorted(os.listdir(folder / "images" / sub)) == wnids
        for wnid in wnids:
            assert len(os.listdir(folder / "images" / sub / wnid)) == per_class


def test_writing_is_deterministic(tmp_path: Path) -> None:
    a = td.write_toy_dataset(tmp_path / "a", "dtd", seed=2, **SIZES)
    b = td.write_toy_dataset(tmp_path / "b", "dtd", seed=2, **SIZES)
    assert (a.dataset_dir / "split_zhou_DescribableTextures.json").read_bytes() == (
        b.dataset_dir / "split_zhou_DescribableTextures.json"
    ).read_bytes()
    for item in a.splits["test"]:
        assert (a.image_root / item.path).read_bytes() == (b.image_root / item.path).read_bytes()


@pytest.mark.parametrize("key", td.list_toy_datasets())
def test_the_real_readers_read_every_toy_dataset(data_root: Path, key: str) -> None:
    from prometar.data import readers
    from prometar.data import splits as protocols

    splits = readers.read_dataset(key, data_root)
    classes = td.toy_dataset_classes(key, seed=5)
    assert splits.classnames == [c.name for c in classes]
    assert len(splits.train) == 16 * SIZES["train_per_class"]
    assert len(splits.test) == 16 * SIZES["test_per_class"]
    assert all(os.path.isfile(item.path) for item in splits.test)
    cut = protocols.base_new_split(splits)
    assert list(cut.base_labels) == [c.label for c in classes if c.is_base]
    assert list(cut.new_labels) == [c.label for c in classes if not c.is_base]
