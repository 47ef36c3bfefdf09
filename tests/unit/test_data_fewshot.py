"""Few-shot sampling (the field's convention), its atomic cache, and the class protocols."""

from __future__ import annotations

import json
import logging
import multiprocessing
import random
from pathlib import Path

import pytest

from prometar.data.fewshot import (
    CACHE_FORMAT,
    cache_path,
    few_shot,
    sample_few_shot,
    sample_per_label,
    subset_listing,
)
from prometar.data.readers import DatasetSplits, Item, read_dataset
from prometar.data.splits import base_new_split, search_split, subsample_classes
from prometar.errors import DataError
from prometar.toy.miniature import write_miniatures


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_miniatures(root, ["eurosat", "imagenet", "dtd"], images_per_class=6)
    return root


def _synthetic(n_classes: int, per_class: int = 3) -> DatasetSplits:
    def items(split: str) -> list[Item]:
        return [
            Item(f"/d/{split}/{c}_{k}.jpg", c, f"class{c}")
            for k in range(per_class)
            for c in range(n_classes)
        ]

    return DatasetSplits(items("train"), items("val"), items("test"), [f"class{c}" for c in range(n_classes)])


def _count(items: list[Item]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for item in items:
        counts[item.label] = counts.get(item.label, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------
# sampling


def test_sample_per_label_groups_in_order_of_first_appearance():
    items = [Item(f"p{i}", label, str(label)) for i, label in enumerate([2, 0, 2, 1, 0, 2, 1, 2])]
    sampled = sample_per_label(items, 2, random.Random(0))
    assert [i.label for i in sampled] == [2, 2, 0, 0, 1, 1]
    assert len({i.path for i in sampled}) == 6  # without replacement


def test_sample_per_label_keeps_all_when_fewer_and_consumes_no_randomness():
    items = [Item(f"p{i}", 0, "a") for i in range(3)]
    rng = random.Random(5)
    assert sample_per_label(items, 4, rng) == items
    assert rng.random() == random.Random(5).random()


def test_sample_per_label_draws_a_label_with_exactly_k_items():
    items = [Item(f"p{i}", 0, "a") for i in range(3)]
    rng = random.Random(5)
    reference = random.Random(5)
    assert sample_per_label(items, 3, rng) == reference.sample(items, 3)  # a draw, not the split order
    assert rng.random() == reference.random()  # it consumed what random.sample consumes


def documented_subsets(
    train: list[Item], val: list[Item], shots: int, seed: int, *, draw_exactly_k: bool = True
) -> tuple[list[Item], list[Item]]:
    """The field's few-shot algorithm as datasets.md states it, written here from that text.

    One ``random.Random(seed)``; the training subset first, then the validation subset with
    ``min(K, 4)``; per subset, labels in order of first appearance; a label with at least ``k``
    items gets ``random.sample(items, k)``, a label with fewer keeps all its items.
    ``draw_exactly_k=False`` is the old, wrong rule (only labels with more than ``k`` are drawn).
    """
    rng = random.Random(seed)
    subsets = []
    for items, k in ((train, shots), (val, min(shots, 4))):
        chosen: list[Item] = []
        for label in dict.fromkeys(item.label for item in items):
            pool = [item for item in items if item.label == label]
            drawn = len(pool) >= k if draw_exactly_k else len(pool) > k
            chosen += rng.sample(pool, k) if drawn else pool
        subsets.append(chosen)
    return subsets[0], subsets[1]


def _labelled(split: str, counts: list[tuple[int, int]]) -> list[Item]:
    """Items of ``split`` with (label, count) per label, interleaved as a split file may list them."""
    per_label = {
        label: [Item(f"/d/{split}/{label}_{k}.jpg", label, f"class{label}") for k in range(count)]
        for label, count in counts
    }
    items: list[Item] = []
    for k in range(max(count for _, count in counts)):
        items += [group[k] for group in per_label.values() if k < len(group)]
    return items


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_subsets_follow_the_documented_algorithm_for_fewer_exactly_and_more_than_k(seed):
    shots = 5
    # train: label 3 more than K, 0 exactly K, 2 fewer, 1 exactly K again (after the short label)
    train = _labelled("train", [(3, 9), (0, 5), (2, 2), (1, 5)])
    # val (min(K, 4) = 4): label 1 exactly 4, label 0 more, label 3 fewer, label 2 more
    val = _labelled("val", [(1, 4), (0, 7), (3, 3), (2, 6)])
    splits = DatasetSplits(train, val, [], [f"class{c}" for c in range(4)])
    sampled = sample_few_shot(splits, shots, seed)
    expected_train, expected_val = documented_subsets(train, val, shots, seed)
    assert sampled.train == expected_train and sampled.val == expected_val
    assert [i.label for i in sampled.train] == [3] * 5 + [0] * 5 + [2] * 2 + [1] * 5  # first appearance
    assert [i.label for i in sampled.val] == [1] * 4 + [0] * 4 + [3] * 3 + [2] * 4
    assert len({i.path for i in sampled.train}) == 17 and len({i.path for i in sampled.val}) == 15
    # the rule matters: skipping the exactly-K labels would pick other images with this seed
    assert (sampled.train, sampled.val) != documented_subsets(train, val, shots, seed, draw_exactly_k=False)


def test_subset_listing_names_images_as_the_split_file_does(mini_root):
    splits = read_dataset("dtd", mini_root)
    sampled = sample_few_shot(splits, 2, seed=1)
    listing = subset_listing(sampled, "dtd", mini_root)
    split_file = json.loads((mini_root / "dtd" / "split_zhou_DescribableTextures.json").read_text())
    for name in ("train", "val"):
        rows = [tuple(row) for row in split_file[name]]
        assert [tuple(row) for row in listing[name]] == [
            next(row for row in rows if str(mini_root / "dtd" / "images" / row[0]) == item.path)
            for item in getattr(sampled, name)
        ]
    assert set(listing) == {"train", "val"} and listing["train"] and listing["val"]


def test_few_shot_counts_and_val_cap(mini_root):
    splits = read_dataset("eurosat", mini_root)  # train: 6 per class, last class 3; val 2 per class
    sampled = sample_few_shot(splits, 4, seed=1)
    assert _count(sampled.train) == {0: 4, 1: 4, 2: 4, 3: 4, 4: 3}
    assert _count(sampled.val) == {c: 2 for c in range(5)}  # min(K, 4) = 4 > 2 available
    assert sampled.test == splits.test and sampled.classnames == splits.classnames
    assert {i.path for i in sampled.train} <= {i.path for i in splits.train}

    big = _synthetic(3, per_class=10)
    assert _count(sample_few_shot(big, 16, seed=0).val) == {0: 4, 1: 4, 2: 4}
    assert _count(sample_few_shot(big, 2, seed=0).val) == {0: 2, 1: 2, 2: 2}


def test_few_shot_is_deterministic_per_seed():
    splits = _synthetic(4, per_class=20)
    one = sample_few_shot(splits, 5, seed=1)
    assert one == sample_few_shot(splits, 5, seed=1)
    two = sample_few_shot(splits, 5, seed=2)
    assert [i.path for i in one.train] != [i.path for i in two.train]


def test_imagenet_val_is_held_out_from_train(mini_root):
    splits = read_dataset("imagenet", mini_root)
    sampled = sample_few_shot(splits, 2, seed=3)
    train_paths = {i.path for i in sampled.train}
    assert sampled.val and not train_paths & {i.path for i in sampled.val}
    assert not {i.path for i in sampled.val} & {i.path for i in splits.test}
    # 6 train images per class (the last class 3): 2 go to train, min(2, 4) of the rest to val
    assert _count(sampled.val) == {0: 2, 1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 1}


def test_shots_must_be_positive():
    with pytest.raises(ValueError):
        sample_few_shot(_synthetic(2), 0, seed=1)


# ---------------------------------------------------------------------------------------------
# cache


def test_cache_round_trip_and_location(mini_root):
    splits = read_dataset("dtd", mini_root)
    first = few_shot(splits, key="dtd", data_root=mini_root, shots=2, seed=7)
    path = mini_root / "dtd" / "split_fewshot_prometar" / "dtd_shot_2-seed_7.json"
    assert path == cache_path("dtd", mini_root, 2, 7)
    raw = json.loads(path.read_text())
    assert raw["shots"] == 2 and raw["seed"] == 7
    assert all(not Path(rel).is_absolute() and rel.startswith("dtd/images/") for rel, _ in raw["train"])
    again = few_shot(splits, key="dtd", data_root=mini_root, shots=2, seed=7)
    assert again == first == sample_few_shot(splits, 2, 7)


def test_cache_is_read_not_resampled(tmp_path):
    write_miniatures(tmp_path, ["dtd"])
    splits = read_dataset("dtd", tmp_path)
    few_shot(splits, key="dtd", data_root=tmp_path, shots=1, seed=1, cache_dir=tmp_path / "cache")
    path = cache_path("dtd", tmp_path, 1, 1, tmp_path / "cache")
    raw = json.loads(path.read_text())
    other = next(i for i in splits.train if i.label == 0 and not i.path.endswith(raw["train"][0][0]))
    raw["train"][0][0] = str(Path(other.path).relative_to(tmp_path))
    path.write_text(json.dumps(raw))
    result = few_shot(splits, key="dtd", data_root=tmp_path, shots=1, seed=1, cache_dir=tmp_path / "cache")
    assert result.train[0].path == other.path


@pytest.mark.parametrize("damage", ["truncate", "garbage", "bad_label", "wrong_source", "old_format"])
def test_corrupt_cache_is_rebuilt(tmp_path, damage):
    write_miniatures(tmp_path, ["dtd"])
    splits = read_dataset("dtd", tmp_path)
    expected = few_shot(splits, key="dtd", data_root=tmp_path, shots=2, seed=4)
    path = cache_path("dtd", tmp_path, 2, 4)
    text = path.read_text()
    raw = json.loads(text)
    if damage == "truncate":
        path.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff not json")
    elif damage == "bad_label":
        raw["train"][0][1] = 99
        path.write_text(json.dumps(raw))
    elif damage == "wrong_source":
        raw["source"] = "0" * 64
        path.write_text(json.dumps(raw))
    else:  # written by the old sampling rule (labels with exactly K items kept undrawn)
        assert raw["format"] == CACHE_FORMAT != "prometar.fewshot/1"
        raw["format"] = "prometar.fewshot/1"
        raw["train"] = raw["train"][::-1]
        path.write_text(json.dumps(raw))
    assert few_shot(splits, key="dtd", data_root=tmp_path, shots=2, seed=4) == expected
    assert json.loads(path.read_text()) == json.loads(text)  # rewritten valid


def test_explicit_unwritable_cache_dir_is_an_error(tmp_path):
    write_miniatures(tmp_path, ["dtd"])
    splits = read_dataset("dtd", tmp_path)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(DataError, match="not_a_dir"):
        few_shot(splits, key="dtd", data_root=tmp_path, shots=1, seed=1, cache_dir=blocker / "cache")


def _sample_in_process(root: str, barrier) -> None:
    splits = read_dataset("eurosat", root)
    expected = sample_few_shot(splits, 3, 11)
    path = cache_path("eurosat", root, 3, 11)
    invalid: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            invalid.append(record.getMessage())

    logging.getLogger("prometar.data.fewshot").addHandler(Catch(logging.WARNING))
    barrier.wait()
    for _ in range(100):
        # each round both processes may find no cache and write it at the same time
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        result = few_shot(splits, key="eurosat", data_root=root, shots=3, seed=11)
        if result != expected:
            raise SystemExit(3)
        if invalid:  # a reader saw a half-written cache (unreadable or invalid)
            raise SystemExit(4)
    few_shot(splits, key="eurosat", data_root=root, shots=3, seed=11)


def test_concurrent_processes_leave_one_valid_cache(tmp_path):
    write_miniatures(tmp_path, ["eurosat"])
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_sample_in_process, args=(str(tmp_path), barrier)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    folder = tmp_path / "eurosat" / "split_fewshot_prometar"
    assert [p.name for p in folder.iterdir()] == ["eurosat_shot_3-seed_11.json"]  # no temp files left
    splits = read_dataset("eurosat", tmp_path)
    raw = json.loads((folder / "eurosat_shot_3-seed_11.json").read_text())
    expected = sample_few_shot(splits, 3, 11)
    assert [str(tmp_path / rel) for rel, _ in raw["train"]] == [i.path for i in expected.train]


# ---------------------------------------------------------------------------------------------
# protocols


@pytest.mark.parametrize("n,base,new", [(5, 3, 2), (37, 19, 18), (10, 5, 5), (1, 1, 0)])
def test_base_new_cut_sizes(n, base, new):
    cut = base_new_split(_synthetic(n))
    assert (cut.base.num_classes, cut.new.num_classes) == (base, new)
    assert cut.base_labels == tuple(range(base)) and cut.new_labels == tuple(range(base, n))


def test_base_new_cut_relabels_in_order():
    splits = _synthetic(5)
    cut = base_new_split(splits)
    assert cut.new.classnames == ["class3", "class4"]
    assert sorted({i.label for i in cut.new.test}) == [0, 1]
    assert all(i.classname == cut.new.classnames[i.label] for i in cut.new.train + cut.new.test)
    assert all(i.label <= 2 and i.classname == f"class{i.label}" for i in cut.base.train)
    assert len(cut.base.test) == 3 * 3 and len(cut.new.val) == 2 * 3


def test_cut_uses_labels_present_in_train():
    splits = _synthetic(6)
    # train holds labels 1, 2, 4, 5 only: base = 1, 2; new = 4, 5
    sparse = DatasetSplits(
        [i for i in splits.train if i.label in (1, 2, 4, 5)], splits.val, splits.test, splits.classnames
    )
    cut = base_new_split(sparse)
    assert cut.base_labels == (1, 2) and cut.new_labels == (4, 5)
    assert cut.new.classnames == ["class4", "class5"]
    assert {i.label for i in cut.new.test} == {0, 1}


def test_subsample_classes():
    splits = _synthetic(7)
    assert subsample_classes(splits, "all") is splits
    assert subsample_classes(splits, "base").classnames == [f"class{c}" for c in range(4)]
    assert subsample_classes(splits, "new").classnames == ["class4", "class5", "class6"]


def test_search_split_never_sees_new_classes_or_test():
    splits = _synthetic(11)  # base = 0..5, new = 6..10; pseudo-base = 0..2, pseudo-new = 3..5
    search = search_split(splits)
    assert search.base_labels == (0, 1, 2) and search.new_labels == (3, 4, 5)
    assert search.base.test == [] and search.new.test == [] and search.new.train == []
    seen = {i.classname for i in search.base.train + search.base.val + search.new.val}
    assert seen == {f"class{c}" for c in range(6)}
    assert search.new.classnames == ["class3", "class4", "class5"]
    assert {i.label for i in search.new.val} == {0, 1, 2}
    assert all("/val/" in i.path for i in search.base.val + search.new.val)


def test_search_split_needs_val_items():
    splits = _synthetic(6)
    with pytest.raises(DataError, match="validation"):
        search_split(DatasetSplits(splits.train, [], splits.test, splits.classnames))


def test_read_only_default_cache_falls_back_to_uncached(tmp_path, caplog):
    write_miniatures(tmp_path, ["dtd"])
    splits = read_dataset("dtd", tmp_path)
    (tmp_path / "dtd" / "split_fewshot_prometar").write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="prometar.data.fewshot"):
        result = few_shot(splits, key="dtd", data_root=tmp_path, shots=2, seed=3)
    assert result == sample_few_shot(splits, 2, 3)
    assert "split_fewshot_prometar" in caplog.text and "not written" in caplog.text


# ---------------------------------------------------------------------------------------------
# prometar-sweep data fewshot


def test_cli_data_fewshot_prints_the_subsets_without_writing(mini_root, tmp_path):
    from click.testing import CliRunner

    from orchestration.cli import main

    before = sorted(p for p in mini_root.rglob("*"))
    args = [
        "data",
        "fewshot",
        "--dataset",
        "dtd",
        "--shots",
        "2",
        "--seed",
        "5",
        "--data-root",
        str(mini_root),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    expected = subset_listing(sample_few_shot(read_dataset("dtd", mini_root), 2, 5), "dtd", mini_root)
    assert json.loads(result.output) == expected
    assert sorted(p for p in mini_root.rglob("*")) == before  # no cache written, nothing trained
    out = tmp_path / "subset.json"
    result = CliRunner().invoke(main, [*args, "-o", str(out)])
    assert result.exit_code == 0 and result.output == ""
    assert json.loads(out.read_text()) == expected
    other = CliRunner().invoke(main, [*args[:-3], "6", "--data-root", str(mini_root)])  # another seed
    assert other.exit_code == 0 and json.loads(other.output) != expected


@pytest.mark.parametrize(
    "dataset,root,named",
    [
        ("mnist", None, "caltech101"),
        ("eurosat", "nowhere", "nowhere"),
        ("imagenet_v2", None, "no training split"),
    ],
)
def test_cli_data_fewshot_bad_input_exits_2(mini_root, tmp_path, dataset, root, named):
    from click.testing import CliRunner

    from orchestration.cli import main

    if dataset == "imagenet_v2":
        write_miniatures(tmp_path, ["imagenet_v2"])  # a test-only dataset: nothing to sample from
    data_root = str(tmp_path / root) if root else str(tmp_path if dataset == "imagenet_v2" else mini_root)
    out = tmp_path / "subset.json"
    result = CliRunner().invoke(
        main,
        [
            "data",
            "fewshot",
            "--dataset",
            dataset,
            "--shots",
            "1",
            "--seed",
            "1",
            "--data-root",
            data_root,
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 2, result.output
    assert named in result.output and not out.exists()
