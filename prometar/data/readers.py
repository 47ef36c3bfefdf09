"""Dataset readers: the field's on-disk layouts into (image path, label, class name) lists.

Readers are driven by the layout alone (``catalog.py`` says which layout a dataset uses). They never
re-split: a missing split file is an error naming the expected path. They do not open or stat
individual images: JSON and text split files are trusted for file existence (``check.py`` verifies
it, and the loader names any missing file), and folder layouts are listed with ``os.scandir``.

Split sources:

* ``split_zhou_*.json`` - ``{"train"|"val"|"test": [[relative path, label, class name], ...]}``;
  the classes are the labels of the train split, which must be exactly ``0..n-1``.
* FGVC-Aircraft - ``variants.txt`` (line order = label) and ``images_variant_<split>.txt``.
* ImageNet - ``classnames.txt`` (``<wnid> <name>``, label order) and ``images/{train,val}/<wnid>/``.
  ImageNet has no released validation split; the field evaluates on the official val folder
  (our ``test``). We leave ``val`` empty rather than reuse the test set, so that nothing that
  selects on validation data can see test images; ``fewshot.py`` draws a held-out few-shot
  validation set from the remaining training images instead.
* ImageNetV2 - ``<root>/<label>/`` folders, names from ``classnames.txt``; test only.
* ImageNet-Sketch - ``<root>/<wnid>/`` folders, label = the wnid's ``classnames.txt`` line; test only.
* ImageNet-A/-R - the wnid folders present, sorted, are labels ``0..k-1``, named from
  ``classnames.txt``; test only.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from prometar.data.catalog import DatasetInfo, get_dataset
from prometar.errors import DataError, InputFileError
from prometar.files import MAX_DATA_FILE_BYTES, read_input_bytes
from prometar.yamlio import shorten

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Item:
    """One labelled image.

    Attributes:
        path: Absolute path of the image file.
        label: 0-based label in the dataset's label order.
        classname: Class name as the split source spells it (``_`` kept).
        root: The image root the file must stay inside, symlinks resolved (checked again when the
            loader opens it: :func:`escapes_root`); empty: not checked.
        origin: Where the split source names it (``<split file>: train[3]``); empty for listed folders.
    """

    path: str
    label: int
    classname: str
    root: str = field(default="", compare=False, repr=False)
    origin: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class DatasetSplits:
    """Train / val / test items and the class names in label order (``classnames[label]``)."""

    train: list[Item]
    val: list[Item]
    test: list[Item]
    classnames: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``classnames``)."""
        return len(self.classnames)


def dataset_dir(key: str, data_root: str | os.PathLike) -> Path:
    """Return the absolute folder of dataset ``key`` under ``data_root``."""
    return Path(os.path.abspath(data_root)) / get_dataset(key).folder


def image_root(key: str, data_root: str | os.PathLike) -> Path:
    """Return the absolute image root of dataset ``key`` under ``data_root``."""
    info = get_dataset(key)
    folder = dataset_dir(key, data_root)
    return folder / info.image_root if info.image_root else folder


def check_relative_image_path(entry: str, root: Path, *, where: str) -> None:
    """Refuse an image path from a split file that is not a plain path inside ``root``.

    Only relative paths without ``..`` components are accepted (checked on the text, no file
    system access); :func:`escapes_root` also resolves symlinks (``data check``, the preflight, and
    the loader when it opens the file).

    Raises:
        DataError: An empty, absolute or ``..`` path; names ``where`` (file and entry) and the path.
    """
    parts = entry.replace("\\", "/").split("/")
    if entry == "" or os.path.isabs(entry) or entry.startswith(("/", "\\")) or ".." in parts:
        raise DataError(
            f"{where}: image path {shorten(entry)} is not inside the image root {root} (image paths "
            "are relative to it, without '..' or a leading '/')"
        )


@functools.lru_cache(maxsize=64)
def _real_root(root: str) -> str:
    return os.path.realpath(root)


def escapes_root(item: Item) -> bool:
    """Whether the item's file, symlinks resolved now, lies outside its image root (resolved once)."""
    if not item.root:
        return False
    real_root = _real_root(item.root)
    return os.path.commonpath([real_root, os.path.realpath(item.path)]) != real_root


