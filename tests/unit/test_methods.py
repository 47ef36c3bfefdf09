"""Methods = prompt design × training scheme, resolved on top of a preset."""

from __future__ import annotations

import pytest

from prometar.config import resolve_config
from prometar.errors import ConfigError
from prometar.methods import get_method, list_methods


def resolved(method: str, **overrides):
    return resolve_config("official", {"data.dataset": "eurosat", "method": method, **overrides})


def test_registry_lists_every_method():
    assert list_methods() == [
        "zeroshot",
        "coop",
        "vpt",
        "ivlp",
        "ivlp_reg",
        "prometar",
        "prometar_coop",
        "prometar_vpt",
    ]


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(KeyError, match="valid methods: zeroshot, coop, vpt"):
        get_method("maple")


@pytest.mark.parametrize(
    ("method", "text_depth", "vision_depth", "scheme"),
    [
        ("zeroshot", 0, 0, "zeroshot"),
        ("coop", 1, 0, "plain"),
        ("vpt", 0, 9, "plain"),
        ("ivlp", 9, 9, "plain"),
        ("ivlp_reg", 9, 9, "regularized"),
        ("prometar", 9, 9, "prometar"),
        ("prometar_coop", 1, 0, "prometar"),
        ("prometar_vpt", 0, 9, "prometar"),
    ],
)
def test_method_resolves_into_prompt_design_and_scheme(method, text_depth, vision_depth, scheme):
    cfg = resolved(method)
    assert (cfg.prompts.text_depth, cfg.prompts.vision_depth) == (text_depth, vision_depth)
    assert cfg.scheme == scheme
    assert get_method(method).scheme == scheme
    assert get_method(method).trains == (scheme != "zeroshot")


def test_regularizer_and_meta_switches_follow_the_scheme():
    assert not resolved("ivlp").regularizer.enabled and not resolved("ivlp").meta.enabled
    assert resolved("ivlp_reg").regularizer.enabled and not resolved("ivlp_reg").meta.enabled
    assert resolved("prometar").meta.enabled


def test_method_settings_apply_over_any_preset_and_overrides_win():
    fixed = resolve_config("fixed", {"data.dataset": "dtd", "method": "vpt"})
    assert fixed.prompts.text_depth == 0 and fixed.gate_optim.step_scheduler
    deeper = resolved("vpt", **{"prompts.vision_depth": 5})
    assert deeper.prompts.vision_depth == 5


def test_deep_depth_sets_the_depth_of_deep_designs_and_leaves_others_alone():
    # A 3-block toy CLIP runs every method of one sweep with a single override.
    shallow = {"prompts.deep_depth": 3}
    assert (
        resolved("ivlp", **shallow).prompts.text_depth,
        resolved("ivlp", **shallow).prompts.vision_depth,
    ) == (3, 3)
    assert resolved("prometar_vpt", **shallow).prompts.vision_depth == 3
    assert resolved("prometar_vpt", **shallow).prompts.text_depth == 0
    assert resolved("coop", **shallow).prompts.text_depth == 1
    zero = resolved("zeroshot", **shallow)
    assert (zero.prompts.text_depth, zero.prompts.vision_depth) == (0, 0)


def test_deep_depth_must_be_a_positive_integer():
    with pytest.raises(ConfigError, match="prompts.deep_depth"):
        resolved("ivlp", **{"prompts.deep_depth": 0})
