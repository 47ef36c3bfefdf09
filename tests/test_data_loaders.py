"""Transforms (algorithm.md §5) and loaders: shapes, normalisation, and errors that name the path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop, Resize

from prometar.data import (
    DataError,
    ImageDataset,
    build_loader,
    build_test_transform,
    build_train_transform,
    few_shot,
    read_dataset,
    write_miniatures,
)

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture()
def mini_root(tmp_path) -> Path:
    write_miniatures(tmp_path, ["oxford_pets"])
    return tmp_path


def test_train_transform_matches_the_official_recipe():
    transform = build_train_transform(32, MEAN, STD)
    crop = next(t for t in transform.transforms if isinstance(t, RandomResizedCrop))
    assert crop.scale == (0.08, 1.0) and crop.interpolation == InterpolationMode.BICUBIC
    names = [type(t).__name__ for t in transform.transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    out = transform(Image.new("RGB", (50, 40), (255, 0, 0)))
    assert out.shape == (3, 32, 32)
    # a pure red image normalises to (1 - mean) / std in the red channel everywhere
    assert torch.allclose(out[0], torch.full((32, 32), (1 - MEAN[0]) / STD[0]), atol=1e-4)


def test_test_transform_resizes_short_side_and_centre_crops():
    transform = build_test_transform(24, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    resize = next(t for t in transform.transforms if isinstance(t, Resize))
    assert resize.size == 24 and resize.interpolation == InterpolationMode.BICUBIC
    image = Image.new("RGB", (96, 48), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 16, 48))  # white left sixth, cropped away by the centre crop
    out = transform(image)
    assert out.shape == (3, 24, 24)
    assert torch.allclose(out, torch.full_like(out, -1.0), atol=1e-3)


def test_transform_arguments_are_validated():
    with pytest.raises(ValueError):
        build_test_transform(0, MEAN, STD)
    with pytest.raises(ValueError):
        build_train_transform(224, MEAN[:2], STD)


def test_loader_batches_few_shot_items(mini_root):
    splits = read_dataset("oxford_pets", mini_root)
    sampled = few_shot(splits, key="oxford_pets", data_root=mini_root, shots=2, seed=1, use_cache=False)
    loader = build_loader(sampled.train, build_train_transform(16, MEAN, STD), batch_size=4, shuffle=True,
                          drop_last=True, seed=0)
    batches = list(loader)
    assert len(batches) == len(sampled.train) // 4
    images, labels = batches[0]
    assert images.shape == (4, 3, 16, 16) and labels.dtype == torch.int64
    order = [int(y) for _, ys in build_loader(sampled.train, build_test_transform(16, MEAN, STD),
                                              batch_size=3, shuffle=True, seed=5) for y in ys]
    again = [int(y) for _, ys in build_loader(sampled.train, build_test_transform(16, MEAN, STD),
                                              batch_size=3, shuffle=True, seed=5) for y in ys]
    assert order == again and sorted(order) == sorted(i.label for i in sampled.train)


def test_missing_image_is_named_before_loading(mini_root):
    splits = read_dataset("oxford_pets", mini_root)
    gone = Path(splits.test[3].path)
    gone.unlink()
    with pytest.raises(DataError, match=str(gone)):
        build_loader(splits.test, build_test_transform(16, MEAN, STD), batch_size=2)


def test_missing_or_corrupt_image_error_names_path_and_item(mini_root):
    splits = read_dataset("oxford_pets", mini_root)
    corrupt = Path(splits.test[1].path)
    corrupt.write_bytes(b"not a jpeg")
    dataset = ImageDataset(splits.test, build_test_transform(16, MEAN, STD))
    with pytest.raises(DataError, match=f"{corrupt}.*item 1"):
        dataset[1]
    Path(splits.test[0].path).unlink()
    with pytest.raises(DataError, match=f"image file not found: {splits.test[0].path}"):
        dataset[0]


def test_corrupt_image_in_a_worker_names_the_path(mini_root):
    splits = read_dataset("oxford_pets", mini_root)
    corrupt = Path(splits.test[2].path)
    corrupt.write_bytes(b"\x89PNG garbage")
    loader = build_loader(splits.test[:4], build_test_transform(16, MEAN, STD), batch_size=4, num_workers=1)
    with pytest.raises(DataError, match=str(corrupt)):
        list(loader)
