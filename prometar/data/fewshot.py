"""Few-shot sampling with the field's convention, cached per (dataset, shots, seed).

Convention (``shared/reference/datasets.md``): a generator seeded with the run seed; the split's
items grouped by label in order of first appearance; per label ``K`` items drawn without
replacement with ``random.sample`` whenever the label has at least ``K`` items — a label with
exactly ``K`` items is drawn too, consuming randomness, as Dassl's ``len(items) >= K`` test does —
and all of them, in split order, when it has fewer; the validation subset drawn the same way with
``min(K, 4)`` per label, after the training subset, from the same generator. Sampling happens on
all classes, before the base/new cut.

Datasets without a validation split (ImageNet) get their validation subset from the training
items that the training subset did not take, so that it is held out and never the test set.

The result is cached as a small JSON (paths relative to the data root, labels, and a fingerprint of
the source split) written atomically (a temporary file in the same folder, then ``os.replace``), so
concurrent trials sampling the same (dataset, shots, seed) leave one valid file. A cache that does
not parse, does not match the schema, was written by another sampling algorithm (its ``format``:
``prometar.fewshot/1`` caches came from the ``> K`` rule and are rebuilt), or was drawn from a
different split is rebuilt.

:func:`subset_listing` is the record of a sample that a run writes as ``fewshot_subset.json``
and ``prometar-sweep data fewshot`` prints: image paths as the split files name them (relative to
the dataset's image folder), with labels and class names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometar.data.catalog import DataError, get_dataset
from prometar.data.readers import DatasetSplits, Item, dataset_dir, image_root
from prometar.errors import DiskFullError, InputFileError, MissingInputFileError
from prometar.files import MAX_DATA_FILE_BYTES, read_input_bytes, write_json_atomic

logger = logging.getLogger(__name__)

CACHE_FORMAT = "prometar.fewshot/2"
"""Cache schema and sampling algorithm; ``/2``: labels with exactly ``K`` items are drawn (``>=``)."""
DEFAULT_CACHE_FOLDER = "split_fewshot_prometar"
VAL_SHOTS_CAP = 4


def sample_per_label(items: Sequence[Item], shots: int, rng: random.Random) -> list[Item]:
    """Draw ``shots`` items per label without replacement (all of a label's items if fewer).

    Labels are visited in order of first appearance. A label with at least ``shots`` items is
    drawn with ``rng.sample`` (exactly ``shots`` items included: the draw consumes randomness and
    reorders them); a label with fewer keeps them all, in split order, and consumes none.

    Args:
        items: The split to sample from.
        shots: Items per label, at least 1.
        rng: The seeded generator (consumed in place).

    Returns:
        The sampled items, grouped by label in order of first appearance.
    """
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    groups: dict[int, list[Item]] = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    sampled: list[Item] = []
    for group in groups.values():
        sampled.extend(rng.sample(group, shots) if len(group) >= shots else group)
    return sampled


def sample_few_shot(splits: DatasetSplits, shots: int, seed: int) -> DatasetSplits:
    """Sample the few-shot training and validation subsets (no cache).

    Args:
        splits: All classes, as read by ``read_dataset``.
        shots: ``K``, items per class in the training subset; the validation subset takes
            ``min(K, 4)`` per class.
        seed: The run seed.

    Returns:
        ``DatasetSplits`` with the sampled train and val and the untouched test and class names.
    """
    rng = random.Random(seed)
    train = sample_per_label(splits.train, shots, rng)
    val_source = splits.val
    if not val_source:
        taken = {item.path for item in train}
        val_source = [item for item in splits.train if item.path not in taken]
    val = sample_per_label(val_source, min(shots, VAL_SHOTS_CAP), rng) if val_source else []
    return DatasetSplits(train, val, list(splits.test), list(splits.classnames))


def subset_listing(
    sampled: DatasetSplits, key: str, data_root: str | os.PathLike
) -> dict[str, list[list[Any]]]:
    """The record of a few-shot sample: which images the training and validation subsets hold.

    Args:
        sampled: The result of :func:`few_shot` / :func:`sample_few_shot` (all classes).
        key: Catalog key of the dataset.
        data_root: The data root the item paths live under.

    Returns:
        ``{"train": [[path, label, class name], ...], "val": [...]}`` in sampling order; each path
        relative to the dataset's image folder, as the split files name them (``split_zhou_*.json``;
        ImageNet: ``train/<wnid>/<file>``), labels in the dataset's label order (before any
        base/new relabelling).
    """
    root = str(image_root(key, data_root))
    return {
        name: [[_relative(item.path, root), item.label, item.classname] for item in items]
        for name, items in (("train", sampled.train), ("val", sampled.val))
    }


def cache_path(
    key: str, data_root: str | os.PathLike, shots: int, seed: int, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Return the cache file of (dataset, shots, seed).

    The default folder is ``split_fewshot_prometar/`` inside the dataset's folder.
    """
    get_dataset(key)
    folder = Path(cache_dir) if cache_dir is not None else dataset_dir(key, data_root) / DEFAULT_CACHE_FOLDER
    return folder / f"{key}_shot_{shots}-seed_{seed}.json"


