"""The run config: presets, validation errors that name keys, overrides, scientific subset."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from prometar.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    build_config,
    describe_fields,
    flatten,
    list_presets,
    load_preset,
    parse_override,
    resolve_config,
)
from prometar.run import build_schedules


def official(**overrides):
    return resolve_config("official", {"data.dataset": "eurosat", **overrides})


def test_official_preset_carries_every_value_of_algorithm_section_5():
    cfg = official()
    flat = flatten(cfg.to_dict())
    expected = {
        # model (§1) and method
        "method": "prometar",
        "backbone.name": "ViT-B-16-quickgelu",
        "backbone.pretrained": "openai",
        "prompts.text_tokens": 4,
        "prompts.text_depth": 9,
        "prompts.vision_tokens": 4,
        "prompts.vision_depth": 9,
        "prompts.text_init": "a photo of a",
        # data
        "data.shots": 16,
        "data.batch_size": 4,
        "data.drop_last": True,
        "data.test_batch_size": 100,
        # prompt optimiser
        "optim.name": "sgd",
        "optim.lr": 0.0025,
        "optim.momentum": 0.9,
        "optim.weight_decay": 5e-4,
        "optim.epochs": 10,
        "optim.warmup_epochs": 1,
        "optim.warmup_lr": 1e-5,
        "optim.scheduler": "cosine",
        # gate optimiser, including the never-stepped scheduler
        "gate_optim.momentum": 0.9,
        "gate_optim.weight_decay": 5e-4,
        "gate_optim.lr": 2.5e-4,
        "gate_optim.warmup_epochs": 1,
        "gate_optim.warmup_lr": 1e-6,
        "gate_optim.step_scheduler": False,
        # meta
        "meta.enabled": True,
        "meta.inner_lr": 5e-4,
        "meta.loss_scale": 5e-4,
        "meta.order": "second",
        "meta.beta": [0.5, 0.5],
        "meta.gate_reduction": 8,
        "meta.gate_repeat": 8,
        "meta.gate_mode": "learned",
        # regularisers
        "regularizer.enabled": True,
        "regularizer.text_weight": 50.0,
        "regularizer.image_weight": 20.0,
        # precision: bf16 autocast on GPU, fp32 on CPU
        "backbone.precision": "auto",
    }
    assert {k: flat[k] for k in expected} == expected
    assert cfg.scheme == "prometar"


def test_official_gate_learning_rate_stays_at_1e_6_every_epoch():
    cfg = official()
    prompt, gate = build_schedules(cfg)
    assert [gate.at(e) for e in range(cfg.optim.epochs)] == [1e-6] * 10
    assert prompt.at(0) == 1e-5


def test_fixed_preset_changes_exactly_the_two_quirks():
    a = flatten(load_preset("official"))
    b = flatten(load_preset("fixed"))
    assert {k for k in a if a[k] != b[k]} == {"gate_optim.step_scheduler", "meta.gate_repeat"}
    assert b["gate_optim.step_scheduler"] is True and b["meta.gate_repeat"] is None
    _, gate = build_schedules(resolve_config("fixed", {"data.dataset": "eurosat"}))
    assert gate.at(0) == 1e-6 and gate.at(1) > 1e-4
    assert set(list_presets()) >= {"official", "fixed"}


OFFICIAL = {
    "method": "prometar",
    "protocol": "base2new",
    "seed": 1,
    "backbone": {
        "name": "ViT-B-16-quickgelu",
        "pretrained": "openai",
        "precision": "auto",
        "device": "auto",
        "cache_dir": None,
    },
    "prompts": {
        "text_tokens": 4,
        "text_depth": 9,
        "vision_tokens": 4,
        "vision_depth": 9,
        "deep_depth": 9,
        "text_init": "a photo of a",
        "truncate_text": True,
        "sequence_first_blocks": True,
    },
    "regularizer": {
        "enabled": True,
        "text_weight": 50.0,
        "image_weight": 20.0,
        "ungated_strength": "prometar",
    },
    "meta": {
        "enabled": True,
        "inner_lr": 5e-4,
        "loss_scale": 5e-4,
        "order": "second",
        "beta": [0.5, 0.5],
        "gate_reduction": 8,
        "gate_repeat": 8,
        "gate_mode": "learned",
    },
    "optim": {
        "name": "sgd",
        "lr": 0.0025,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "epochs": 10,
        "warmup_epochs": 1,
        "warmup_lr": 1e-5,
        "scheduler": "cosine",
    },
    "gate_optim": {
        "lr": 2.5e-4,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "warmup_epochs": 1,
        "warmup_lr": 1e-6,
        "step_scheduler": False,
    },
    "data": {
        "dataset": "",
        "shots": 16,
        "batch_size": 4,
        "drop_last": True,
        "test_batch_size": 100,
        "num_workers": 4,
        "cache_dir": None,
    },
    "eval": {"targets": [], "per_class": True},
}
"""docs/algorithm.md §5, value by value (the published implementation's run)."""


def test_the_official_preset_and_the_field_defaults_are_algorithm_md_section_5():
    assert load_preset("official") == OFFICIAL
    assert official() == build_config({**OFFICIAL, "data": {**OFFICIAL["data"], "dataset": "eurosat"}})


def test_round_trip_through_dict_and_json():
    cfg = official(
        **{
            "optim.lr": 0.01,
            "meta.beta": [0.3, 0.7],
            "protocol": "domain_generalization",
            "data.dataset": "imagenet",
        }
    )
    assert build_config(cfg.to_dict()) == cfg
    assert build_config(json.loads(cfg.to_json())) == cfg
    assert cfg.meta.beta == (0.3, 0.7)
    assert cfg.eval.targets == ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        ({"optim.lrr": 1}, "optim.lrr", "unknown key"),
        ({"optim.lr": "fast"}, "optim.lr", "expected float"),
        ({"optim.epochs": 2.5}, "optim.epochs", "expected int"),
        ({"optim.epochs": True}, "optim.epochs", "expected int"),
        ({"meta.order": "third"}, "meta.order", "'second' | 'first'"),
        ({"meta.beta": [0.5]}, "meta.beta", "list of 2"),
        ({"meta.beta": [0.5, -1]}, "meta.beta[1]", "> 0"),
        ({"optim.lr": -1.0}, "optim.lr", "> 0"),
        ({"optim.warmup_epochs": 20}, "optim.warmup_epochs", "exceeds optim.epochs"),
        ({"data.dataset": "mnist"}, "data.dataset", "valid datasets"),
        ({"data.dataset": "imagenet_a"}, "data.dataset", "test-only"),
        ({"method": "clipper"}, "method", "valid methods: zeroshot"),
        ({"protocol": "few"}, "protocol", "base2new"),
        ({"regularizer.enabled": False}, "meta.enabled", "requires regularizer.enabled"),
        ({"method": "zeroshot", "prompts.text_depth": 2}, "prompts.text_depth", "must be 0"),
        ({"prompts.text_depth": 0, "prompts.vision_depth": 0}, "prompts.text_depth", "nothing to train"),
        ({"eval.targets": ["dtd"]}, "eval.targets", "only apply"),
        ({"backbone.device": "gpu"}, "backbone.device", "cuda"),
        ({"optim": 3}, "optim", "mapping"),
        ({"seed.x": 3}, "seed.x", "not a section"),
    ],
)
def test_errors_name_the_dotted_key(overrides, key, fragment):
    with pytest.raises(ConfigError) as info:
        official(**overrides)
    assert info.value.key == key
    assert key in str(info.value) and fragment in str(info.value)


