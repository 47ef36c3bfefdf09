"""Every shipped sweep file validates and expands to the trial count its grid promises."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.sweeps.planning import load_plan, plan_sweep

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
B2N = 11  # the base-to-new datasets
BASELINES = (
    "baselines.yaml",
    "baselines_coop.yaml",
    "baselines_coop_imagenet.yaml",
    "baselines_ivlp.yaml",
    "baselines_vpt.yaml",
)
SOURCE = "transfer_source"  # a transfer sweep's source models: one per (method, seed, recipe)

# file -> (trial count, distinct planned trials or search groups, sweep protocol); a transfer
# sweep plans its source models besides its grid (3 seeds: 3 source models)
EXPECTED = {
    "base2new.yaml": (B2N * 3, B2N * 3, "base2new"),
    "baselines.yaml": (2 * B2N * 3, 2 * B2N * 3, "base2new"),
    "baselines_coop.yaml": ((B2N - 1) * 3, (B2N - 1) * 3, "base2new"),
    "baselines_coop_imagenet.yaml": (3, 3, "base2new"),
    "baselines_ivlp.yaml": (B2N * 3, B2N * 3, "base2new"),
    "baselines_vpt.yaml": (B2N * 3, B2N * 3, "base2new"),
    "prometar_on_baselines.yaml": (2 * B2N * 3, 2 * B2N * 3, "base2new"),
    "ablation_meta.yaml": (6 * 5 * 3, 6 * 5 * 3, "base2new"),
    "domain_generalization.yaml": (3, 3 + 3, "domain_generalization"),
    "cross_dataset.yaml": (3, 3 + 3, "cross_dataset"),
    "few_shot.yaml": (B2N * 3 * 5, B2N * 3 * 5, "few_shot"),
    "few_shot_prometar_recipe.yaml": (B2N * 3 * 5, B2N * 3 * 5, "few_shot"),
    "reg_strength_search.yaml": (4 * 24, 4, "search"),
    "demo.yaml": (3 * 3 * 5, 3 * 3 * 5, "base2new"),
}


def test_every_sweep_file_is_covered() -> None:
    assert sorted(p.name for p in SWEEPS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sweep_file_validates_and_expands(name: str) -> None:
    count, planned, protocol = EXPECTED[name]
    spec = load_plan(SWEEPS / name).spec
    trials = list(plan_sweep(spec).trials)
    assert spec.trial_count == count
    assert len(trials) == planned
    assert len({t.key for t in trials}) == planned  # no two grid points collapse into one config
    assert {t.protocol for t in trials} - {SOURCE} == {protocol}
    if spec.search:
        assert len(plan_sweep(spec).groups) == planned
    result = CliRunner().invoke(main, ["validate", str(SWEEPS / name)])
    assert result.exit_code == 0, result.output
    assert f"trials: {count}" in result.output
    methods = dict.fromkeys(t.method for t in trials)
    assert f"recipe: {'; '.join(f'{m}: preset {spec.preset}' for m in methods)}" in result.output


def test_paper_sweeps_use_the_paper_backbone() -> None:
    for name in ("base2new.yaml", "prometar_on_baselines.yaml", *BASELINES):
        for trial in load_plan(SWEEPS / name).trials:
            assert trial.config["backbone"]["name"] == "ViT-B-16-quickgelu"
            assert trial.config["backbone"]["pretrained"] == "openai"
            assert trial.shots == 16 and trial.seed in (1, 2, 3)


def test_ablation_arms_differ_in_the_intended_keys() -> None:
    trials = [
        t for t in load_plan(SWEEPS / "ablation_meta.yaml").trials if t.dataset == "dtd" and t.seed == 1
    ]
    arms = {
        (
            t.method,
            t.config["meta"]["gate_mode"],
            t.config["meta"]["order"],
            t.config["gate_optim"]["step_scheduler"],
            t.config["meta"]["gate_repeat"],
        )
        for t in trials
    }
    assert arms == {
        ("prometar", "learned", "second", False, 8),
        ("prometar", "constant", "second", False, 8),
        ("prometar", "off", "second", False, 8),
        ("ivlp_reg", "learned", "second", False, 8),
        ("prometar", "learned", "first", False, 8),
        ("prometar", "learned", "second", True, None),
    }
    meta_off = next(t for t in trials if t.method == "ivlp_reg")
    assert meta_off.config["meta"]["enabled"] is False


def test_few_shot_runs_on_all_classes_and_generalisation_on_its_targets() -> None:
    few = list(load_plan(SWEEPS / "few_shot.yaml").trials)
    assert {t.config["protocol"] for t in few} == {"all_classes"}
    assert {t.shots for t in few} == {1, 2, 4, 8, 16}
    dg = [t for t in load_plan(SWEEPS / "domain_generalization.yaml").trials if t.protocol != SOURCE]
    assert set(dg[0].config["eval"]["targets"]) == {
        "imagenet_v2",
        "imagenet_sketch",
        "imagenet_a",
        "imagenet_r",
    }


def test_domain_generalisation_and_cross_dataset_share_one_source_model_per_seed() -> None:
    plans = [load_plan(SWEEPS / name) for name in ("domain_generalization.yaml", "cross_dataset.yaml")]
    sources = [{t.seed: t.key for t in plan.trials if t.protocol == SOURCE} for plan in plans]
    assert sources[0] == sources[1] and sorted(sources[0]) == [1, 2, 3]
    for plan, by_seed in zip(plans, sources, strict=True):
        transfer = [t for t in plan.trials if t.protocol != SOURCE]
        assert {t.source for t in transfer} == set(by_seed.values())
        assert all(t.source == by_seed[t.seed] for t in transfer)
        for source in (t for t in plan.trials if t.protocol == SOURCE):
            assert source.config["eval"]["targets"] == [] and source.dataset == "imagenet"
            assert source.config["prompts"]["text_depth"] == source.config["prompts"]["vision_depth"] == 3
            assert source.config["optim"]["epochs"] == 20 and source.source == ""
