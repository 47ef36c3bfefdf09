"""Dataset check: is each requested dataset present, readable and complete under the data root?

For each dataset, ``check_datasets`` reads the split source exactly as a run would
(``read_dataset``), then verifies the images:

* split-file datasets (the ``split_zhou_*.json`` ones and FGVC-Aircraft): every image the split
  names must lie inside the dataset's image root once symlinks are resolved, and must exist
  (``images="all"``, the default), or an evenly spaced sample of ``images=N`` items per dataset;
* folder datasets (ImageNet and its variants): the items were found by listing the folders, so
  they exist by construction; a class folder without any image makes the dataset unusable;
* with ``decode=True`` (the default) every checked image is also decoded, as a run would decode it,
  so a zero-byte, truncated or mislabelled file (text named ``.jpg``) is found before a trial
  meets it; each one is named. ``decode=False`` (``data check --quick``) checks existence only.

A class count different from the benchmark's is reported as a note, not a failure (miniatures
and toy worlds have fewer classes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from prometar.data.catalog import get_dataset, list_datasets
from prometar.data.readers import (
    DatasetSplits,
    Item,
    escaped_root_error,
    escapes_root,
    read_dataset,
)
from prometar.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetReport:
    """The result of checking one dataset.

    Attributes:
        key: Catalog key.
        display_name: Table name.
        usable: Whether a run can use the dataset.
        problem: Why it is unusable (names the path), else ``None``.
        missing_path: The first missing file or folder, when that is the problem.
        num_classes: Classes read, or ``None`` when unreadable.
        expected_classes: The benchmark's class count.
        sizes: Items per split read (``train``, ``val``, ``test``).
        images_checked: Image files verified to exist.
        missing_images: Count of images the split names but that are missing.
        bad_images: ``path: reason`` of every checked image that cannot be decoded.
    """

    key: str
    display_name: str
    usable: bool
    problem: str | None = None
    missing_path: str | None = None
    num_classes: int | None = None
    expected_classes: int = 0
    sizes: tuple[tuple[str, int], ...] = ()
    images_checked: int = 0
    missing_images: int = 0
    bad_images: tuple[str, ...] = ()

    def line(self) -> str:
        """One human-readable line (what ``prometar-sweep data check`` prints)."""
        if not self.usable:
            return f"{self.key:<16} MISSING  {self.problem}"
        sizes = " ".join(f"{name}={count}" for name, count in self.sizes)
        note = ""
        if self.num_classes != self.expected_classes:
            note = f" (benchmark has {self.expected_classes})"
        return (
            f"{self.key:<16} ok       classes={self.num_classes}{note} {sizes} "
            f"images_checked={self.images_checked}"
        )


def check_datasets(
    data_root: str | os.PathLike,
    keys: Iterable[str] | None = None,
    *,
    images: Literal["all"] | int = "all",
    decode: bool = True,
) -> list[DatasetReport]:
    """Check datasets under ``data_root``.

    Args:
        data_root: Folder holding all datasets.
        keys: Catalog keys; default all 15.
        images: ``"all"`` stats every image a split file names; an integer ``N`` stats an evenly
            spaced sample of ``N`` items per dataset; ``0`` skips the image check.
        decode: Also decode every checked image (False: existence only).

    Returns:
        One report per key, in the order given.

    Raises:
        DataError: An unknown key (lists the valid ones).
    """
    keys = list_datasets() if keys is None else list(keys)
    for key in keys:
        get_dataset(key)
    if images != "all" and (not isinstance(images, int) or images < 0):
        raise ValueError(f"images must be 'all' or a non-negative integer, got {images!r}")
    return [_check_one(key, data_root, images, decode) for key in keys]


def dataset_present(key: str, data_root: str | os.PathLike) -> bool:
    """Whether the dataset's folder exists under the data root (usable or not)."""
    return (Path(data_root) / get_dataset(key).folder).is_dir()


