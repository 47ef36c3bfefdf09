"""Data loading: a dataset over ``Item`` lists, a seeded sampler and a ``DataLoader`` builder.

Images are opened with PIL and converted to RGB. An image whose file resolves (symlinks
followed, at the time it is opened) outside its dataset's image root is refused with a
``DataError`` naming the split file and entry; a missing or unreadable image raises
``DataError`` naming the path and the item (also from a worker process, where the DataLoader
re-raises it in the main process); ``build_loader`` checks that every file exists before any
worker starts, by default.

Random augmentation does not depend on the worker processes: ``SeededSampler`` draws, in the main
process, the epoch's order *and one seed per item* from the generator it is given, and
``ImageDataset`` applies the transform to an ``(index, seed)`` request under that seed. The
batches are therefore the same for any ``num_workers`` (which is why worker counts stay out of
trial keys), and workers may persist across epochs without changing what a resumed run sees.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from prometar.data.readers import Item, escaped_root_error, escapes_root
from prometar.errors import DataError


class ImageDataset(Dataset):
    """Items as ``(image, label)`` pairs.

    Args:
        items: The items to serve.
        transform: Applied to the RGB PIL image (e.g. ``build_test_transform(...)``); ``None``
            returns the PIL image.
    """

    def __init__(self, items: Sequence[Item], transform: Callable | None = None) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, request: int | tuple[int, int]) -> tuple[object, int]:
        """The item at ``request`` (an index), or at ``(index, seed)``: transformed under ``seed``.

        Under a seed the transform draws from torch's global generator seeded with it, and the
        generator's previous state is restored afterwards.
        """
        index, seed = request if isinstance(request, tuple) else (request, None)
        item = self.items[index]
        if escapes_root(item):  # a symlink swapped in after the checks: never read outside the root
            raise escaped_root_error(item)
        image = load_image(item.path, entry=f"item {index}, label {item.label} ({item.classname})")
        if self.transform is not None:
            if seed is None:
                image = self.transform(image)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    image = self.transform(image)
        return image, item.label


class SeededSampler(Sampler):
    """Yields ``(index, seed)`` for every item, in a fresh order each pass.

    Each pass (epoch) draws from ``generator`` in the main process: a permutation of the items
    (``shuffle``) and one 63-bit seed per item, which ``ImageDataset`` uses for that item's random
    transform. Reseeding the generator before a pass fixes the whole pass — order and
    augmentation — whatever the number of loader workers, and however long they have lived.

    Args:
        size: Number of items.
        generator: Where each pass draws from (the trainer reseeds it per epoch).
        shuffle: Permute the items each pass; False keeps their order (seeds still drawn).
    """

    def __init__(self, size: int, generator: torch.Generator, *, shuffle: bool = True) -> None:
        self.size = size
        self.generator = generator
        self.shuffle = shuffle

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        order = (
            torch.randperm(self.size, generator=self.generator) if self.shuffle else torch.arange(self.size)
        )
        seeds = torch.randint(0, 2**63 - 1, (self.size,), generator=self.generator)
        return iter(list(zip(order.tolist(), seeds.tolist(), strict=True)))


def load_image(path: str, *, entry: str = "") -> Image.Image:
    """Open an image as RGB, raising ``DataError`` naming the path when it is missing or corrupt."""
    where = f" ({entry})" if entry else ""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}{where}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"cannot read image {path}{where}: {err}") from None


def find_missing_files(items: Sequence[Item]) -> list[str]:
    """Return the paths of ``items`` that are not existing files (one stat per item)."""
    return [item.path for item in items if not os.path.isfile(item.path)]


def build_loader(
    items: Sequence[Item],
    transform: Callable | None,
    *,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    drop_last: bool = False,
    seed: int | None = None,
    check_files: bool = True,
) -> DataLoader:
    """Build a ``DataLoader`` over items.

    Args:
        items: The items to load.
        transform: Image transform (``transforms.py``).
        batch_size: Items per batch.
        shuffle: Reshuffle every epoch.
        num_workers: Worker processes (0 loads in the calling process, as tests do).
        pin_memory: Pin batches for faster host-to-device copies.
        persistent_workers: Keep workers alive between epochs (ignored without workers).
        drop_last: Drop the last incomplete batch (the official run trains with it).
        seed: Seeds the shuffling generator, so the order is reproducible.
        check_files: Stat every item first and raise on missing files before any worker starts.

    Raises:
        DataError: ``check_files`` found missing images (the message names the first ones), or
            there are no items.
    """
    if not items:
        raise DataError("no items to load")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if check_files:
        missing = find_missing_files(items)
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise DataError(f"image file(s) not found: {', '.join(missing[:3])}{more}")
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    return DataLoader(
        ImageDataset(items, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
        drop_last=drop_last,
        generator=generator,
    )