def escaped_root_error(item: Item, more: str = "") -> DataError:
    """The refusal of an item whose file resolves outside its image root: names the split file and
    entry (``item.origin``), the path and the root."""
    where = f"{item.origin}: " if item.origin else ""
    return DataError(
        f"{where}image {item.path} resolves to a place outside the image root {item.root}{more} "
        "(a symlink out of it?)"
    )


def read_dataset(key: str, data_root: str | os.PathLike) -> DatasetSplits:
    """Read a dataset's splits from its on-disk layout.

    Args:
        key: Catalog key (``list_datasets()``).
        data_root: Folder holding all datasets (``$DATA``).

    Returns:
        The train / val / test items (absolute paths) and the class names in label order. Test-only
        datasets (the ImageNet variants) have empty ``train`` and ``val``; ImageNet has an empty
        ``val`` (see the module docstring).

    Raises:
        DataError: Unknown key, missing folder or split file, malformed split file, label out of
            range; the message names the path and the entry.
    """
    info = get_dataset(key)
    folder = dataset_dir(key, data_root)
    if not folder.is_dir():
        raise DataError(f"{info.display_name}: dataset folder not found: {folder}")
    root = image_root(key, data_root)
    if not root.is_dir():
        raise DataError(f"{info.display_name}: image folder not found: {root}")
    reader = _READERS[info.split_source]
    splits = reader(info, folder, root)
    logger.debug(
        "read %s: %d classes, train/val/test = %d/%d/%d",
        key,
        splits.num_classes,
        len(splits.train),
        len(splits.val),
        len(splits.test),
    )
    return splits


# ---------------------------------------------------------------------------------------------
# split_zhou_*.json