def test_missing_dataset_is_an_error_listing_datasets():
    with pytest.raises(ConfigError, match="data.dataset: is required; valid datasets: imagenet"):
        build_config({})


def test_errors_name_the_source_of_the_value(tmp_path):
    path = tmp_path / "my_run.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  epochs: ten\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(path, {"data.dataset": "eurosat"})
    assert info.value.key == "optim.epochs" and info.value.source == str(path)
    assert str(path) in str(info.value) and "'ten'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        resolve_config(path, {"data.dataset": "eurosat", "optim.epochs": "ten"})
    assert info.value.source == "<overrides>"


def test_yaml_preset_file_fills_missing_values_with_defaults(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("method: coop\noptim:\n  lr: 2e-3\n")
    cfg = resolve_config(path, {"data.dataset": "dtd"})
    assert cfg.optim.lr == 0.002 and isinstance(cfg.optim.lr, float)
    assert cfg.method == "coop" and cfg.prompts.text_depth == 1 and cfg.prompts.vision_depth == 0
    assert cfg.optim.epochs == 10


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="valid presets: official, fixed"):
        load_preset("offical")


def test_parse_override_reads_yaml_typed_values():
    assert parse_override("optim.lr=1e-5") == ("optim.lr", 1e-5)
    assert parse_override("optim.epochs=3") == ("optim.epochs", 3)
    assert parse_override("meta.gate_repeat=null") == ("meta.gate_repeat", None)
    assert parse_override("meta.beta=[0.3, 0.3]") == ("meta.beta", [0.3, 0.3])
    assert parse_override("gate_optim.step_scheduler=true") == ("gate_optim.step_scheduler", True)
    assert parse_override("prompts.text_init=a photo of a") == ("prompts.text_init", "a photo of a")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("optim.lr")


