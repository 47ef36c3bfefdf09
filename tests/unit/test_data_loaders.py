"""Transforms (docs/algorithm.md §5) and loaders: shapes, normalisation, and errors that name the path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode, RandomResizedCrop, Resize

from prometar.data.fewshot import few_shot
from prometar.data.loaders import ImageDataset, SeededSampler, build_loader
from prometar.data.readers import read_dataset
from prometar.data.transforms import build_test_transform, build_train_transform
from prometar.errors import DataError
from prometar.toy.miniature import write_miniatures

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
    loader = build_loader(
        sampled.train,
        build_train_transform(16, MEAN, STD),
        batch_size=4,
        shuffle=True,
        drop_last=True,
        seed=0,
    )
    batches = list(loader)
    assert len(batches) == len(sampled.train) // 4
    images, labels = batches[0]
    assert images.shape == (4, 3, 16, 16) and labels.dtype == torch.int64
    order = [
        int(y)
        for _, ys in build_loader(
            sampled.train, build_test_transform(16, MEAN, STD), batch_size=3, shuffle=True, seed=5
        )
        for y in ys
    ]
    again = [
        int(y)
        for _, ys in build_loader(
            sampled.train, build_test_transform(16, MEAN, STD), batch_size=3, shuffle=True, seed=5
        )
        for y in ys
    ]
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


def _epochs(dataset: ImageDataset, *, workers: int, persistent: bool, seeds: list[int]) -> list[torch.Tensor]:
    """Every epoch's images through one loader; the sampler's generator reseeded per epoch."""
    generator = torch.Generator()
    loader = DataLoader(
        dataset,
        batch_size=4,
        sampler=SeededSampler(len(dataset), generator),
        num_workers=workers,
        persistent_workers=persistent,
        generator=torch.Generator().manual_seed(0),
    )  # worker seeds (as prometar.run)
    epochs = []
    for seed in seeds:
        generator.manual_seed(seed)
        epochs.append(torch.cat([images for images, _ in loader]))
    return epochs


def test_augmented_batches_do_not_depend_on_the_workers(mini_root):
    """Order and augmentation come from the sampler's generator, not from worker RNG streams."""
    splits = read_dataset("oxford_pets", mini_root)
    dataset = ImageDataset(splits.train[:12], build_train_transform(32, MEAN, STD))
    torch.manual_seed(7)
    before = torch.get_rng_state()
    inline = _epochs(dataset, workers=0, persistent=False, seeds=[11, 12, 11])
    assert torch.equal(torch.get_rng_state(), before)  # the caller's global generator is left alone
    assert not torch.equal(inline[0], inline[1]) and torch.equal(inline[0], inline[2])
    for workers, persistent in ((1, True), (2, False), (2, True)):
        epochs = _epochs(dataset, workers=workers, persistent=persistent, seeds=[11, 12, 11])
        assert all(torch.equal(a, b) for a, b in zip(inline, epochs, strict=True)), (workers, persistent)


def test_seeded_sampler_draws_order_and_one_seed_per_item():
    generator = torch.Generator().manual_seed(3)
    pairs = list(SeededSampler(10, generator))
    assert sorted(index for index, _ in pairs) == list(range(10)) and len(SeededSampler(10, generator)) == 10
    assert len({seed for _, seed in pairs}) == 10 and all(0 <= seed < 2**63 for _, seed in pairs)
    assert [i for i, _ in SeededSampler(5, generator, shuffle=False)] == [0, 1, 2, 3, 4]
    generator.manual_seed(3)
    assert list(SeededSampler(10, generator)) == pairs