def _read_split_json(info: DatasetInfo, folder: Path, root: Path) -> DatasetSplits:
    assert info.split_file is not None
    path = folder / info.split_file
    if not path.is_file():
        raise DataError(
            f"{info.display_name}: split file not found: {path} (the released split files are "
            "required; nothing is re-split)"
        )
    try:
        raw = json.loads(read_input_bytes(path, max_bytes=MAX_DATA_FILE_BYTES))
    except InputFileError as err:  # permissions, a FIFO, too large, a vanished mount
        raise DataError(str(err)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: malformed JSON: {err}") from None
    except RecursionError:
        raise DataError(
            f"{path}: malformed JSON: nested too deeply (a split file is an object of lists of "
            "[path, label, class name])"
        ) from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an object with keys train, val, test, got {type(raw).__name__}")
    missing = [name for name in SPLIT_NAMES if name not in raw]
    if missing:
        raise DataError(f"{path}: missing split(s) {', '.join(missing)}")

    entries: dict[str, list[tuple[str, int, str]]] = {}
    for split in SPLIT_NAMES:
        rows = raw[split]
        if not isinstance(rows, list):
            raise DataError(f"{path}: {split!r} must be a list of [path, label, class name]")
        parsed = []
        for index, row in enumerate(rows):  # entry ``index`` of ``split``: its position in the file
            if (
                not isinstance(row, list)
                or len(row) != 3
                or not isinstance(row[0], str)
                or isinstance(row[1], bool)
                or not isinstance(row[1], int)
                or not isinstance(row[2], str)
            ):
                raise DataError(
                    f"{path}: {split}[{index}] = {shorten(row)} is not [relative path, integer label, "
                    "class name]"
                )
            check_relative_image_path(row[0], root, where=f"{path}: {split}[{index}]")
            parsed.append((row[0], row[1], row[2]))
        entries[split] = parsed

    names: dict[int, str] = {}
    for split in SPLIT_NAMES:
        for index, (_, label, name) in enumerate(entries[split]):
            if split == "train":
                if label < 0:
                    raise DataError(f"{path}: {split}[{index}]: label {label} out of range (negative)")
                known = names.setdefault(label, name)
            else:
                known = names.get(label)
                if known is None:
                    raise DataError(
                        f"{path}: {split}[{index}]: label {label} out of range: the train split has "
                        f"labels 0..{len(names) - 1}"
                    )
            if known != name:
                raise DataError(
                    f"{path}: {split}[{index}]: class name {name!r} for label {label} conflicts with "
                    f"{known!r}"
                )
    if not names:
        raise DataError(f"{path}: the train split is empty")
    if max(names) >= len(names):  # labels must be exactly 0..n-1; never allocate up to the largest
        gaps = [label for label in range(len(names)) if label not in names][:10]
        raise DataError(
            f"{path}: train labels must be 0..{len(names) - 1} (one per class name) without gaps; "
            f"the largest is {max(names)}, missing label(s) {gaps}"
        )
    classnames = [names[label] for label in range(len(names))]
    prefix = str(root)
    splits = {
        split: [
            Item(os.path.join(prefix, rel), label, name, root=prefix, origin=f"{path}: {split}[{index}]")
            for index, (rel, label, name) in enumerate(entries[split])
        ]
        for split in SPLIT_NAMES
    }
    return DatasetSplits(splits["train"], splits["val"], splits["test"], classnames)


# ---------------------------------------------------------------------------------------------
# FGVC-Aircraft text files


def _read_fgvc(info: DatasetInfo, folder: Path, root: Path) -> DatasetSplits:
    variants_path = folder / "variants.txt"
    variants = [line.strip() for line in _read_lines(variants_path, info) if line.strip()]
    if not variants:
        raise DataError(f"{variants_path}: no variants listed")
    if len(set(variants)) != len(variants):
        raise DataError(f"{variants_path}: duplicate variant names")
    label_of = {name: label for label, name in enumerate(variants)}
    splits: dict[str, list[Item]] = {}
    for split in SPLIT_NAMES:
        path = folder / f"images_variant_{split}.txt"
        items = []
        for number, line in enumerate(_read_lines(path, info), start=1):
            line = line.strip()
            if not line:
                continue
            image_id, _, variant = line.partition(" ")
            variant = variant.strip()
            if not image_id or not variant:
                raise DataError(f"{path}:{number}: expected '<image id> <variant name>', got {line!r}")
            label = label_of.get(variant)
            if label is None:
                raise DataError(
                    f"{path}:{number}: variant {variant!r} is not in {variants_path} (label out of range)"
                )
            check_relative_image_path(image_id, root, where=f"{path}:{number}")
            image = str(root / f"{image_id}.jpg")
            items.append(Item(image, label, variant, root=str(root), origin=f"{path}:{number}"))
        splits[split] = items
    return DatasetSplits(splits["train"], splits["val"], splits["test"], variants)


# ---------------------------------------------------------------------------------------------
# ImageNet and its variants


def read_classnames_file(path: Path, display_name: str = "") -> dict[str, str]:
    """Read ``classnames.txt`` (``<wnid> <readable name>`` per line) into an ordered wnid -> name map.

    Args:
        path: The file.
        display_name: Dataset name for error messages.

    Raises:
        DataError: Missing file, a malformed line or a duplicate wnid (names file and line).
    """
    names: dict[str, str] = {}
    for number, line in enumerate(_read_lines(path, None, display_name), start=1):
        line = line.strip()
        if not line:
            continue
        wnid, _, name = line.partition(" ")
        name = name.strip()
        if not name:
            raise DataError(f"{path}:{number}: expected '<wnid> <class name>', got {line!r}")
        if wnid in names:
            raise DataError(f"{path}:{number}: duplicate wnid {wnid!r}")
        names[wnid] = name
    if not names:
        raise DataError(f"{path}: no classes listed")
    return names


def _read_imagenet(info: DatasetInfo, folder: Path, root: Path) -> DatasetSplits:
    names = read_classnames_file(folder / "classnames.txt", info.display_name)
    label_of = {wnid: label for label, wnid in enumerate(names)}
    classnames = list(names.values())
    splits: dict[str, list[Item]] = {}
    for split, sub in (("train", "train"), ("test", "val")):
        split_dir = root / sub
        folders = _list_dirs(split_dir, info)
        unknown = [name for name in folders if name not in label_of]
        if unknown:
            raise DataError(
                f"{split_dir / unknown[0]}: folder is not a wnid listed in {folder / 'classnames.txt'}"
            )
        present = set(folders)
        missing = [wnid for wnid in names if wnid not in present]
        if missing:
            raise DataError(f"{info.display_name}: class folder not found: {split_dir / missing[0]}")
        items = []
        for wnid in names:
            for file in _list_images(split_dir / wnid):
                items.append(Item(file, label_of[wnid], names[wnid]))
        splits[split] = items
    return DatasetSplits(splits["train"], [], splits["test"], classnames)


def _read_numbered_folders(info: DatasetInfo, folder: Path, root: Path) -> DatasetSplits:
    classnames = list(read_classnames_file(folder / "classnames.txt", info.display_name).values())
    folders = _list_dirs(root, info)
    for name in folders:
        if not name.isdigit():
            raise DataError(f"{root / name}: folder name is not a class number")
    items = []
    for name in sorted(folders, key=int):
        label = int(name)
        if label >= len(classnames):
            raise DataError(
                f"{root / name}: label {label} out of range: {folder / 'classnames.txt'} lists "
                f"{len(classnames)} classes"
            )
        items.extend(Item(file, label, classnames[label]) for file in _list_images(root / name))
    return DatasetSplits([], [], items, classnames)


def _read_wnid_folders(info: DatasetInfo, folder: Path, root: Path) -> DatasetSplits:
    names = read_classnames_file(folder / "classnames.txt", info.display_name)
    label_of = {wnid: label for label, wnid in enumerate(names)}
    items = []
    for wnid in sorted(_list_dirs(root, info)):
        if wnid not in label_of:
            raise DataError(f"{root / wnid}: folder is not a wnid listed in {folder / 'classnames.txt'}")
        items.extend(Item(file, label_of[wnid], names[wnid]) for file in _list_images(root / wnid))
    items.sort(key=lambda item: item.label)
    return DatasetSplits([], [], items, list(names.values()))


def _read_wnid_subset_folders(info: DatasetInfo, folder: Path, root: Path) -> DatasetSplits:
    names = read_classnames_file(folder / "classnames.txt", info.display_name)
    present = sorted(_list_dirs(root, info))
    if not present:
        raise DataError(f"{info.display_name}: no class folders in {root}")
    items = []
    classnames = []
    for label, wnid in enumerate(present):
        if wnid not in names:
            raise DataError(f"{root / wnid}: folder is not a wnid listed in {folder / 'classnames.txt'}")
        classnames.append(names[wnid])
        items.extend(Item(file, label, names[wnid]) for file in _list_images(root / wnid))
    return DatasetSplits([], [], items, classnames)


# ---------------------------------------------------------------------------------------------
# helpers


def _read_lines(path: Path, info: DatasetInfo | None, display_name: str = "") -> list[str]:
    name = info.display_name if info is not None else display_name
    if not path.is_file():
        raise DataError(f"{name + ': ' if name else ''}file not found: {path}")
    try:
        return read_input_bytes(path, max_bytes=MAX_DATA_FILE_BYTES).decode("utf-8").splitlines()
    except InputFileError as err:
        raise DataError(str(err)) from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text: {err}") from None


def _list_dirs(path: Path, info: DatasetInfo) -> list[str]:
    """Names of the non-hidden sub-folders of ``path`` (sorted)."""
    if not path.is_dir():
        raise DataError(f"{info.display_name}: image folder not found: {path}")
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def _list_images(path: Path) -> list[str]:
    """Absolute paths of the image files directly inside ``path`` (sorted by name, no stat calls)."""
    with os.scandir(path) as entries:
        names = sorted(
            e.name
            for e in entries
            if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        )
    prefix = str(path)
    return [os.path.join(prefix, name) for name in names]


_READERS = {
    "split_json": _read_split_json,
    "fgvc_text": _read_fgvc,
    "imagenet_folders": _read_imagenet,
    "numbered_folders": _read_numbered_folders,
    "wnid_folders": _read_wnid_folders,
    "wnid_subset_folders": _read_wnid_subset_folders,
}
