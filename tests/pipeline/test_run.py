"""One run end to end on miniature datasets and a tiny CLIP.

Artifacts, protocols, determinism, resume, the CLI.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from prometar.config import build_config, resolve_config
from prometar.data.fewshot import sample_few_shot
from prometar.data.readers import read_dataset
from prometar.run import run
from prometar.toy.miniature import write_miniatures

TINY = {
    "backbone.name": "tiny-test",
    "backbone.pretrained": None,
    "prompts.text_depth": 2,
    "prompts.vision_depth": 2,
    "optim.epochs": 2,
    "data.num_workers": 0,
    "data.test_batch_size": 8,
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_miniatures(root, ["eurosat", "imagenet", "imagenet_v2", "imagenet_a"])
    return root


def tiny_config(**overrides):
    return resolve_config("official", {**TINY, "data.dataset": "eurosat", **overrides})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_base2new_run_writes_its_artifacts(data_root, tmp_path):
    cfg = tiny_config()
    events = []
    out = tmp_path / "run"

    def callback(event):
        if event["event"] == "epoch":
            assert Path(event["checkpoint"], "state.pt").is_file()  # written before the callback
        events.append(event)

    result = run(cfg, data_root=data_root, output_dir=out, callback=callback)

    assert set(result.metrics) == {"base_acc", "new_acc", "hm"}
    assert all(math.isfinite(v) and 0 <= v <= 100 for v in result.metrics.values())
    b, n = result.metrics["base_acc"], result.metrics["new_acc"]
    assert result.metrics["hm"] == pytest.approx(2 * b * n / (b + n) if b + n else 0.0)
    assert [e["event"] for e in events] == ["epoch", "epoch", "final"]
    assert [e["epoch"] for e in events[:2]] == [1, 2]
    for name in (
        "loss",
        "ce",
        "text_reg",
        "image_reg",
        "query",
        "meta_skipped",
        "gate_mean/text",
        "grad_cos/vision",
        "train_acc",
        "lr",
        "gate_lr",
    ):
        assert name in events[0]
    assert events[0]["lr"] == 1e-5 and events[1]["gate_lr"] == 1e-6

    assert build_config(json.loads((out / "config.json").read_text())) == cfg
    subset = json.loads((out / "fewshot_subset.json").read_text())
    sampled = sample_few_shot(read_dataset("eurosat", data_root), cfg.data.shots, cfg.seed)  # all classes
    assert subset == {
        name: [
            [str(Path(i.path).relative_to(data_root / "eurosat" / "2750")), i.label, i.classname]
            for i in getattr(sampled, name)
        ]
        for name in ("train", "val")
    }
    assert {label for _, label, _ in subset["train"]} == set(range(5))  # drawn before the base/new cut
    lines = read_jsonl(out / "metrics.jsonl")
    assert [line["event"] for line in lines] == ["epoch", "epoch", "final"]
    assert {k: lines[-1][k] for k in result.metrics} == result.metrics
    prompts = torch.load(out / "prompts.pt")
    assert sorted(prompts) == sorted(
        [f"text_prompts.blocks.{i}" for i in range(2)] + [f"vision_prompts.blocks.{i}" for i in range(2)]
    )
    per_class = json.loads((out / "per_class.json").read_text())
    # EuroSAT miniature: 5 classes, base = the first 3, new = the last 2.
    assert list(per_class) == ["base_acc", "new_acc"]
    assert list(per_class["base_acc"]) == ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land"]
    assert list(per_class["new_acc"]) == ["Highway or Road", "Industrial Buildings"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_2"]
    assert len(result.history) == 2


# The published per-epoch rates of the official run (docs/algorithm.md §5), to the digits shown there.
PUBLISHED_RATES = [1e-5, 2.5e-3, 2.439e-3, 2.261e-3, 1.985e-3, 1.636e-3, 1.25e-3, 8.64e-4, 5.15e-4, 2.387e-4]


def test_a_ten_epoch_official_run_logs_the_published_learning_rates(data_root, tmp_path):
    from prometar.run import build_schedules

    cfg = tiny_config(method="ivlp", **{"optim.epochs": 10})  # the official schedule; ivlp is the cheap step
    events = []
    run(cfg, data_root=data_root, output_dir=tmp_path / "run", callback=events.append)
    logged = [
        line["lr"] for line in read_jsonl(tmp_path / "run" / "metrics.jsonl") if line["event"] == "epoch"
    ]
    schedule = build_schedules(cfg)[0]
    assert logged == [schedule.at(e) for e in range(10)]
    assert logged == pytest.approx(PUBLISHED_RATES, rel=1e-3)  # to the shown digits; one epoch off is >2% off
    assert [e["lr"] for e in events if e["event"] == "epoch"] == logged  # what orchestration reports


def test_same_seed_gives_identical_metrics(data_root, tmp_path):
    cfg = tiny_config()
    a = run(cfg, data_root=data_root, output_dir=tmp_path / "a")
    b = run(cfg, data_root=data_root, output_dir=tmp_path / "b")
    assert a.metrics == b.metrics and a.history == b.history
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()
    pa, pb = torch.load(tmp_path / "a" / "prompts.pt"), torch.load(tmp_path / "b" / "prompts.pt")
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    other = run(tiny_config(seed=2), data_root=data_root, output_dir=tmp_path / "c")
    assert other.history != a.history


class Stop(Exception):
    pass


def interrupt_after_epoch_one(cfg, data_root: Path, out: Path) -> pytest.ExceptionInfo:
    """Run ``cfg`` into ``out`` and stop it (an exception) right after epoch 1's checkpoint."""

    def stop(event):
        if event["event"] == "epoch" and event["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop) as caught:
        run(cfg, data_root=data_root, output_dir=out, callback=stop)
    return caught


def same_prompts(first: Path, second: Path) -> bool:
    a, b = torch.load(first / "prompts.pt"), torch.load(second / "prompts.pt")
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("protocol", ["base2new", "search"])  # search also evaluates every epoch
def test_stop_after_epoch_one_and_resume_matches_an_uninterrupted_run(data_root, tmp_path, protocol):
    cfg = tiny_config(protocol=protocol, **{"optim.epochs": 3})
    full = run(cfg, data_root=data_root, output_dir=tmp_path / "full")
    out = tmp_path / "part"
    interrupt_after_epoch_one(cfg, data_root, out)
    assert not (out / "prompts.pt").exists()
    torch.manual_seed(999)  # the resumed process's global RNG is restored from the checkpoint
    events = []
    resumed = run(
        cfg,
        data_root=data_root,
        output_dir=out,
        resume_from=out / "checkpoints" / "epoch_1",
        callback=events.append,
    )
    assert [e.get("epoch") for e in events] == [2, 3, None]
    assert resumed.metrics == full.metrics
    assert resumed.history == full.history
    assert same_prompts(tmp_path / "full", out)
    assert (out / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()


def test_results_do_not_depend_on_loader_workers_and_resume_with_persistent_workers(data_root, tmp_path):
    """``data.num_workers`` is not part of a trial key: it must not change a result. Here a run with
    2 (persistent) workers is stopped after epoch 1 and resumed; it ends exactly like a run without
    workers."""
    inline = run(tiny_config(**{"optim.epochs": 3}), data_root=data_root, output_dir=tmp_path / "inline")
    cfg = tiny_config(**{"optim.epochs": 3, "data.num_workers": 2})
    out = tmp_path / "workers"
    caught = interrupt_after_epoch_one(cfg, data_root, out)
    # the traceback (held here) keeps the run's frames alive; its loader workers ended all the same
    assert caught.tb is not None and multiprocessing.active_children() == []
    resumed = run(cfg, data_root=data_root, output_dir=out, resume_from=out / "checkpoints" / "epoch_1")
    assert resumed.metrics == inline.metrics and resumed.history == inline.history
    assert same_prompts(tmp_path / "inline", out)


def test_resume_from_another_config_is_refused(data_root, tmp_path):
    from prometar.errors import CheckpointError

    cfg = tiny_config(**{"optim.epochs": 1})
    run(cfg, data_root=data_root, output_dir=tmp_path / "one")
    with pytest.raises(CheckpointError, match="another run configuration"):
        run(
            tiny_config(**{"optim.epochs": 1, "optim.lr": 0.01}),
            data_root=data_root,
            output_dir=tmp_path / "two",
            resume_from=tmp_path / "one" / "checkpoints" / "epoch_1",
        )


@pytest.mark.parametrize(
    ("overrides", "keys"),
    [
        ({"protocol": "all_classes"}, {"acc"}),
        ({"protocol": "search"}, {"val_base", "val_new", "val_hm"}),
        (
            {
                "protocol": "domain_generalization",
                "data.dataset": "imagenet",
                "eval.targets": ["imagenet_v2", "imagenet_a"],
            },
            {"acc/imagenet_v2", "acc/imagenet_a", "acc/mean"},
        ),
        ({"method": "ivlp", "optim.epochs": 1}, {"base_acc", "new_acc", "hm"}),
        ({"method": "ivlp_reg", "optim.epochs": 1}, {"base_acc", "new_acc", "hm"}),
    ],
)
def test_protocols_and_schemes_report_their_metrics(data_root, tmp_path, overrides, keys):
    result = run(tiny_config(**overrides), data_root=data_root, output_dir=tmp_path)
    assert set(result.metrics) == keys
    assert all(math.isfinite(v) for v in result.metrics.values())
    if "acc/mean" in keys:
        assert result.metrics["acc/mean"] == pytest.approx(
            (result.metrics["acc/imagenet_v2"] + result.metrics["acc/imagenet_a"]) / 2
        )
        assert set(json.loads((tmp_path / "per_class.json").read_text())) == keys - {"acc/mean"}


def test_search_protocol_reports_validation_metrics_every_epoch(data_root, tmp_path):
    events = []
    result = run(
        tiny_config(protocol="search"), data_root=data_root, output_dir=tmp_path, callback=events.append
    )
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for event in epochs:
        b, n = event["val_base"], event["val_new"]
        assert all(math.isfinite(v) and 0 <= v <= 100 for v in (b, n))
        assert event["val_hm"] == pytest.approx(2 * b * n / (b + n) if b + n else 0.0)
    assert result.metrics == {k: epochs[-1][k] for k in ("val_base", "val_new", "val_hm")}
    assert events[-1] == {"event": "final", **result.metrics}
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert all({"val_base", "val_new", "val_hm"} <= set(line) for line in lines)
    assert all(k in record for record in result.history for k in ("val_base", "val_new", "val_hm"))


def test_epoch_evaluation_leaves_the_training_random_streams_alone(data_root, tmp_path, monkeypatch):
    import random

    import prometar.run as run_module

    trainer_class = run_module.Trainer

    def drawing(evaluate):  # an evaluation that also draws from every global generator
        def wrapped():
            random.random(), np.random.rand(), torch.rand(1)
            return evaluate()

        return wrapped

    cfg = tiny_config(protocol="search")
    monkeypatch.setattr(
        run_module, "Trainer", lambda *a, evaluate, **k: trainer_class(*a, evaluate=drawing(evaluate), **k)
    )
    evaluated = run(cfg, data_root=data_root, output_dir=tmp_path / "evaluated")
    monkeypatch.setattr(
        run_module, "Trainer", lambda *a, evaluate, **k: trainer_class(*a, evaluate=None, **k)
    )
    plain = run(cfg, data_root=data_root, output_dir=tmp_path / "plain")
    assert "val_hm" in evaluated.history[0] and "val_hm" not in plain.history[0]
    training = [{k: v for k, v in record.items() if not k.startswith("val_")} for record in evaluated.history]
    assert training == plain.history
    assert evaluated.metrics == plain.metrics


def test_other_protocols_do_not_evaluate_during_training(data_root, tmp_path):
    events = []
    run(tiny_config(), data_root=data_root, output_dir=tmp_path, callback=events.append)
    assert not any(k.startswith("val_") for e in events if e["event"] == "epoch" for k in e)


def test_search_protocol_never_reads_new_classes_or_test_images(data_root, tmp_path, monkeypatch):
    import prometar.run as run_module

    seen: list[str] = []
    original = run_module.build_loader

    def spy(items, *args, **kwargs):
        seen.extend(item.path for item in items)
        return original(items, *args, **kwargs)

    monkeypatch.setattr(run_module, "build_loader", spy)
    run(tiny_config(protocol="search", **{"optim.epochs": 1}), data_root=data_root, output_dir=tmp_path)
    split = json.loads((data_root / "eurosat" / "split_zhou_EuroSAT.json").read_text())
    test_paths = {p for p, _, _ in split["test"]}
    new_classes = {c for _, label, c in split["train"] if label >= 3}
    assert seen and not any(path.split("2750/")[-1] in test_paths for path in seen)
    assert not any(c in path for path in seen for c in ("Highway", "Industrial"))
    assert new_classes == {"Highway or Road", "Industrial Buildings"}


def test_zero_shot_run_trains_nothing(data_root, tmp_path):
    zero_shot = {"method": "zeroshot", "prompts.text_depth": 0, "prompts.vision_depth": 0}
    result = run(tiny_config(**zero_shot), data_root=data_root, output_dir=tmp_path)
    assert set(result.metrics) == {"base_acc", "new_acc", "hm"} and result.history == []
    assert [line["event"] for line in read_jsonl(tmp_path / "metrics.jsonl")] == ["final"]
    assert torch.load(tmp_path / "prompts.pt") == {}
    assert not (tmp_path / "checkpoints").exists()


def test_missing_data_fails_before_anything_is_written(tmp_path):
    from prometar.errors import DataError

    with pytest.raises(DataError, match="eurosat"):
        run(tiny_config(), data_root=tmp_path / "nowhere", output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------
# The model learns: generated, learnable images in the EuroSAT layout.

COLOURS = [(220, 40, 40), (40, 170, 60), (40, 70, 225), (235, 220, 40), (140, 60, 190)]


def write_coloured_eurosat(root: Path, per_class: int = 4) -> None:
    """EuroSAT layout whose classes are colours; the test split lists the training images."""
    rng = np.random.default_rng(0)
    folder = root / "eurosat"
    names = [
        "Annual Crop Land",
        "Forest",
        "Herbaceous Vegetation Land",
        "Highway or Road",
        "Industrial Buildings",
    ]
    train = []
    for label, (name, colour) in enumerate(zip(names, COLOURS, strict=True)):
        for k in range(per_class):
            rel = f"C{label}/img_{k}.png"
            pixels = np.clip(np.array(colour)[None, None] + rng.normal(0, 40, (32, 32, 3)), 0, 255)
            (folder / "2750" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8), "RGB").save(folder / "2750" / rel)
            train.append([rel, label, name])
    split = {"train": train, "val": train, "test": train}
    (folder / "split_zhou_EuroSAT.json").write_text(json.dumps(split))


def test_training_improves_training_accuracy_over_zero_shot(tmp_path):
    write_coloured_eurosat(tmp_path / "data")
    common = {"protocol": "all_classes", "data.shots": 4}
    seeds = (1, 2, 3)  # the seed also draws the random tiny backbone
    zero = [
        run(
            tiny_config(
                method="zeroshot", seed=seed, **common, **{"prompts.text_depth": 0, "prompts.vision_depth": 0}
            ),
            data_root=tmp_path / "data",
            output_dir=tmp_path / f"zs{seed}",
        ).metrics["acc"]
        for seed in seeds
    ]
    # A random tiny CLIP's teacher is meaningless, so the regularisers are weakened here. One seed
    # of 4 shots x 5 classes is luck; the mean over three seeds is the behaviour.
    trained = [
        run(
            tiny_config(
                seed=seed,
                **common,
                **{
                    "optim.epochs": 16,
                    "optim.lr": 0.1,
                    "optim.warmup_epochs": 0,
                    "regularizer.text_weight": 0.5,
                    "regularizer.image_weight": 0.2,
                },
            ),
            data_root=tmp_path / "data",
            output_dir=tmp_path / f"pm{seed}",
        ).metrics["acc"]
        for seed in seeds
    ]
    assert sum(trained) / 3 >= sum(zero) / 3 + 20.0, (zero, trained)


# ------------------------------------------------------------------------------------------
# The train verb.


def cli_args(data_root: Path, out: Path, *extra: str) -> list[str]:
    sets = [f"--set={k}={'null' if v is None else v}" for k, v in TINY.items()]
    return [
        "train",
        "--dataset",
        "eurosat",
        "--seed",
        "1",
        "--shots",
        "2",
        "--data-root",
        str(data_root),
        "--output",
        str(out),
        *sets,
        *extra,
    ]


def test_train_verb_runs_one_run_and_prints_final_metrics(data_root, tmp_path):
    from orchestration.cli import main

    result = CliRunner().invoke(main, cli_args(data_root, tmp_path / "out", "--method", "coop"))
    assert result.exit_code == 0, result.output
    assert "base_acc\t" in result.output and "hm\t" in result.output
    assert "epoch 2/2" in result.output
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["method"] == "coop" and cfg["data"]["shots"] == 2 and cfg["seed"] == 1


def test_train_verb_bad_input_exits_2_naming_the_key_and_writes_nothing(data_root, tmp_path):
    from orchestration.cli import main

    result = CliRunner().invoke(main, cli_args(data_root, tmp_path / "out", "--set", "optim.lrr=1"))
    assert result.exit_code == 2 and "optim.lrr" in result.output
    result = CliRunner().invoke(main, cli_args(data_root, tmp_path / "out", "--method", "maple"))
    assert result.exit_code == 2 and "method" in result.output and "prometar_vpt" in result.output
    result = CliRunner().invoke(main, cli_args(tmp_path / "nodata", tmp_path / "out"))
    assert result.exit_code == 2 and "nodata" in result.output
    assert not (tmp_path / "out").exists()


def test_a_prompt_design_the_backbone_cannot_take_names_the_key(data_root, tmp_path):
    from prometar.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        run(tiny_config(**{"prompts.vision_depth": 9}), data_root=data_root, output_dir=tmp_path / "out")
    assert info.value.key == "prompts.vision_depth" and "tiny-test" in str(info.value)
    with pytest.raises(ConfigError) as info:
        run(tiny_config(**{"meta.gate_reduction": 3}), data_root=data_root, output_dir=tmp_path / "out")
    assert info.value.key == "meta.gate_reduction"
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# One source model, evaluated on the transfer targets


def test_a_transfer_run_evaluates_its_source_models_prompts_and_trains_nothing(data_root, tmp_path):
    from prometar import protocols

    transfer = tiny_config(
        protocol="domain_generalization", **{"data.dataset": "imagenet", "eval.targets": ["imagenet_v2"]}
    )
    source = build_config(protocols.source_config(transfer.to_dict()))
    trained = run(source, data_root=data_root, output_dir=tmp_path / "source")
    assert set(trained.metrics) == {"acc/imagenet"}  # the source column: ImageNet's test set
    events = []
    evaluated = run(
        transfer,
        data_root=data_root,
        output_dir=tmp_path / "transfer",
        callback=events.append,
        source_prompts=tmp_path / "source" / "prompts.pt",
    )
    assert set(evaluated.metrics) == {"acc/imagenet_v2", "acc/mean"}
    assert [e["event"] for e in events] == ["final"] and evaluated.history == []  # no epoch trained
    assert (tmp_path / "transfer" / "metrics.jsonl").read_text().count('"event": "epoch"') == 0
    ours = torch.load(tmp_path / "transfer" / "prompts.pt", weights_only=True)
    theirs = torch.load(tmp_path / "source" / "prompts.pt", weights_only=True)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_source_prompts_of_another_design_are_refused_and_nothing_is_written(data_root, tmp_path):
    from prometar.errors import CheckpointError

    transfer = tiny_config(
        protocol="cross_dataset", **{"data.dataset": "imagenet", "eval.targets": ["eurosat"]}
    )
    wrong = tmp_path / "prompts.pt"
    torch.save({"text_prompts.blocks.0": torch.zeros(3, 3)}, wrong)
    with pytest.raises(CheckpointError, match=str(wrong)):
        run(transfer, data_root=data_root, output_dir=tmp_path / "out", source_prompts=wrong)
    assert not (tmp_path / "out").exists()


def test_a_batch_larger_than_the_training_set_trains_one_partial_batch(data_root, tmp_path):
    """As Dassl: a K-shot set smaller than a batch trains it as one partial batch per epoch (CoOp's
    batch 32 on EuroSAT at K = 1); a set holding a full batch drops its last incomplete one."""
    from prometar.protocols import get_protocol

    sampled = sample_few_shot(read_dataset("eurosat", data_root), 1, 1)
    images = len(get_protocol("base2new").plan(sampled, "eurosat", (), data_root)[0].train)
    assert 3 <= images < 32  # a full batch of images - 1 leaves one image over
    steps = {}
    for batch in (32, images - 1):
        cfg = tiny_config(method="ivlp", **{"data.shots": 1, "data.batch_size": batch, "optim.epochs": 1})
        steps[batch] = [
            r["steps"] for r in run(cfg, data_root=data_root, output_dir=tmp_path / str(batch)).history
        ]
    assert steps == {32: [1], images - 1: [1]}  # one partial batch; one full batch, the rest dropped
