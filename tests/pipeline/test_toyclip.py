"""The toy CLIP: context length, compact-embedding pretraining, the cached build and its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from prometar import toyclip
from prometar.backbone import load_clip, load_model_config
from prometar.data import toyworld as tw
from prometar.data.catalog import get_dataset

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = [
    line.strip()
    for line in (REPO / "prometar/resources/teacher_templates_60.txt").read_text().splitlines()
    if line.strip()
]

# A build small enough for a unit test: a few steps, one dataset, a handful of images.
TINY = {
    "n_pretrain": 256,
    "batch_size": 32,
    "warmup_steps": 2,
    "train_per_class": 2,
    "val_per_class": 1,
    "test_per_class": 2,
    "eval_per_combination": 1,
    "datasets": ("eurosat",),
}


def _all_toy_class_names() -> list[str]:
    names = {f"{c} {s}" for c, s in tw.ALL_COMBINATIONS}
    for key in tw.TOY_DATASETS:
        names.update(c.name.replace("_", " ") for c in tw.toy_dataset_classes(key, seed=0))
    return sorted(names)


def test_context_length_fits_every_prompt_without_truncation() -> None:
    length = toyclip.context_length()
    names = _all_toy_class_names()
    assert len(TEMPLATES) == 60
    longest = max(names, key=lambda n: toyclip.token_count(n))
    texts = [t.format(n) for t in TEMPLATES for n in names]
    texts += [get_dataset(k).template.format(n) for k in tw.TOY_DATASETS for n in names]
    texts += [f"X X X X {n}." for n in names]  # SOS + 4 prompt tokens + "<class name>." + EOS
    texts += [
        t.format(c=c, s=s, z=z, p=p)
        for t in tw.CAPTION_TEMPLATES
        for c, s in tw.ALL_COMBINATIONS
        for z in tw.SIZES
        for p in tw.POSITIONS.values()
    ]
    needed = max(toyclip.token_count(t) for t in texts)
    assert needed <= length, f"{needed} tokens needed, context {length} (longest class name {longest!r})"
    assert toyclip.token_count("X X X X cyan triangle.") == 1 + 4 + 3 + 1 + 1  # "cyan" is two tokens


def test_config_matches_the_design() -> None:
    config = load_model_config("toy-clip")
    assert config["embed_dim"] == 128
    assert (config["vision_cfg"]["image_size"], config["vision_cfg"]["patch_size"]) == (32, 8)
    assert (config["vision_cfg"]["width"], config["vision_cfg"]["layers"]) == (128, 4)
    assert (config["text_cfg"]["width"], config["text_cfg"]["layers"]) == (128, 3)
    model = toyclip.create_toy_clip(0)
    assert isinstance(model, open_clip.CLIP)
    same = toyclip.create_toy_clip(0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), same.state_dict().values(), strict=True)
    )


def test_pretraining_updates_only_the_token_rows_the_captions_use() -> None:
    world = tw.render_set(64, seed=0)
    model = toyclip.create_toy_clip(0)
    before = model.token_embedding.weight.detach().clone()
    tower = model.visual.conv1.weight.detach().clone()
    out = toyclip.pretrain(
        model, world.images, world.captions, seed=0, budget_s=60, max_steps=2, batch_size=32, warmup_steps=1
    )
    assert out["steps"] == 2 and np.isfinite(out["final_loss"])
    used = torch.unique(open_clip.SimpleTokenizer(context_length=16)(world.captions))
    after = model.token_embedding.weight.detach()
    assert model.token_embedding.num_embeddings == 49408  # the full table is back in place
    changed = (after != before).any(dim=1)
    # Padding (id 0) sits after the end-of-text token: the causal mask gives it no gradient.
    assert changed[used[used != 0]].all()
    assert not changed[~torch.isin(torch.arange(49408), used)].any()
    assert not torch.equal(tower, model.visual.conv1.weight)


def test_pretraining_is_deterministic_with_a_step_budget() -> None:
    world = tw.render_set(64, seed=0)
    states = []
    for _ in range(2):
        model = toyclip.create_toy_clip(1)
        toyclip.pretrain(model, world.images, world.captions, seed=1, budget_s=60, max_steps=2, batch_size=32)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_settings_are_validated_and_hashed() -> None:
    with pytest.raises(ValueError, match="budget_s"):
        toyclip.ToySettings(budget_s=0)
    with pytest.raises(ValueError, match="unknown datasets"):
        toyclip.ToySettings(datasets=("mnist",))
    assert toyclip.ToySettings().digest() == toyclip.ToySettings().digest()
    assert toyclip.ToySettings(seed=1).digest() != toyclip.ToySettings().digest()


def test_cache_is_reused_and_a_half_written_build_is_rebuilt(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    first = toyclip.build_toy(out, seed=0, budget_s=60, max_steps=2, **TINY)
    assert not first.reused and first.results["steps"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings_hash"] == toyclip.ToySettings(seed=0, budget_s=60, max_steps=2, **TINY).digest()

    again = toyclip.build_toy(out, seed=0, budget_s=60, max_steps=2, **TINY)
    assert again.reused and again.results == first.results

    # An interrupted build leaves no manifest (it is written last): it is never taken as done.
    (out / "manifest.json").unlink()
    (out / "data" / "half-written").mkdir()
    rebuilt = toyclip.build_toy(out, seed=0, budget_s=60, max_steps=2, **TINY)
    assert not rebuilt.reused
    assert not (out / "data" / "half-written").exists()

    # A manifest whose checkpoint went missing is not done either.
    (out / "toy_clip.pt").unlink()
    assert not toyclip.build_toy(out, seed=0, budget_s=60, max_steps=2, **TINY).reused

    # Other settings, another build.
    assert not toyclip.build_toy(out, seed=1, budget_s=60, max_steps=2, **TINY).reused
    assert json.loads((out / "manifest.json").read_text())["settings"]["seed"] == 1


@pytest.mark.slow
def test_reduced_build_learns_and_its_checkpoint_loads(tmp_path: Path) -> None:
    """A reduced toy world and toy CLIP, built within a minute, already read colours and shapes."""
    build = toyclip.build_toy(
        tmp_path / "toy",
        seed=0,
        budget_s=45,
        max_steps=60,
        n_pretrain=4000,
        batch_size=64,
        warmup_steps=5,
        train_per_class=2,
        val_per_class=1,
        test_per_class=10,
        eval_per_combination=10,
        datasets=("oxford_pets", "fgvc_aircraft", "imagenet"),
    )
    r = build.results
    assert r["build_seconds"] < 60
    assert r["steps"] > 10  # 60 unless the machine is so loaded that the budget cut it short
    assert r["chance"] == pytest.approx(1 / 64)
    assert r["seen_acc"] > 3 * r["chance"]
    assert set(r["datasets"]) == {"oxford_pets", "fgvc_aircraft", "imagenet"}
    for row in r["datasets"].values():
        assert 0.0 <= row["base"] <= 1.0 and row["colour_only_base"] == pytest.approx(0.5)

    # Loadable by the project's backbone loader and by plain open_clip.
    backbone = load_clip(build.model_name, str(build.checkpoint))
    assert backbone.context_length == 16 and backbone.image_size == 32
    open_clip.add_model_config(REPO / "prometar" / "model_configs")
    plain = open_clip.create_model("toy-clip")
    state = torch.load(build.checkpoint, map_location="cpu", weights_only=True)
    plain.load_state_dict(state["state_dict"])
    for key, value in plain.state_dict().items():
        assert torch.equal(value, backbone.model.state_dict()[key])


def test_toy_build_verb_passes_its_options_and_prints_the_figures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from orchestration.cli import main

    calls = []
    row = {
        "style": "noise",
        "systematic": True,
        "base": 0.61,
        "new": 0.57,
        "colour_only_base": 0.5,
        "colour_only_new": 0.5,
        "shape_only_base": 0.5,
        "shape_only_new": 0.5,
        "chance_base": 0.125,
        "chance_new": 0.125,
    }
    results = {
        "steps": 900,
        "train_seconds": 230.0,
        "final_loss": 0.9,
        "build_seconds": 280.0,
        "chance": 1 / 64,
        "heldout_acc": 0.55,
        "seen_acc": 0.9,
        "datasets": {"oxford_pets": row},
    }

    def fake_build(output, **kwargs):
        calls.append((output, kwargs))
        return toyclip.ToyBuild(
            Path(output), Path(output) / "data", Path(output) / "toy_clip.pt", "toy-clip", False, results
        )

    monkeypatch.setattr(toyclip, "build_toy", fake_build)
    out = CliRunner().invoke(
        main, ["toy", "build", "--output", str(tmp_path), "--budget-seconds", "30", "--seed", "3"]
    )
    assert out.exit_code == 0, out.output
    assert calls == [(str(tmp_path), {"seed": 3, "budget_s": 30.0, "force": False})]
    assert "held-out combinations 55.0% (35x chance), seen 90.0%, chance 1.6%" in out.output
    assert "oxford_pets" in out.output and "61.0" in out.output and "57.0" in out.output
