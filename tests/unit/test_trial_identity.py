"""Trial keys hold what changes a method's result, and nothing that method never reads."""

from __future__ import annotations

import pytest

from orchestration.sweeps.keys import trial_key
from prometar.config import resolve_config


def key(method: str, **overrides) -> str:
    cfg = resolve_config("official", {"data.dataset": "eurosat", "method": method, **overrides})
    return trial_key(cfg.scientific_dict(), cfg.protocol)


@pytest.mark.parametrize(
    ("method", "ignored", "read"),
    [
        (
            "zeroshot",
            {
                "optim.lr": 0.1,
                "meta.inner_lr": 0.1,
                "regularizer.text_weight": 1.0,
                "gate_optim.lr": 0.1,
                "data.batch_size": 8,
                "prompts.text_tokens": 8,
            },
            {"data.test_batch_size": 50, "backbone.precision": "fp32"},
        ),
        (
            "coop",
            {
                "meta.inner_lr": 0.1,
                "regularizer.text_weight": 1.0,
                "gate_optim.lr": 0.1,
                "prompts.vision_tokens": 8,
                "prompts.deep_depth": 3,
            },
            {"optim.lr": 0.1, "data.batch_size": 8, "prompts.text_tokens": 8},
        ),
        (
            "vpt",
            {"prompts.text_tokens": 8},
            {"prompts.vision_tokens": 8, "prompts.text_init": "a picture of a"},
        ),
        (
            "ivlp",
            {"meta.inner_lr": 0.1, "regularizer.image_weight": 1.0},
            {"optim.lr": 0.1, "prompts.deep_depth": 3},
        ),
        ("ivlp_reg", {"meta.inner_lr": 0.1, "gate_optim.lr": 0.1}, {"regularizer.image_weight": 1.0}),
        ("prometar", {}, {"meta.inner_lr": 0.1, "gate_optim.lr": 0.1, "meta.gate_reduction": 4}),
    ],
)
def test_keys_ignore_what_the_method_never_reads(method, ignored, read):
    base = key(method)
    for name, value in ignored.items():
        assert key(method, **{name: value}) == base, f"{method}: {name} changed the key"
    for name, value in read.items():
        assert key(method, **{name: value}) != base, f"{method}: {name} did not change the key"


def test_a_gate_that_is_not_learned_has_no_gate_settings():
    for mode in ("constant", "off"):
        base = key("prometar", **{"meta.gate_mode": mode})
        assert key("prometar", **{"meta.gate_mode": mode, "gate_optim.lr": 0.1}) == base
        assert key("prometar", **{"meta.gate_mode": mode, "meta.gate_reduction": 4}) == base
        assert key("prometar", **{"meta.gate_mode": mode, "meta.inner_lr": 0.1}) != base
    assert key("prometar", **{"meta.gate_mode": "constant"}) != key("prometar", **{"meta.gate_mode": "off"})


def test_ignored_keys_name_real_fields_and_never_the_grid_axes():
    from prometar.config import flatten

    for method in ("zeroshot", "coop", "vpt", "ivlp", "ivlp_reg", "prometar"):
        cfg = resolve_config("official", {"data.dataset": "eurosat", "method": method})
        fields = set(flatten(cfg.to_dict()))
        assert set(cfg.ignored_keys()) <= fields
        assert not {"method", "seed", "data.dataset", "data.shots", "protocol"} & set(cfg.ignored_keys())
