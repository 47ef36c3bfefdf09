"""Sweep spec: schema errors name the file and key; trial keys hash what changes results, only that."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestration.errors import SpecError
from orchestration.ledger.vocabulary import trial_tags
from orchestration.sweeps.keys import trial_key
from orchestration.sweeps.planning import load_plan, plan_sweep

TINY = {"backbone.name": "tiny-test", "backbone.pretrained": None, "optim.epochs": 1}


def write(tmp_path: Path, data: dict | str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def base(**extra) -> dict:
    data = {
        "protocol": "base2new",
        "overrides": dict(TINY),
        "grid": {"method": ["ivlp"], "dataset": ["eurosat", "dtd"], "seed": [1, 2], "shots": [4]},
    }
    data.update(extra)
    return data


def test_grid_expands_to_resolved_trials(tmp_path: Path) -> None:
    spec = load_plan(write(tmp_path, base())).spec
    assert spec.name == "sweep"  # default: the file's stem
    trials = list(plan_sweep(spec).trials)
    assert len(trials) == spec.trial_count == 4
    assert {(t.dataset, t.seed) for t in trials} == {("eurosat", 1), ("eurosat", 2), ("dtd", 1), ("dtd", 2)}
    t = trials[0]
    assert t.config["backbone"]["name"] == "tiny-test" and t.config["optim"]["epochs"] == 1
    assert t.config["prompts"]["text_depth"] == 9  # the method's settings are applied (ivlp)
    assert trial_tags(t, "sweep") == {
        "prometar.trial_key": t.key,
        "dataset": t.dataset,
        "method": "ivlp",
        "seed": str(t.seed),
        "shots": "4",
        "protocol": "base2new",
        "sweep": "sweep",
    }
    # longest first: dtd (47 classes) before eurosat (10)
    assert [x.dataset for x in trials] == ["dtd", "dtd", "eurosat", "eurosat"]


def test_trial_key_ignores_resources_paths_and_workers(tmp_path: Path) -> None:
    a = list(load_plan(write(tmp_path, base(), "a.yaml")).trials)
    b = list(
        load_plan(
            write(
                tmp_path,
                base(
                    name="other",
                    resources={"default": {"cpu": 3, "gpu": 0.5}},
                    max_failures=0,
                    overrides={**TINY, "data.num_workers": 0, "backbone.device": "cpu"},
                ),
                "b.yaml",
            )
        ).trials
    )
    assert [t.key for t in a] == [t.key for t in b]


def test_trial_key_changes_with_what_changes_results(tmp_path: Path) -> None:
    keys = {t.key for t in load_plan(write(tmp_path, base(), "a.yaml")).trials}
    lr = {t.key for t in load_plan(write(tmp_path, base(), "b.yaml"), overrides={"optim.lr": 0.01}).trials}
    few = {t.key for t in load_plan(write(tmp_path, base(protocol="few_shot"), "c.yaml")).trials}
    assert keys.isdisjoint(lr) and keys.isdisjoint(few)
    assert trial_key({"a": 1, "b": 2}, "p") == trial_key({"b": 2, "a": 1}, "p")  # canonical JSON
    assert trial_key({"a": 1}, "p") != trial_key({"a": 1}, "q")


def test_trial_key_follows_the_result_revision() -> None:
    import hashlib
    import json

    import prometar

    assert prometar.RESULT_REVISION >= 2  # 1 is the code before the revision existed
    scientific = {"method": "ivlp", "seed": 1, "optim": {"lr": 0.0025}}
    assert trial_key(scientific, "base2new") == trial_key(
        scientific, "base2new", revision=prometar.RESULT_REVISION
    )
    keys = {trial_key(scientific, "base2new", revision=r) for r in (1, 2, 3)}
    assert len(keys) == 3  # the same hyper-parameters under three result revisions: three trials
    # revision 1 gives exactly the keys the code before the revision made (config and protocol only)
    before = json.dumps({"config": scientific, "protocol": "base2new"}, sort_keys=True, separators=(",", ":"))
    assert trial_key(scientific, "base2new", revision=1) == hashlib.sha256(before.encode()).hexdigest()[:12]


def test_trial_key_takes_a_checkpoint_by_content_not_path(tmp_path: Path) -> None:
    def key_for(path: Path) -> str:
        return trial_key({"backbone": {"name": "toy-clip", "pretrained": str(path)}, "seed": 1}, "base2new")

    first, moved, other = tmp_path / "a" / "toy.pt", tmp_path / "b" / "toy.pt", tmp_path / "c" / "toy.pt"
    for path, content in ((first, b"weights"), (moved, b"weights"), (other, b"other weights")):
        path.parent.mkdir()
        path.write_bytes(content)
    assert key_for(first) == key_for(moved)  # same weights, another folder
    assert key_for(first) != key_for(other)  # other weights
    assert key_for(tmp_path / "missing.pt") != key_for(first)  # no file: the name itself counts


def test_sweep_yaml_reads_exponent_numbers_as_floats(tmp_path: Path) -> None:
    # PyYAML's YAML 1.1 rules read "1e-5" as a string; the project's one parser reads a float.
    text = (
        "protocol: base2new\noverrides: {optim.warmup_lr: 1e-5, optim.epochs: 1}\n"
        "grid: {method: [ivlp], dataset: [dtd], seed: [1], shots: [4]}\n"
    )
    (trial,) = list(load_plan(write(tmp_path, text)).trials)
    assert trial.config["optim"]["warmup_lr"] == 1e-5


def test_protocols_map_to_run_protocols(tmp_path: Path) -> None:
    trials = list(load_plan(write(tmp_path, base(protocol="few_shot"))).trials)
    assert {t.config["protocol"] for t in trials} == {"all_classes"}
    assert {t.protocol for t in trials} == {"few_shot"}


def test_resources_per_dataset(tmp_path: Path) -> None:
    spec = load_plan(
        write(tmp_path, base(resources={"default": {"cpu": 2, "gpu": 0.25}, "dtd": {"gpu": 1}}))
    ).spec
    assert spec.resources_for("eurosat").as_dict() == {"cpu": 2.0, "gpu": 0.25}
    assert spec.resources_for("dtd").as_dict() == {"cpu": 1.0, "gpu": 1.0}


def test_search_groups_and_resolved_samples(tmp_path: Path) -> None:
    spec = load_plan(
        write(
            tmp_path,
            base(
                search={
                    "metric": "val_hm",
                    "num_samples": 3,
                    "space": {
                        "regularizer.text_weight": {"loguniform": [5, 200]},
                        "meta.order": {"choice": ["first", "second"]},
                    },
                },
                grid={"method": ["prometar"], "dataset": ["eurosat"], "seed": [1], "shots": [4]},
            ),
        )
    ).spec
    assert spec.trial_count == 3
    (group,) = list(plan_sweep(spec).groups)
    trial = group.resolve({"regularizer.text_weight": 12.5, "meta.order": "first"})
    assert trial.protocol == "search" and trial.config["protocol"] == "search"
    assert trial.config["regularizer"]["text_weight"] == 12.5 and trial.group == group.key
    assert trial_tags(trial, "s")["prometar.search_group"] == group.key
    assert trial.key != group.resolve({"regularizer.text_weight": 13.0, "meta.order": "first"}).key


def error_of(tmp_path: Path, data: dict | str) -> SpecError:
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        load_plan(path)
    assert str(path) in str(info.value)
    return info.value


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        (base(colour="red"), "colour", "unknown key"),
        (base(name="base2new/v2"), "name", "letters, digits"),
        (base(name="../elsewhere"), "name", "letters, digits"),
        (base(max_failures="two"), "max_failures", "integer"),
        (base(grid={"method": ["ivlp"], "dataset": ["eurosat"], "seed": ["one"]}), "grid.seed[0]", "integer"),
        (base(grid={"method": ["ivlp"], "dataset": "eurosat"}), "grid.dataset", "list"),
        (base(grid={"method": ["ivlp"], "dataset": ["mnist"]}), "grid.dataset[0]", "eurosat"),
        (base(grid={"method": ["clipper"], "dataset": ["eurosat"]}), "grid.method[0]", "prometar"),
        (base(grid={}), "grid", "empty"),
        (base(grid={"method": ["ivlp"], "dataset": []}), "grid.dataset", "empty"),
        (base(protocol="zero_shot"), "protocol", "few_shot"),
        (base(overrides={"optim.colour": 1}), "overrides.optim.colour", "unknown key"),
        (base(overrides={"optim.lr": "fast"}), "overrides.optim.lr", "fast"),
        (base(resources={"default": {"gpu": "all"}}), "resources.default.gpu", "number"),
        (base(resources={"mnist": {"gpu": 1}}), "resources.mnist", "unknown dataset"),
        (
            base(search={"space": {"prompts.text_init": {"uniform": [0, 1]}}}),
            "search.space.prompts.text_init",
            "numeric",
        ),
        (base(search={"space": {"optim.lr": {"normal": [0, 1]}}}), "search.space.optim.lr", "loguniform"),
        (
            base(search={"metric": "new_acc", "space": {"optim.lr": {"uniform": [0.1, 1]}}}),
            "search.metric",
            "validation",
        ),
        (
            base(search={"space": {"optim.nope": {"uniform": [0.1, 1]}}}),
            "search.space.optim.nope",
            "run-config",
        ),
    ],
)
def test_bad_sweeps_name_file_and_key(tmp_path: Path, data: dict, key: str, words: str) -> None:
    err = error_of(tmp_path, data)
    assert err.key == key, str(err)
    assert words in str(err)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    err = error_of(tmp_path, "name: x\ngrid:\n  method: [ivlp\n  dataset: [eurosat]\n")
    assert "YAML syntax error" in str(err) and "line" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such sweep file"):
        load_plan(tmp_path / "absent.yaml")


def test_variant_axis_applies_overrides_together(tmp_path: Path) -> None:
    spec = load_plan(
        write(
            tmp_path,
            base(
                grid={
                    "method": ["prometar"],
                    "dataset": ["eurosat"],
                    "variant": [{}, {"meta.order": "first", "meta.inner_lr": 0.001}, {"method": "ivlp_reg"}],
                }
            ),
        )
    ).spec
    trials = list(plan_sweep(spec).trials)
    got = {(t.method, t.config["meta"]["order"], t.config["meta"]["inner_lr"]) for t in trials}
    assert got == {("prometar", "second", 5e-4), ("prometar", "first", 0.001), ("ivlp_reg", "second", 5e-4)}
    err = error_of(tmp_path, base(grid={"method": ["prometar"], "dataset": ["eurosat"], "variant": [3]}))
    assert err.key == "grid.variant[0]"