def few_shot(
    splits: DatasetSplits,
    *,
    key: str,
    data_root: str | os.PathLike,
    shots: int,
    seed: int,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> DatasetSplits:
    """Few-shot subsets of a dataset, read from or written to the cache.

    Args:
        splits: The dataset read by ``read_dataset(key, data_root)`` (all classes).
        key: Catalog key (names the cache file).
        data_root: The data root the item paths live under (cached paths are relative to it).
        shots: ``K`` items per class for training; ``min(K, 4)`` for validation.
        seed: The run seed.
        cache_dir: Cache folder; default ``<dataset folder>/split_fewshot_prometar/``. An explicit
            folder that cannot be written is an error; when the default one cannot be written the
            result is returned uncached with a warning (sampling is deterministic).
        use_cache: ``False`` samples without reading or writing a cache.

    Returns:
        ``DatasetSplits`` with the sampled train and val, the full test set and all class names.

    Raises:
        DataError: ``splits`` has no training items, or an explicit ``cache_dir`` is not writable.
        DiskFullError: An explicit ``cache_dir`` is on a full disk.
    """
    if not splits.train:
        raise DataError(f"{key}: no training split to sample few-shot items from")
    if not use_cache:
        return sample_few_shot(splits, shots, seed)
    root = os.path.abspath(data_root)
    path = cache_path(key, root, shots, seed, cache_dir)
    fingerprint = _fingerprint(splits, root)
    cached = _load_cache(path, splits, root, fingerprint, key=key, shots=shots, seed=seed)
    if cached is not None:
        return cached
    result = sample_few_shot(splits, shots, seed)
    payload = {
        "format": CACHE_FORMAT,
        "dataset": key,
        "shots": shots,
        "seed": seed,
        "source": fingerprint,
        "train": [[_relative(item.path, root), item.label] for item in result.train],
        "val": [[_relative(item.path, root), item.label] for item in result.val],
    }
    try:
        write_json_atomic(path, payload)
    except (OSError, DiskFullError) as err:
        if cache_dir is not None:
            if isinstance(err, DiskFullError):  # not bad input: the run stops until space is freed
                raise
            raise DataError(f"cannot write the few-shot cache {path}: {err}") from None
        logger.warning("few-shot cache not written (%s: %s); using the sample uncached", path, err)
    return result


def _relative(path: str, root: str) -> str:
    prefix = root.rstrip(os.sep) + os.sep
    return path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, root)


def _fingerprint(splits: DatasetSplits, root: str) -> str:
    """Hash of the source train and val items (relative paths and labels) and the class count."""
    digest = hashlib.sha256(f"classes={len(splits.classnames)}\n".encode())
    for name, items in (("train", splits.train), ("val", splits.val)):
        digest.update(f"[{name}]\n".encode())
        digest.update("".join(f"{_relative(i.path, root)}\t{i.label}\n" for i in items).encode())
    return digest.hexdigest()


def _load_cache(
    path: Path, splits: DatasetSplits, root: str, fingerprint: str, *, key: str, shots: int, seed: int
) -> DatasetSplits | None:
    """Return the cached subsets, or ``None`` (with a warning) when the cache is absent or invalid."""
    try:
        raw = json.loads(read_input_bytes(path, max_bytes=MAX_DATA_FILE_BYTES))
    except MissingInputFileError:  # no cache yet (or another process just removed it): a plain miss
        return None
    except (InputFileError, ValueError, RecursionError) as err:  # JSON and UTF-8 errors are ValueErrors
        logger.warning("few-shot cache %s is unreadable (%s); rebuilding it", path, err)
        return None
    try:
        if not isinstance(raw, dict) or not str(raw.get("format", "")).startswith("prometar.fewshot/"):
            raise ValueError("not a prometar few-shot cache")
        if raw["format"] != CACHE_FORMAT:
            raise ValueError(
                f"format {raw['format']} (another sampling rule), this code writes {CACHE_FORMAT}"
            )
        if (raw.get("dataset"), raw.get("shots"), raw.get("seed")) != (key, shots, seed):
            raise ValueError("cache is for another (dataset, shots, seed)")
        if raw.get("source") != fingerprint:
            raise ValueError("drawn from a different split (dataset files changed)")
        n_classes = len(splits.classnames)
        # a cached entry is one of the split's own items (its root and split-file entry kept), so a
        # cache cannot name a file the split file does not
        known = {(_relative(item.path, root), item.label): item for item in splits.train + splits.val}
        subsets = {}
        for name in ("train", "val"):
            rows = raw.get(name)
            if not isinstance(rows, list):
                raise ValueError(f"{name!r} missing")
            items = []
            for row in rows:
                if (
                    not isinstance(row, list)
                    or len(row) != 2
                    or not isinstance(row[0], str)
                    or not isinstance(row[1], int)
                    or not 0 <= row[1] < n_classes
                ):
                    raise ValueError(f"bad {name} entry {row!r}")
                item = known.get((row[0], row[1]))
                if item is None:
                    raise ValueError(f"{name} entry {row!r} is not an item of the split")
                items.append(item)
            subsets[name] = items
    except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        logger.warning("few-shot cache %s is invalid (%s); rebuilding it", path, err)
        return None
    if not subsets["train"]:
        logger.warning("few-shot cache %s is empty; rebuilding it", path)
        return None
    return DatasetSplits(subsets["train"], subsets["val"], list(splits.test), list(splits.classnames))
