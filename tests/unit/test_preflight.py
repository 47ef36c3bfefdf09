"""Pre-flight: inputs that cannot work are found before a run starts, once per distinct input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import prometar.preflight as preflight_module
from prometar.backbone import BackboneError, load_clip
from prometar.config import ConfigError, resolve_config
from prometar.errors import DataError
from prometar.preflight import Preflight
from prometar.toy.miniature import write_miniatures

TINY = {
    "backbone.name": "tiny-test",
    "backbone.pretrained": None,
    "prompts.text_depth": 2,
    "prompts.vision_depth": 2,
    "data.dataset": "eurosat",
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_miniatures(root, ["eurosat", "dtd"])
    return root


def config(**overrides):
    return resolve_config("official", {**TINY, **overrides})


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_good_inputs_pass_and_nothing_is_written(data_root, tmp_path):
    weights = tmp_path / "tiny.pt"
    torch.save(load_clip("tiny-test").model.state_dict(), weights)
    before = snapshot(data_root)
    Preflight(data_root).check(config(**{"backbone.pretrained": str(weights)}))
    assert snapshot(data_root) == before


@pytest.mark.parametrize(("key", "depth"), [("prompts.vision_depth", 5), ("prompts.text_depth", 9)])
def test_prompts_deeper_than_the_backbone_name_the_key(data_root, key, depth):
    with pytest.raises(ConfigError) as info:
        Preflight(data_root).check(config(**{key: depth}))
    assert info.value.key == key and "0..4" in str(info.value) and "tiny-test" in str(info.value)


def test_an_unknown_backbone_is_refused(data_root):
    with pytest.raises(BackboneError, match="no-such-clip"):
        Preflight(data_root).check(config(**{"backbone.name": "no-such-clip"}))


def test_a_missing_checkpoint_is_named(data_root, tmp_path):
    with pytest.raises(BackboneError, match=str(tmp_path / "absent.pt")):
        Preflight(data_root).check(config(**{"backbone.pretrained": str(tmp_path / "absent.pt")}))


def test_a_checkpoint_of_another_architecture_is_refused(data_root, tmp_path):
    weights = tmp_path / "parity.pt"
    torch.save(load_clip("parity-tiny").model.state_dict(), weights)
    with pytest.raises(BackboneError, match=r"parity\.pt does not fit the model"):
        Preflight(data_root).check(config(**{"backbone.pretrained": str(weights)}))


def test_a_dataset_without_its_split_file_is_named(data_root, tmp_path):
    root = tmp_path / "data"
    write_miniatures(root, ["eurosat"])
    split = root / "eurosat" / "split_zhou_EuroSAT.json"
    split.unlink()
    with pytest.raises(DataError, match=str(split)):
        Preflight(root).check(config())


def test_a_missing_image_is_named(tmp_path):
    root = tmp_path / "data"
    write_miniatures(root, ["dtd"])
    image = next((root / "dtd" / "images").rglob("*.jpg"))
    image.unlink()
    with pytest.raises(DataError, match=str(image)):
        Preflight(root).check(config(**{"data.dataset": "dtd"}))


def test_evaluation_targets_are_checked_too(data_root):
    cfg = config(
        **{"protocol": "cross_dataset", "data.dataset": "eurosat", "eval.targets": ["dtd", "food101"]}
    )
    with pytest.raises(DataError, match="food101"):
        Preflight(data_root).check(cfg)


def test_each_distinct_input_is_checked_once(data_root, tmp_path, monkeypatch):
    weights = tmp_path / "tiny.pt"
    torch.save(load_clip("tiny-test").model.state_dict(), weights)
    calls = {"data": 0, "weights": 0}
    real_check, real_load = preflight_module.check_datasets, preflight_module.load_clip

    def counting_check(*args, **kwargs):
        calls["data"] += 1
        return real_check(*args, **kwargs)

    def counting_load(*args, **kwargs):
        calls["weights"] += 1
        return real_load(*args, **kwargs)

    monkeypatch.setattr(preflight_module, "check_datasets", counting_check)
    monkeypatch.setattr(preflight_module, "load_clip", counting_load)
    checker = Preflight(data_root)
    for seed in (1, 2, 3):
        for dataset in ("eurosat", "dtd"):
            checker.check(
                config(**{"seed": seed, "data.dataset": dataset, "backbone.pretrained": str(weights)})
            )
    assert calls == {"data": 2, "weights": 1}
