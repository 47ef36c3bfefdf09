"""Readers, catalog and dataset check on the miniature copies of all 15 layouts."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration.cli import main
from prometar.data.catalog import get_dataset, list_datasets
from prometar.data.check import check_datasets
from prometar.data.readers import read_dataset
from prometar.errors import DataError
from prometar.protocols import get_protocol
from prometar.toy.miniature import write_miniatures

ALL_KEYS = [
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
    "imagenet_v2",
    "imagenet_sketch",
    "imagenet_a",
    "imagenet_r",
]
IMAGENET_NAMES = [
    "tench",
    "goldfish",
    "great white shark",
    "tiger shark",
    "hammerhead shark",
    "electric ray",
    "stingray",
]


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_miniatures(root)
    return root


@pytest.fixture()
def fresh_root(tmp_path) -> Path:
    return tmp_path


def test_catalog_keys_names_and_templates():
    assert list_datasets() == ALL_KEYS
    names = [get_dataset(k).display_name for k in ALL_KEYS]
    assert names == [
        "ImageNet",
        "Caltech101",
        "OxfordPets",
        "StanfordCars",
        "Flowers102",
        "Food101",
        "FGVCAircraft",
        "SUN397",
        "DTD",
        "EuroSAT",
        "UCF101",
        "ImageNetV2",
        "ImageNet-Sketch",
        "ImageNet-A",
        "ImageNet-R",
    ]
    counts = [get_dataset(k).num_classes for k in ALL_KEYS]
    assert counts == [1000, 100, 37, 196, 102, 101, 100, 397, 47, 10, 101, 1000, 1000, 200, 200]
    assert get_dataset("dtd").template.format("banded") == "banded texture."
    assert get_dataset("eurosat").template == "a centered satellite photo of {}."
    assert get_dataset("imagenet_r").template == "a photo of a {}."
    assert get_dataset("stanford_cars").image_root == ""
    assert get_dataset("sun397").split_file == "split_zhou_SUN397.json"


def test_unknown_key_lists_valid_keys():
    with pytest.raises(DataError) as err:
        get_dataset("imagenet21k")
    assert "imagenet21k" in str(err.value) and "oxford_pets" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_generalization_targets():
    assert list(get_protocol("domain_generalization").default_targets) == [
        "imagenet_v2",
        "imagenet_sketch",
        "imagenet_a",
        "imagenet_r",
    ]
    cross = get_protocol("cross_dataset").default_targets
    assert len(cross) == 10 and "imagenet" not in cross
    assert cross[0] == "caltech101"
    assert get_protocol("all_classes").default_targets == ()  # takes no targets
    with pytest.raises(KeyError):
        get_protocol("few_shot")  # the sweep files' name, not the run protocol


def test_split_json_reader(mini_root):
    splits = read_dataset("eurosat", mini_root)
    assert splits.classnames == [
        "Annual Crop Land",
        "Forest",
        "Herbaceous Vegetation Land",
        "Highway or Road",
        "Industrial Buildings",
    ]
    # 4 train images per class, the last class 2; 2 val and 2 test per class
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 10, 10)
    assert [sum(i.label == c for i in splits.train) for c in range(5)] == [4, 4, 4, 4, 2]
    first = splits.train[0]
    assert first.path == str(mini_root / "eurosat" / "2750" / "AnnualCrop" / "AnnualCrop_1.jpg")
    assert os.path.isabs(first.path) and first.label == 0 and first.classname == "Annual Crop Land"
    assert all(splits.classnames[i.label] == i.classname for i in splits.train + splits.val + splits.test)


def test_stanford_cars_image_root_is_dataset_folder(mini_root):
    splits = read_dataset("stanford_cars", mini_root)
    assert splits.test[0].path.startswith(str(mini_root / "stanford_cars" / "cars_test") + os.sep)
    assert splits.train[0].path.startswith(str(mini_root / "stanford_cars" / "cars_train") + os.sep)


@pytest.mark.parametrize(
    "key,names",
    [
        ("caltech101", ["accordion", "face", "leopard", "airplane", "anchor"]),
        ("oxford_pets", ["abyssinian", "american_bulldog", "basset_hound", "bengal", "beagle"]),
        ("sun397", ["abbey", "airplane cabin", "shop bakery", "bamboo forest", "cathedral outdoor"]),
        ("ucf101", ["Apply_Eye_Makeup", "Apply_Lipstick", "Archery", "Baby_Crawling", "Balance_Beam"]),
        ("fgvc_aircraft", ["707-320", "727-200", "A300B4", "Cessna 172", "DC-3"]),
    ],
)
def test_five_class_readers(mini_root, key, names):
    splits = read_dataset(key, mini_root)
    assert splits.classnames == names
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 10, 10)
    assert sorted({i.label for i in splits.test}) == [0, 1, 2, 3, 4]
    assert all(os.path.isfile(i.path) for i in splits.train + splits.val + splits.test)


def test_fgvc_paths_and_multiword_variant(mini_root):
    splits = read_dataset("fgvc_aircraft", mini_root)
    cessna = [i for i in splits.train if i.label == 3]
    assert cessna and all(i.classname == "Cessna 172" for i in cessna)
    assert all(Path(i.path).parent == mini_root / "fgvc_aircraft" / "images" for i in splits.test)
    assert all(i.path.endswith(".jpg") for i in splits.test)


def test_imagenet_reader(mini_root):
    splits = read_dataset("imagenet", mini_root)
    assert splits.classnames == IMAGENET_NAMES
    assert len(splits.train) == 6 * 4 + 2 and len(splits.test) == 14
    assert splits.val == []  # no released val split; the val folder is the test set
    assert all("/images/val/" in i.path for i in splits.test)
    goldfish = [i for i in splits.train if i.label == 1]
    assert len(goldfish) == 4 and all("/n01443537/" in i.path for i in goldfish)


def test_imagenet_v2_and_sketch(mini_root):
    v2 = read_dataset("imagenet_v2", mini_root)
    assert v2.classnames == IMAGENET_NAMES and v2.train == [] and v2.val == []
    assert sorted({i.label for i in v2.test}) == list(range(7))
    assert all(Path(i.path).parent.name == str(i.label) for i in v2.test)
    sketch = read_dataset("imagenet_sketch", mini_root)
    assert sketch.classnames == IMAGENET_NAMES and len(sketch.test) == 14
    assert all(
        Path(i.path).parent.name
        == ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331", "n01498041"][
            i.label
        ]
        for i in sketch.test
    )


def test_imagenet_a_and_r_use_sorted_present_wnids(mini_root):
    a = read_dataset("imagenet_a", mini_root)
    assert a.classnames == ["goldfish", "tiger shark", "hammerhead shark", "stingray"]
    assert [Path(i.path).parent.name for i in a.test if i.label == 3][0] == "n01498041"
    r = read_dataset("imagenet_r", mini_root)
    assert r.classnames == ["tench", "great white shark", "electric ray", "stingray"]
    assert sorted({i.label for i in r.test}) == [0, 1, 2, 3]
    assert all(r.classnames[i.label] == i.classname for i in r.test)


# ---------------------------------------------------------------------------------------------
# bad input


def test_missing_split_file_names_the_path(fresh_root):
    write_miniatures(fresh_root, ["dtd"])
    split = fresh_root / "dtd" / "split_zhou_DescribableTextures.json"
    split.unlink()
    with pytest.raises(DataError, match=str(split)):
        read_dataset("dtd", fresh_root)


def test_missing_image_folder_names_the_path(fresh_root):
    write_miniatures(fresh_root, ["food101", "imagenet_r"])
    os.rename(fresh_root / "food-101" / "images", fresh_root / "food-101" / "imgs")
    with pytest.raises(DataError, match=str(fresh_root / "food-101" / "images")):
        read_dataset("food101", fresh_root)
    os.rename(fresh_root / "imagenet-rendition" / "imagenet-r", fresh_root / "imagenet-rendition" / "x")
    with pytest.raises(DataError, match="imagenet-rendition/imagenet-r"):
        read_dataset("imagenet_r", fresh_root)
    with pytest.raises(DataError, match="dataset folder not found"):
        read_dataset("dtd", fresh_root)


def test_malformed_json_names_the_path(fresh_root):
    write_miniatures(fresh_root, ["oxford_pets"])
    split = fresh_root / "oxford_pets" / "split_zhou_OxfordPets.json"
    split.write_text(split.read_text()[:-20])
    with pytest.raises(DataError, match="malformed JSON") as err:
        read_dataset("oxford_pets", fresh_root)
    assert str(split) in str(err.value)


def test_malformed_entry_names_the_entry(fresh_root):
    write_miniatures(fresh_root, ["oxford_pets"])
    split = fresh_root / "oxford_pets" / "split_zhou_OxfordPets.json"
    data = json.loads(split.read_text())
    data["val"][3] = ["Bengal_9.jpg", "two", "bengal"]
    split.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"val\[3\]") as err:
        read_dataset("oxford_pets", fresh_root)
    assert str(split) in str(err.value)


def test_label_out_of_range_names_path_and_entry(fresh_root):
    write_miniatures(fresh_root, ["caltech101", "fgvc_aircraft", "imagenet_v2"])
    split = fresh_root / "caltech-101" / "split_zhou_Caltech101.json"
    data = json.loads(split.read_text())
    data["test"][7][1] = 5  # the train split has labels 0..4
    split.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"test\[7\]: label 5 out of range") as err:
        read_dataset("caltech101", fresh_root)
    assert str(split) in str(err.value)

    lines = fresh_root / "fgvc_aircraft" / "images_variant_val.txt"
    text = lines.read_text().splitlines()
    text[1] = text[1].split(" ")[0] + " Concorde"
    lines.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=f"{lines}:2: variant 'Concorde'"):
        read_dataset("fgvc_aircraft", fresh_root)

    os.rename(
        fresh_root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / "6",
        fresh_root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / "7",
    )
    with pytest.raises(DataError, match="label 7 out of range"):
        read_dataset("imagenet_v2", fresh_root)


def test_train_label_gap_is_an_error(fresh_root):
    write_miniatures(fresh_root, ["dtd"])
    split = fresh_root / "dtd" / "split_zhou_DescribableTextures.json"
    data = json.loads(split.read_text())
    for split_name in ("train", "val", "test"):
        data[split_name] = [row for row in data[split_name] if row[1] != 2]
    split.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"missing label\(s\) \[2\]"):
        read_dataset("dtd", fresh_root)


def test_unknown_wnid_folder_is_an_error(fresh_root):
    write_miniatures(fresh_root, ["imagenet_a"])
    stray = fresh_root / "imagenet-adversarial" / "imagenet-a" / "n99999999"
    stray.mkdir()
    with pytest.raises(DataError, match=str(stray)):
        read_dataset("imagenet_a", fresh_root)


# ---------------------------------------------------------------------------------------------
# data check


def test_check_reports_all_15_usable(mini_root):
    reports = check_datasets(mini_root)
    assert [r.key for r in reports] == ALL_KEYS
    assert all(r.usable for r in reports), [r.line() for r in reports if not r.usable]
    by_key = {r.key: r for r in reports}
    assert by_key["eurosat"].num_classes == 5 and dict(by_key["eurosat"].sizes) == {
        "train": 18,
        "val": 10,
        "test": 10,
    }
    assert by_key["eurosat"].images_checked == 38
    assert by_key["imagenet_a"].num_classes == 4


def test_check_sample_stats_fewer_images(mini_root):
    (report,) = check_datasets(mini_root, ["food101"], images=5)
    assert report.usable and report.images_checked == 5


def test_cli_data_check_all_usable(mini_root):
    result = CliRunner().invoke(main, ["data", "check", "--data-root", str(mini_root)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 15 and all(" ok " in line for line in lines)


def test_cli_data_check_names_removed_file_and_exits_2(fresh_root):
    write_miniatures(fresh_root, ["oxford_flowers", "ucf101"])
    removed = fresh_root / "oxford_flowers" / "jpg" / "image_00007.jpg"
    removed.unlink()
    result = CliRunner().invoke(
        main,
        [
            "data",
            "check",
            "--data-root",
            str(fresh_root),
            "--dataset",
            "oxford_flowers",
            "--dataset",
            "ucf101",
        ],
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("oxford_flowers") and "MISSING" in lines[0] and str(removed) in lines[0]
    assert lines[1].startswith("ucf101") and " ok " in lines[1]


def test_cli_data_check_reports_missing_dataset_folder(fresh_root):
    result = CliRunner().invoke(main, ["data", "check", "--data-root", str(fresh_root), "--dataset", "dtd"])
    assert result.exit_code == 2
    assert str(fresh_root / "dtd") in result.output


def test_cli_data_check_unknown_key_exits_2(fresh_root):
    result = CliRunner().invoke(main, ["data", "check", "--data-root", str(fresh_root), "--dataset", "mnist"])
    assert result.exit_code == 2
    assert "mnist" in result.output and "caltech101" in result.output


def test_reader_does_not_stat_images_but_check_does(fresh_root):
    write_miniatures(fresh_root, ["sun397"])
    splits = read_dataset("sun397", fresh_root)
    for item in splits.val:
        os.unlink(item.path)
    assert read_dataset("sun397", fresh_root) == splits  # the split file is trusted when reading
    (report,) = check_datasets(fresh_root, ["sun397"])
    assert not report.usable and report.missing_images == len(splits.val)
    assert report.missing_path == splits.val[0].path


def corrupt_three_images(root: Path, key: str) -> list[str]:
    """Turn three of a dataset's images into a zero-byte, a truncated and a text file."""
    splits = read_dataset(key, root)
    items = splits.train + splits.val + splits.test
    paths = [items[0].path, items[len(items) // 2].path, items[-1].path]
    Path(paths[0]).write_bytes(b"")
    data = Path(paths[1]).read_bytes()
    Path(paths[1]).write_bytes(data[: len(data) // 2])
    Path(paths[2]).write_text("this is not an image\n")
    return paths


@pytest.mark.parametrize("key", ["dtd", "imagenet_a"])  # a split-file dataset and a folder dataset
def test_check_decodes_images_and_names_every_bad_one(fresh_root, key):
    write_miniatures(fresh_root, [key])
    bad = corrupt_three_images(fresh_root, key)
    (report,) = check_datasets(fresh_root, [key])
    assert not report.usable and "cannot be decoded" in report.problem
    assert sorted(line.split(": ", 1)[0] for line in report.bad_images) == sorted(bad)
    (quick,) = check_datasets(fresh_root, [key], decode=False)
    assert quick.usable  # existence only


def test_cli_data_check_lists_undecodable_images_and_quick_skips_decoding(fresh_root):
    write_miniatures(fresh_root, ["dtd"])
    bad = corrupt_three_images(fresh_root, "dtd")
    result = CliRunner().invoke(main, ["data", "check", "--data-root", str(fresh_root), "--dataset", "dtd"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    listed = [line for line in result.output.splitlines() if line.startswith("  cannot decode ")]
    assert sorted(line.split()[2].rstrip(":") for line in listed) == sorted(bad)
    quick = CliRunner().invoke(
        main, ["data", "check", "--data-root", str(fresh_root), "--dataset", "dtd", "--quick"]
    )
    assert quick.exit_code == 0 and " ok " in quick.output


def test_a_corrupt_image_met_by_a_loader_names_the_file(fresh_root):
    from prometar.data.loaders import ImageDataset
    from prometar.errors import DataError

    write_miniatures(fresh_root, ["dtd"])
    bad = corrupt_three_images(fresh_root, "dtd")
    splits = read_dataset("dtd", fresh_root)
    dataset = ImageDataset(splits.train + splits.val + splits.test)
    for index, path in zip((0, len(dataset) // 2, len(dataset) - 1), bad, strict=True):
        with pytest.raises(DataError, match=re.escape(path)):
            dataset[index]


def test_miniatures_are_deterministic_per_seed(tmp_path):
    def snapshot(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    info = write_miniatures(tmp_path / "a", ["sun397", "imagenet_a"], seed=3)
    write_miniatures(tmp_path / "b", ["sun397", "imagenet_a"], seed=3)
    write_miniatures(tmp_path / "c", ["sun397", "imagenet_a"], seed=4)
    first = snapshot(tmp_path / "a")
    assert first == snapshot(tmp_path / "b")
    assert first != snapshot(tmp_path / "c")
    assert info["sun397"].train == len(read_dataset("sun397", tmp_path / "a").train)
    assert "sun397/split_zhou_SUN397.json" in first


def test_an_unreadable_split_file_is_a_data_error_naming_it(fresh_root, monkeypatch):
    write_miniatures(fresh_root, ["dtd"])
    split = fresh_root / "dtd" / "split_zhou_DescribableTextures.json"
    real_open = os.open

    def refuse(file, *args, **kwargs):  # what chmod 0 does for a user who is not root
        if str(file) == str(split):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(DataError, match=re.escape(f"{split}: cannot be read (Permission denied)")):
        read_dataset("dtd", fresh_root)
