"""The baseline presets and sweep files train what docs/recipes.md documents, value by value."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from orchestration.sweeps.planning import load_plan
from prometar.config import flatten, list_presets, load_preset, parse_yaml, resolve_config
from prometar.data import catalog

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "recipes.md"
SWEEPS = ROOT / "sweeps"
BASELINE_SWEEPS = (
    "baselines.yaml",
    "baselines_coop.yaml",
    "baselines_coop_imagenet.yaml",
    "baselines_ivlp.yaml",
    "baselines_vpt.yaml",
)
BASELINE_PRESETS = ("coop_official", "coop_official_imagenet", "ivlp_official", "vpt_official")
PROTOCOL_PRESETS = ("promptsrc_cross_dataset", "promptsrc_few_shot")
# protocol sweep file -> the preset docs/recipes.md says it trains with
PROTOCOL_SWEEPS = {
    "domain_generalization.yaml": "promptsrc_cross_dataset",
    "cross_dataset.yaml": "promptsrc_cross_dataset",
    "few_shot.yaml": "promptsrc_few_shot",
    "few_shot_prometar_recipe.yaml": "official",
}

# What a recipe must pin down (docs/recipes.md lists each with its source).
RECIPE_KEYS = {
    "method", "backbone.name", "backbone.pretrained",
    "prompts.text_tokens", "prompts.text_init", "prompts.text_depth", "prompts.vision_depth",
    "regularizer.enabled", "meta.enabled",
    "optim.name", "optim.lr", "optim.momentum", "optim.weight_decay", "optim.epochs",
    "optim.warmup_epochs", "optim.warmup_lr", "optim.scheduler",
    "data.shots", "data.batch_size", "data.drop_last", "data.test_batch_size",
}  # fmt: skip

_ROW = re.compile(r"^\| `([\w.]+)` \| `([^`]*)` \| (.+) \|$")
_TEMPLATE_ROW = re.compile(r"^\| `(\w+)` \| `([^`]*)` \|$")


def recipe_sections() -> dict[tuple[str, str | None], dict[str, Any]]:
    """``(preset, method of the heading or None) -> {dotted key: value}`` from the recipe tables."""
    sections: dict[tuple[str, str | None], dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):
            preset = re.search(r"preset `(\w+)`", line) if line.startswith("### ") else None
            method = re.search(r"method `(\w+)`", line)
            current = None
            if preset:
                current = sections.setdefault((preset.group(1), method.group(1) if method else None), {})
            continue
        row = _ROW.match(line)
        if current is not None and row:
            key, raw, source = row.groups()
            assert key not in current, f"{key} listed twice"
            assert source.strip(), f"{key} has no source"
            current[key] = parse_yaml(raw)
    return sections


def zero_shot_templates() -> dict[str, str]:
    """The zero-shot template table: dataset -> template."""
    out: dict[str, str] = {}
    inside = False
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):
            inside = "method `zeroshot`" in line
        elif inside and (row := _TEMPLATE_ROW.match(line)):
            out[row.group(1)] = row.group(2)
    return out


def resolved(preset: str, method: str | None = None, dataset: str = "caltech101") -> dict[str, Any]:
    overrides: dict[str, Any] = {"data.dataset": dataset}
    if method:
        overrides["method"] = method
    return flatten(resolve_config(preset, overrides).to_dict())


def _same(actual: Any, documented: Any) -> bool:
    if isinstance(actual, (list, tuple)):
        return list(actual) == list(documented)
    return (
        type(actual) is type(documented)
        and actual == documented
        or (isinstance(actual, float) and isinstance(documented, int) and actual == documented)
    )


def test_the_page_documents_every_baseline_preset() -> None:
    sections = recipe_sections()
    assert {preset for preset, _ in sections} == {*BASELINE_PRESETS, *PROTOCOL_PRESETS, "official"}
    assert set(list_presets()) >= set(BASELINE_PRESETS)
    assert zero_shot_templates(), "zero-shot template table not found"


@pytest.mark.parametrize("section", sorted(recipe_sections(), key=str))
def test_every_documented_value_is_what_its_preset_resolves_to(section: tuple[str, str | None]) -> None:
    preset, method = section
    values = recipe_sections()[section]
    flat = resolved(preset, method)
    wrong = {
        key: (flat.get(key, "<no such key>"), value)
        for key, value in values.items()
        if key not in flat or not _same(flat[key], value)
    }
    assert not wrong, f"preset {preset}: resolved vs documented {wrong}"


@pytest.mark.parametrize("preset", ["coop_official", "ivlp_official", "vpt_official", *PROTOCOL_PRESETS])
def test_a_recipe_documents_every_value_it_fixes(preset: str) -> None:
    documented = recipe_sections()[(preset, None)]
    # a protocol recipe keeps ProMetaR's backbone and scheme; few-shot takes its shots from the sweep
    kept = {"data.shots", "backbone.name", "backbone.pretrained", "regularizer.enabled", "meta.enabled"}
    assert set(documented) >= (RECIPE_KEYS - kept if preset in PROTOCOL_PRESETS else RECIPE_KEYS)
    # ... and every value in which the preset departs from ProMetaR's official one.
    official, own = flatten(load_preset("official")), flatten(load_preset(preset))
    departures = {key for key, value in own.items() if official.get(key, "<unset>") != value}
    assert departures <= set(documented), departures - set(documented)


def test_the_imagenet_coop_recipe_changes_exactly_the_documented_values() -> None:
    base, imagenet = flatten(load_preset("coop_official")), flatten(load_preset("coop_official_imagenet"))
    changed = {key for key in base.keys() | imagenet.keys() if base.get(key) != imagenet.get(key)}
    assert changed == set(recipe_sections()[("coop_official_imagenet", None)]) == {"optim.epochs"}


def test_zero_shot_templates_are_the_catalog_templates() -> None:
    assert zero_shot_templates() == {
        key: catalog.get_dataset(key).template for key in catalog.list_datasets()
    }


def _documented_values(method: str, dataset: str) -> dict[str, Any]:
    sections = recipe_sections()
    if method == "coop":
        values = dict(sections[("coop_official", None)])
        if dataset == "imagenet":
            values.update(sections[("coop_official_imagenet", None)])
        return values
    if method == "ivlp":
        return sections[("ivlp_official", None)]
    if method == "vpt":
        return sections[("vpt_official", None)]
    if method == "ivlp_reg":
        return sections[("official", "ivlp_reg")]
    assert method == "zeroshot", method
    return {
        "method": "zeroshot",
        "prompts.text_depth": 0,
        "prompts.vision_depth": 0,
        "regularizer.enabled": False,
        "meta.enabled": False,
    }


def test_the_baseline_sweeps_train_each_method_with_its_documented_recipe() -> None:
    cells: list[tuple[str, str, int]] = []
    for name in BASELINE_SWEEPS:
        plan = load_plan(SWEEPS / name)
        assert plan.name == "baselines"  # one MLflow experiment, one table
        for trial in plan.trials:
            cells.append((trial.method, trial.dataset, trial.seed))
            flat = flatten(trial.config)
            for key, value in _documented_values(trial.method, trial.dataset).items():
                assert _same(flat[key], value), f"{name}: {trial.method}/{trial.dataset} {key}={flat[key]!r}"
            assert trial.shots == 16
    # Every (method, dataset, seed) cell of the table exactly once across the five files.
    expected = {
        (m, d, s)
        for m in ("zeroshot", "coop", "ivlp", "vpt", "ivlp_reg")
        for d in catalog.BASE_TO_NEW_DATASETS
        for s in (1, 2, 3)
    }
    assert sorted(cells) == sorted(expected)


def test_prometar_on_the_baselines_trains_each_method_with_its_documented_recipe() -> None:
    sections = recipe_sections()
    plan = load_plan(SWEEPS / "prometar_on_baselines.yaml")
    assert plan.spec.preset == "official"
    cells = []
    for trial in plan.trials:
        cells.append((trial.method, trial.dataset, trial.seed))
        flat = flatten(trial.config)
        documented = sections[("official", trial.method)]
        assert {"method", "prompts.text_depth", "prompts.vision_depth", "optim.epochs"} <= set(documented)
        for key, value in documented.items():
            assert _same(flat[key], value), f"{trial.method}/{trial.dataset} {key}={flat[key]!r}"
        assert trial.shots == 16
    expected = {
        (m, d, s)
        for m in ("prometar_coop", "prometar_vpt")
        for d in catalog.BASE_TO_NEW_DATASETS
        for s in (1, 2, 3)
    }
    assert sorted(cells) == sorted(expected)


def test_prometar_on_other_designs_keeps_prometars_recipe() -> None:
    official = resolved("official", "prometar")
    for method in ("prometar_coop", "prometar_vpt"):
        flat = resolved("official", method)
        for key in (
            "optim.epochs",
            "optim.lr",
            "data.batch_size",
            "regularizer.text_weight",
            "meta.inner_lr",
        ):
            assert flat[key] == official[key]


@pytest.mark.parametrize("name", sorted(PROTOCOL_SWEEPS))
def test_the_protocol_sweeps_train_with_their_documented_recipe(name: str) -> None:
    preset = PROTOCOL_SWEEPS[name]
    plan = load_plan(SWEEPS / name)
    assert plan.spec.preset == preset
    documented = recipe_sections().get((preset, None), {})
    assert documented or preset == "official"
    for trial in plan.trials:
        flat = flatten(trial.config)
        for key, value in documented.items():
            assert _same(flat[key], value), f"{name}: {trial.method}/{trial.dataset} {key}={flat[key]!r}"