def test_apply_overrides_checks_keys_and_leaves_input_untouched():
    base = load_preset("official")
    out = apply_overrides(base, {"optim.lr": 0.1})
    assert out["optim"]["lr"] == 0.1 and base["optim"]["lr"] == 0.0025
    with pytest.raises(ConfigError) as info:
        apply_overrides(base, {"optimiser.lr": 0.1})
    assert info.value.key == "optimiser.lr"


def test_explicit_override_wins_over_the_method():
    cfg = official(method="coop", **{"prompts.text_depth": 3})
    assert cfg.prompts.text_depth == 3 and cfg.prompts.vision_depth == 0
    assert official(method="coop").prompts.text_depth == 1


def test_scientific_dict_leaves_out_what_cannot_change_results():
    cfg = official()
    other = official(
        **{
            "data.num_workers": 0,
            "backbone.device": "cpu",
            "data.cache_dir": "/tmp/x",
            "prompts.truncate_text": False,
            "eval.per_class": False,
        }
    )
    assert cfg.scientific_dict() == other.scientific_dict()
    assert cfg.scientific_dict() != official(**{"regularizer.text_weight": 25}).scientific_dict()
    assert cfg.scientific_dict() != official(seed=2).scientific_dict()
    flat = flatten(cfg.scientific_dict())
    assert "data.num_workers" not in flat and "backbone.device" not in flat
    assert "data.dataset" in flat and "backbone.pretrained" in flat


def test_relative_paths_become_absolute_at_build_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = official(**{"backbone.pretrained": "weights/clip.pt", "data.cache_dir": "cache"})
    assert cfg.backbone.pretrained == str(tmp_path / "weights" / "clip.pt")
    assert cfg.data.cache_dir == str(tmp_path / "cache")
    assert official().backbone.pretrained == "openai"  # a hub tag stays a tag
    monkeypatch.chdir(Path("/"))
    assert build_config(cfg.to_dict()) == cfg


def test_every_field_has_a_doc_line():
    docs = describe_fields()
    flat = flatten(official().to_dict())
    assert set(docs) == set(flat)
    assert all(docs[k] and "\n" not in docs[k] for k in docs)


def test_config_is_frozen():
    cfg = official()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    assert isinstance(cfg, RunConfig)


def test_a_section_override_merges_key_by_key():
    cfg = official(optim={"lr": 0.01, "epochs": 3})
    assert cfg.optim.lr == 0.01 and cfg.optim.epochs == 3 and cfg.optim.momentum == 0.9
    with pytest.raises(ConfigError) as info:
        official(optim={"lrr": 0.01})
    assert info.value.key == "optim.lrr"


def test_train_help_lists_every_run_config_key_with_its_doc():
    from click.testing import CliRunner

    from orchestration.cli import main
    from prometar.config import describe_fields

    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    for key, doc in describe_fields().items():
        assert any(line.split()[:1] == [key] and doc in " ".join(line.split()) for line in lines), key
    assert len(describe_fields()) > 40 and all(describe_fields().values())  # every field documented