def _check_one(
    key: str, data_root: str | os.PathLike, images: Literal["all"] | int, decode: bool
) -> DatasetReport:
    info = get_dataset(key)
    base = {"key": key, "display_name": info.display_name, "expected_classes": info.num_classes}
    try:
        splits = read_dataset(key, data_root)
    except DataError as err:
        return DatasetReport(usable=False, problem=str(err), missing_path=_missing_path(str(err)), **base)
    sizes = (("train", len(splits.train)), ("val", len(splits.val)), ("test", len(splits.test)))
    problem = _structural_problem(splits, info.base_to_new)
    if problem:
        return DatasetReport(
            usable=False, problem=problem, num_classes=splits.num_classes, sizes=sizes, **base
        )
    items = splits.train + splits.val + splits.test
    listed = info.split_source not in ("split_json", "fgvc_text")  # found by listing folders: they exist
    to_check = _sample(items, images)
    if not listed:
        escaped = [item for item in to_check if escapes_root(item)]
        if escaped:
            more = f" ({len(escaped)} in all)" if len(escaped) > 1 else ""
            return DatasetReport(
                usable=False,
                problem=str(escaped_root_error(escaped[0], more)),
                num_classes=splits.num_classes,
                sizes=sizes,
                images_checked=len(to_check),
                **base,
            )
        missing = [item.path for item in to_check if not os.path.isfile(item.path)]
        if missing:
            more = f" ({len(missing)} missing in all)" if len(missing) > 1 else ""
            return DatasetReport(
                usable=False,
                problem=f"image file not found: {missing[0]}{more}",
                missing_path=missing[0],
                num_classes=splits.num_classes,
                sizes=sizes,
                images_checked=len(to_check),
                missing_images=len(missing),
                **base,
            )
    bad = find_undecodable_images([item.path for item in to_check]) if decode else []
    if bad:
        more = f" ({len(bad)} in all, each listed below)" if len(bad) > 1 else ""
        return DatasetReport(
            usable=False,
            problem=f"image cannot be decoded: {bad[0]}{more}",
            num_classes=splits.num_classes,
            sizes=sizes,
            images_checked=len(to_check),
            bad_images=tuple(bad),
            **base,
        )
    checked = len(items) if listed and not decode else len(to_check)
    return DatasetReport(
        usable=True, num_classes=splits.num_classes, sizes=sizes, images_checked=checked, **base
    )


def _decode_problem(path: str) -> str | None:
    """Why ``path`` cannot be decoded as an RGB image, else ``None``."""
    try:
        with Image.open(path) as image:
            # JPEG: decode at a reduced DCT scale; the whole entropy-coded stream is still read,
            # so truncation is found, at a fraction of the cost of a full-size decode.
            image.draft("RGB", (64, 64))
            image.convert("RGB")
    except Exception as error:  # noqa: BLE001 - PIL raises many types for a bad file
        return f"{type(error).__name__}: {str(error)[:120]}"
    return None


def find_undecodable_images(paths: list[str], *, workers: int | None = None) -> list[str]:
    """``path: reason`` for each of ``paths`` that PIL cannot decode, in input order."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without the GIL
        problems = list(pool.map(_decode_problem, paths, chunksize=64))
    return [f"{path}: {problem}" for path, problem in zip(paths, problems, strict=True) if problem]


def _structural_problem(splits: DatasetSplits, has_train: bool) -> str | None:
    """A reason the splits cannot be used even though they parsed, else ``None``."""
    if not splits.test:
        return "the test split is empty"
    if has_train and not splits.train:
        return "the train split is empty"
    labelled = {item.label for item in splits.test} | {item.label for item in splits.train}
    empty = [splits.classnames[label] for label in range(splits.num_classes) if label not in labelled]
    if empty and not has_train:
        return f"classes without images: {', '.join(empty[:5])}"
    return None


def _sample(items: list[Item], images: Literal["all"] | int) -> list[Item]:
    if images == "all" or images >= len(items):
        return items
    if images == 0:
        return []
    step = len(items) / images
    return [items[int(i * step)] for i in range(images)]


def _missing_path(message: str) -> str | None:
    """The path after 'not found: ' in a reader error, if any."""
    marker = "not found: "
    if marker not in message:
        return None
    return message.split(marker, 1)[1].split(" (", 1)[0].strip()
