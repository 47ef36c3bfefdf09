"""The toy CLIP and the toy build: pretraining, precision, reproducibility, floor, cache, checkpoint."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from prometar.backbone import load_clip, load_model_config
from prometar.data.catalog import get_dataset
from prometar.toy import build as toy_build
from prometar.toy import clip as toy_clip
from prometar.toy import datasets as td
from prometar.toy import world as tw

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = [
    line.strip()
    for line in (REPO / "prometar/resources/teacher_templates_60.txt").read_text().splitlines()
    if line.strip()
]

# A build small enough for a unit test: two steps, one dataset, a handful of images, no quality floor.
TINY = {
    "steps": 2,
    "n_pretrain": 256,
    "batch_size": 32,
    "warmup_steps": 1,
    "train_per_class": 2,
    "val_per_class": 1,
    "test_per_class": 2,
    "eval_per_combination": 1,
    "datasets": ("eurosat",),
    "min_heldout_acc": 0.0,
}
TINY_SETTINGS = {k: v for k, v in TINY.items() if k != "min_heldout_acc"}


def _all_toy_class_names() -> list[str]:
    names = {f"{c} {s}" for c, s in tw.ALL_COMBINATIONS}
    for key in td.TOY_DATASETS:
        names.update(c.name.replace("_", " ") for c in td.toy_dataset_classes(key, seed=0))
    return sorted(names)


def test_context_length_fits_every_prompt_without_truncation() -> None:
    length = toy_clip.context_length()
    names = _all_toy_class_names()
    assert len(TEMPLATES) == 60
    longest = max(names, key=lambda n: toy_clip.token_count(n))
    texts = [t.format(n) for t in TEMPLATES for n in names]
    texts += [get_dataset(k).template.format(n) for k in td.TOY_DATASETS for n in names]
    texts += [f"X X X X {n}." for n in names]  # SOS + 4 prompt tokens + "<class name>." + EOS
    texts += [
        t.format(c=c, s=s, z=z, p=p)
        for t in tw.CAPTION_TEMPLATES
        for c, s in tw.ALL_COMBINATIONS
        for z in tw.SIZES
        for p in tw.POSITIONS.values()
    ]
    needed = max(toy_clip.token_count(t) for t in texts)
    assert needed <= length, f"{needed} tokens needed, context {length} (longest class name {longest!r})"
    assert toy_clip.token_count("X X X X cyan triangle.") == 1 + 4 + 3 + 1 + 1  # "cyan" is two tokens


def test_config_matches_the_design() -> None:
    config = load_model_config("toy-clip")
    assert config["embed_dim"] == 128
    assert (config["vision_cfg"]["image_size"], config["vision_cfg"]["patch_size"]) == (32, 8)
    assert (config["vision_cfg"]["width"], config["vision_cfg"]["layers"]) == (64, 4)
    assert (config["text_cfg"]["width"], config["text_cfg"]["layers"]) == (64, 3)
    model = toy_clip.create_toy_clip(0)
    assert isinstance(model, open_clip.CLIP)
    same = toy_clip.create_toy_clip(0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), same.state_dict().values(), strict=True)
    )


def test_pretraining_updates_only_the_token_rows_the_captions_use() -> None:
    world = tw.render_set(64, seed=0)
    model = toy_clip.create_toy_clip(0)
    before = model.token_embedding.weight.detach().clone()
    tower = model.visual.conv1.weight.detach().clone()
    out = toy_clip.pretrain(
        model, world.images, world.captions, seed=0, steps=2, batch_size=32, warmup_steps=1
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


def test_learning_rate_warms_up_then_decays_to_zero_over_the_fixed_steps() -> None:
    factors = [toy_clip._lr_factor(step, 10, 2) for step in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0) and factors[6] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(factors[2:], factors[3:], strict=False)) and factors[-1] > 0.0
    assert toy_clip._lr_factor(10, 10, 2) == pytest.approx(0.0)


def test_pretraining_is_deterministic_and_runs_every_step() -> None:
    world = tw.render_set(64, seed=0)
    states = []
    for _ in range(2):
        model = toy_clip.create_toy_clip(1)
        assert (
            toy_clip.pretrain(model, world.images, world.captions, seed=1, steps=3, batch_size=32)["steps"]
            == 3
        )
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_a_time_limit_aborts_pretraining_instead_of_shortening_it() -> None:
    world = tw.render_set(64, seed=0)
    with pytest.raises(TimeoutError, match="at step 0 of 5"):
        toy_clip.pretrain(
            toy_clip.create_toy_clip(0),
            world.images,
            world.captions,
            seed=0,
            steps=5,
            batch_size=32,
            deadline=time.monotonic() - 1.0,
        )


def test_bf16_only_where_native_otherwise_fp32_with_the_same_steps(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(toy_clip, "native_bf16", lambda device: True)
    assert toy_clip.resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(toy_clip, "native_bf16", lambda device: False)
    assert toy_clip.resolve_precision("bf16", "cpu") == "fp32"
    assert toy_clip.resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        toy_clip.resolve_precision("fp16", "cpu")  # type: ignore[arg-type]

    seen: list[bool] = []
    real_loop = toy_clip._contrastive_loop

    def spy(*args, **kwargs):
        seen.append(kwargs["bf16"])
        return real_loop(*args, **kwargs)

    monkeypatch.setattr(toy_clip, "_contrastive_loop", spy)
    world = tw.render_set(64, seed=0)
    out = toy_clip.pretrain(
        toy_clip.create_toy_clip(0),
        world.images,
        world.captions,
        seed=0,
        steps=2,
        batch_size=32,
        precision="bf16",
    )
    assert seen == [False] and out["steps"] == 2
    # A bf16 build on such a CPU is the fp32 build: same steps, same checkpoint, same cache key.
    bf16 = toy_build.build_toy(tmp_path / "bf16", seed=0, precision="bf16", **TINY)
    fp32 = toy_build.build_toy(tmp_path / "fp32", seed=0, precision="fp32", **TINY)
    assert seen == [False, False, False] and bf16.results["steps"] == fp32.results["steps"] == TINY["steps"]
    assert bf16.results["precision"] == "fp32"
    assert bf16.results["checkpoint_sha256"] == fp32.results["checkpoint_sha256"]
    assert (
        toy_build.read_manifest(bf16.output_dir)["settings_hash"]
        == toy_build.ToySettings(**TINY_SETTINGS).digest()
    )


def test_native_bf16_probe_reads_the_cpu_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not toy_clip.native_bf16("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert toy_clip.native_bf16("cpu")


def test_settings_are_validated() -> None:
    for bad in (
        {"steps": 0},
        {"batch_size": 1},
        {"threads": 0},
        {"precision": "fp16"},
        {"warmup_steps": 5, "steps": 4},
    ):
        with pytest.raises(ValueError, match="toy settings: invalid"):
            toy_build.ToySettings(**bad)
    with pytest.raises(ValueError, match="unknown datasets"):
        toy_build.ToySettings(datasets=("mnist",))
    assert not hasattr(toy_build.ToySettings(), "budget_s")  # no wall-clock budget


CHANGED = {
    "seed": 1,
    "steps": 1001,
    "n_pretrain": 40_001,
    "batch_size": 129,
    "lr": 3e-3,
    "weight_decay": 0.05,
    "warmup_steps": 51,
    "precision": "bf16",
    "threads": 2,
    "train_per_class": 23,
    "val_per_class": 7,
    "test_per_class": 99,
    "eval_per_combination": 19,
    "datasets": ("eurosat",),
}


def test_every_checkpoint_affecting_setting_changes_the_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    default = toy_build.ToySettings()
    assert set(CHANGED) == {f.name for f in dataclasses.fields(default)}  # every field is covered here
    assert default.digest() == toy_build.ToySettings().digest()
    digests = {default.digest()}
    for name, value in CHANGED.items():
        assert getattr(default, name) != value
        digests.add(toy_build.ToySettings(**{name: value}).digest())
    assert len(digests) == 1 + len(CHANGED)
    # The model config, the code versions, the device and the CPU kernels enter too.
    assert default.digest("cuda") != default.digest("cpu")
    for attribute, value in (("WORLD_VERSION", 99), ("TRAINER_VERSION", 99)):
        with monkeypatch.context() as m:
            m.setattr(toy_build, attribute, value)
            assert default.digest() not in digests
    with monkeypatch.context() as m:
        wider = {**load_model_config("toy-clip"), "embed_dim": 256}
        m.setattr(toy_build, "load_model_config", lambda name: wider)
        assert default.digest() not in digests
    with monkeypatch.context() as m:
        m.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "OTHER")
        assert default.digest() not in digests


def test_two_builds_with_the_same_seed_give_the_same_checkpoint(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    first = toy_build.build_toy(tmp_path / "a", seed=0, **TINY)
    second = toy_build.build_toy(tmp_path / "b", seed=0, **TINY)
    other = toy_build.build_toy(tmp_path / "c", seed=1, **TINY)
    assert torch.get_num_threads() == threads  # the caller's thread count is restored
    assert not torch.are_deterministic_algorithms_enabled()
    digest = toy_build.file_sha256(first.checkpoint)
    assert first.results["checkpoint_sha256"] == digest == toy_build.file_sha256(second.checkpoint)
    assert other.results["checkpoint_sha256"] != digest
    timings = {"train_seconds", "render_seconds", "build_seconds"}
    assert {k: v for k, v in first.results.items() if k not in timings} == {
        k: v for k, v in second.results.items() if k not in timings
    }
    assert (
        first.results["steps"] == 2 and first.results["precision"] == "fp32" and first.results["threads"] == 1
    )
    files = sorted(p.relative_to(first.data_root) for p in first.data_root.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(second.data_root) for p in second.data_root.rglob("*") if p.is_file()
    )
    assert all((first.data_root / f).read_bytes() == (second.data_root / f).read_bytes() for f in files)
    # Trials take the checkpoint by content: a rebuild from scratch is the same trial, other weights are not.
    from orchestration.sweeps.keys import trial_key

    def key(build: toy_build.ToyBuild) -> str:
        return trial_key({"backbone": {"name": "toy-clip", "pretrained": str(build.checkpoint)}}, "base2new")

    assert key(first) == key(second) != key(other)


def _leftovers(out: Path) -> list[str]:
    return sorted(
        p.name
        for p in out.parent.iterdir()
        if p.name.startswith(f".{out.name}.") and not p.name.endswith(".lock")
    )


def test_a_build_under_the_quality_floor_fails_and_caches_nothing(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    with pytest.raises(toy_build.ToyQualityError, match="under the floor of 99.0%.*Nothing was cached"):
        toy_build.build_toy(out, seed=0, **{**TINY, "min_heldout_acc": 0.99})
    assert not out.exists() and _leftovers(out) == []

    # A finished build of other settings survives a failed one; a cached build under a raised floor
    # is refused, not returned.
    kept = toy_build.build_toy(out, seed=1, **TINY)
    with pytest.raises(toy_build.ToyQualityError):
        toy_build.build_toy(out, seed=0, **{**TINY, "min_heldout_acc": 0.99})
    assert toy_build.read_manifest(out)["settings"]["seed"] == 1 and kept.checkpoint.is_file()
    with pytest.raises(toy_build.ToyQualityError, match="the cached build"):
        toy_build.build_toy(out, seed=1, **{**TINY, "min_heldout_acc": 0.99})
    assert toy_build.build_toy(out, seed=1, **TINY).reused and _leftovers(out) == []


def test_a_build_past_its_time_limit_fails_and_caches_nothing(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    with pytest.raises(toy_build.ToyBuildError, match="time limit.*never cut short"):
        toy_build.build_toy(out, seed=0, time_limit_s=1e-9, **TINY)
    assert not out.exists() and _leftovers(out) == []


def test_cache_is_reused_and_a_half_written_build_is_never_reused(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    first = toy_build.build_toy(out, seed=0, **TINY)
    assert not first.reused and first.results["steps"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings_hash"] == toy_build.ToySettings(seed=0, **TINY_SETTINGS).digest()
    assert manifest["results"]["checkpoint_sha256"] == toy_build.file_sha256(out / "toy_clip.pt")

    again = toy_build.build_toy(out, seed=0, **TINY)
    assert again.reused and again.results == first.results

    # What an interrupted builder leaves (its scratch folder beside the build) is removed, never used.
    (out.parent / ".toy.partial-999999" / "data").mkdir(parents=True)
    assert toy_build.build_toy(out, seed=0, **TINY).reused and _leftovers(out) == []

    # A folder without its manifest, or whose checkpoint is missing or altered, is not done.
    (out / "manifest.json").unlink()
    (out / "data" / "half-written").mkdir()
    rebuilt = toy_build.build_toy(out, seed=0, **TINY)
    assert not rebuilt.reused and not (out / "data" / "half-written").exists()
    assert rebuilt.results["checkpoint_sha256"] == first.results["checkpoint_sha256"]
    (out / "toy_clip.pt").unlink()
    assert not toy_build.build_toy(out, seed=0, **TINY).reused
    with open(out / "toy_clip.pt", "ab") as handle:
        handle.write(b"x")
    assert not toy_build.build_toy(out, seed=0, **TINY).reused

    # Other settings, another build.
    assert not toy_build.build_toy(out, seed=1, **TINY).reused
    assert json.loads((out / "manifest.json").read_text())["settings"]["seed"] == 1


@pytest.mark.slow
def test_reduced_build_learns_and_its_checkpoint_loads(tmp_path: Path) -> None:
    """A reduced toy world and toy CLIP (60 steps) already read colours and shapes."""
    build = toy_build.build_toy(
        tmp_path / "toy",
        seed=0,
        steps=60,
        n_pretrain=4000,
        batch_size=64,
        warmup_steps=5,
        train_per_class=2,
        val_per_class=1,
        test_per_class=10,
        eval_per_combination=10,
        datasets=("oxford_pets", "fgvc_aircraft", "imagenet"),
        min_heldout_acc=0.0,
    )
    r = build.results
    assert r["steps"] == 60
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
        "precision": "fp32",
        "threads": 1,
        "checkpoint_sha256": "ab" * 32,
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
        return toy_build.ToyBuild(
            Path(output), Path(output) / "data", Path(output) / "toy_clip.pt", "toy-clip", False, results
        )

    monkeypatch.setattr(toy_build, "build_toy", fake_build)
    out = CliRunner().invoke(
        main,
        ["toy", "build", "--output", str(tmp_path), "--steps", "30", "--seed", "3", "--time-limit", "600"],
    )
    assert out.exit_code == 0, out.output
    assert calls == [
        (
            str(tmp_path),
            {
                "seed": 3,
                "threads": 1,
                "precision": "fp32",
                "force": False,
                "steps": 30,
                "time_limit_s": 600.0,
            },
        )
    ]
    assert "held-out combinations 55.0% (35x chance), seen 90.0%, chance 1.6%" in out.output
    assert "oxford_pets" in out.output and "61.0" in out.output and "57.0" in out.output
    assert "900 steps (fp32, 1 thread(s))" in out.output and "ab" * 32 in out.output


def test_toy_build_verb_exits_1_with_the_message_when_the_build_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from orchestration.cli import main

    def failing(output, **kwargs):
        raise toy_build.ToyQualityError("toy build failed its quality floor: 20.0% ... Nothing was cached")

    monkeypatch.setattr(toy_build, "build_toy", failing)
    out = CliRunner().invoke(main, ["toy", "build", "--output", str(tmp_path)])
    assert out.exit_code == 1 and "failed its quality floor" in out.output
    # The demo verb: the same failure, before any trial starts.
    out = CliRunner().invoke(main, ["demo", "--output", str(tmp_path)])
    assert out.exit_code == 1 and "failed its quality floor" in out.output


def test_pretraining_logs_its_progress_at_least_every_10_seconds(monkeypatch, caplog) -> None:
    """Step, loss and ETA in the log at least every 10 seconds of pretraining (a clock that moves
    3 s per reading stands in for slow steps); the log is the only thing that reads it."""
    import types

    readings = iter(range(0, 10_000, 3))
    monkeypatch.setattr(toy_clip, "time", types.SimpleNamespace(perf_counter=lambda: float(next(readings))))
    world = tw.render_set(64, seed=0)
    with caplog.at_level("INFO", logger="prometar.toy.clip"):
        toy_clip.pretrain(
            toy_clip.create_toy_clip(0), world.images, world.captions, seed=0, steps=8, batch_size=32
        )
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("toy CLIP step ")]
    seconds = [int(re.search(r"\((\d+)s\)", line).group(1)) for line in progress]
    assert progress[-1].startswith("toy CLIP step 8 of 8") and progress[-1].endswith("ETA 0s")
    assert all("loss " in line and ", ETA " in line for line in progress)
    assert seconds[0] <= 10 and all(b - a <= 10 for a, b in zip(seconds, seconds[1:], strict=False))
    assert len(progress) < 8  # a line per interval, not per step
