"""Files from shared storage never run code: every load path refuses a code-carrying file.

Each test builds a file that runs ``os.system`` (or ``eval``) when a full unpickler, a TorchScript
loader or an unsafe YAML loader reads it, hands it to the project the way a user or a retried
trial would, and checks that the load is refused with an error naming the file and that the
marker the payload would create never appears.
"""

from __future__ import annotations

import io
import json
import logging
import math
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_trainer import toy_trainer

from prometar.backbone import BackboneError, load_clip, read_state_dict
from prometar.config import ConfigError, load_yaml
from prometar.errors import CheckpointError
from prometar.teacher import compute_text_teacher
from prometar.torchscript import TorchScriptError, read_torchscript_state_dict
from prometar.trainer import checkpoint_files


class Payload:
    """Pickles to a call of ``os.system`` that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"version": 2, "epoch": 1, "payload": Payload(marker)}, protocol=2)


def evil_torch_save(marker: Path, path: Path) -> Path:
    torch.save({"version": 2, "epoch": 1, "modules": Payload(marker)}, path)
    return path


def evil_torchscript(marker: Path, path: Path, scripted: Path) -> Path:
    """A real TorchScript archive whose data.pkl is replaced by a code-carrying pickle."""
    with zipfile.ZipFile(scripted) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(Payload(marker), protocol=2)
            target.writestr(item, data)
    return path


@pytest.fixture(scope="module")
def scripted_tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ts") / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(load_clip("tiny-test").model), str(path))
    return path


# ------------------------------------------------------------------------------------------
# Trial checkpoints (shared Ray storage; read by every retried or resumed trial).


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_code_carrying_trial_checkpoint_is_refused_naming_the_file(tmp_path, kind):
    marker = tmp_path / "marker"
    folder = tmp_path / "checkpoints" / "epoch_1"
    folder.mkdir(parents=True)
    file = folder / "state.pt"
    if kind == "pickle":
        file.write_bytes(evil_pickle(marker))
    else:
        evil_torch_save(marker, file)
    trainer, *_ = toy_trainer(epochs=2)
    with pytest.raises(CheckpointError, match=r"state\.pt: cannot read checkpoint \(only tensors"):
        trainer.load_checkpoint(folder)
    assert not marker.exists()


def test_checkpoints_round_trip_through_the_weights_only_loader(tmp_path):
    trainer, *_ = toy_trainer(tmp_path, epochs=2)
    trainer.fit()
    state = torch.load(tmp_path / "checkpoints" / "epoch_2" / "state.pt", weights_only=True)
    assert state["version"] == 2 and state["epoch"] == 2
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)  # not a NumPy array (needs full pickle)


def test_a_format_1_checkpoint_is_refused_not_read(tmp_path):
    import numpy as np

    folder = tmp_path / "epoch_1"
    folder.mkdir()
    torch.save({"version": 1, "epoch": 1, "rng": {"numpy": np.random.get_state()}}, folder / "state.pt")
    trainer, *_ = toy_trainer(epochs=2)
    with pytest.raises(CheckpointError, match="state.pt: cannot read checkpoint"):
        trainer.load_checkpoint(folder)


def test_a_malformed_checkpoint_is_a_checkpoint_error(tmp_path):
    folder = tmp_path / "epoch_1"
    folder.mkdir()
    torch.save({"version": 2, "epoch": 1, "fingerprint": "toy", "modules": {}}, folder / "state.pt")
    trainer, *_ = toy_trainer(epochs=2)
    with pytest.raises(CheckpointError, match="state.pt: no tensors for 'model'"):
        trainer.load_checkpoint(folder)
    torch.save({"version": 2, "epoch": 1, "fingerprint": "toy"}, folder / "state.pt")
    with pytest.raises(CheckpointError, match="state.pt: malformed checkpoint"):
        trainer.load_checkpoint(folder)


@pytest.mark.parametrize("damage", ["deleted", "truncated", "code"])
def test_resume_falls_back_to_the_newest_readable_epoch_and_names_the_skipped_file(tmp_path, damage, caplog):
    full, *_ = toy_trainer(epochs=4)
    expected = full.fit()
    first, *_ = toy_trainer(tmp_path, epochs=4, keep=None)
    first.fit()
    newest = tmp_path / "checkpoints" / "epoch_4" / "state.pt"
    (tmp_path / "checkpoints" / "epoch_3" / "state.pt").unlink()  # and the one before it is gone
    marker = tmp_path / "marker"
    if damage == "deleted":
        newest.unlink()
    elif damage == "truncated":
        newest.write_bytes(newest.read_bytes()[:100])
    else:
        newest.write_bytes(evil_pickle(marker))
    resumed, *_ = toy_trainer(tmp_path, epochs=4, keep=None)
    with caplog.at_level(logging.WARNING, logger="prometar.trainer"):
        used = resumed.load_checkpoint(tmp_path / "checkpoints")
    assert used == tmp_path / "checkpoints" / "epoch_2" / "state.pt"
    assert str(newest) in caplog.text and "epoch_3" in caplog.text
    assert resumed.fit() == expected  # the fallback still ends exactly as an uninterrupted run
    assert not marker.exists()
    assert [p.parent.name for p in checkpoint_files(tmp_path / "checkpoints")][:2] == ["epoch_4", "epoch_3"]


def test_no_readable_checkpoint_in_a_folder_is_one_error_listing_them(tmp_path):
    first, *_ = toy_trainer(tmp_path, epochs=2, keep=None)
    first.fit()
    for file in checkpoint_files(tmp_path / "checkpoints"):
        file.write_bytes(b"not a checkpoint")
    resumed, *_ = toy_trainer(tmp_path, epochs=2)
    with pytest.raises(CheckpointError, match=r"no readable checkpoint .*epoch_2.*epoch_1"):
        resumed.load_checkpoint(tmp_path / "checkpoints")


def test_train_verb_resume_from_a_code_carrying_checkpoint_exits_2(tmp_path):
    from orchestration.cli import main
    from prometar.toy.miniature import write_miniatures

    data_root = tmp_path / "data"
    write_miniatures(data_root, ["eurosat"])
    folder = tmp_path / "out" / "checkpoints" / "epoch_1"
    folder.mkdir(parents=True)
    marker = tmp_path / "marker"
    evil_torch_save(marker, folder / "state.pt")
    tiny = [
        "--set=backbone.name=tiny-test",
        "--set=backbone.pretrained=null",
        "--set=prompts.text_depth=2",
        "--set=prompts.vision_depth=2",
        "--set=optim.epochs=2",
        "--set=data.num_workers=0",
    ]
    result = CliRunner().invoke(
        main,
        [
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
            str(tmp_path / "out"),
            *tiny,
            "--resume",
            str(folder),
        ],
    )
    assert result.exit_code == 2, result.output
    assert str(folder / "state.pt") in result.output and "Traceback" not in result.output
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# Backbone checkpoints (user-given paths) and TorchScript archives (OpenAI's release format).


def test_torchscript_weights_are_read_as_data_and_equal_torch_jit_load(scripted_tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = torch.jit.load(str(scripted_tiny)).state_dict()
    got = read_torchscript_state_dict(scripted_tiny)
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) and got[k].dtype == expected[k].dtype for k in expected)


def test_a_traced_archive_reads_too(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    path = tmp_path / "traced.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(module, torch.randn(2, 3)), str(path))
    got = read_torchscript_state_dict(path)
    assert set(got) == set(module.state_dict())
    assert all(torch.equal(got[k], v) for k, v in module.state_dict().items())


def test_a_code_carrying_torchscript_archive_is_refused_naming_the_file(tmp_path, scripted_tiny):
    marker = tmp_path / "marker"
    path = evil_torchscript(marker, tmp_path / "ViT-B-16.pt", scripted_tiny)
    with pytest.raises(
        TorchScriptError, match=r"ViT-B-16\.pt: cannot be read as weights .*refused posix\.system"
    ):
        read_torchscript_state_dict(path)
    with pytest.raises(BackboneError, match=r"ViT-B-16\.pt"):
        load_clip("tiny-test", str(path))
    assert not marker.exists()


def test_a_torchscript_archive_with_code_in_a_nested_attribute_is_refused(tmp_path, scripted_tiny):
    marker = tmp_path / "marker"
    with zipfile.ZipFile(scripted_tiny) as source:
        member = next(m for m in source.namelist() if m.endswith("/data.pkl"))
        original = source.read(member)
    # The real module tree, plus one attribute whose value is built by eval.
    evil = io.BytesIO()
    evil.write(b"\x80\x02c__torch__.open_clip.model\nCLIP\n)\x81}(X\x04\x00\x00\x00evilcbuiltins\neval\n")
    evil.write(pickle.dumps(f"__import__('os').system('touch {marker}')", protocol=2)[2:-1])
    evil.write(b"\x85Rub.")
    path = tmp_path / "nested.pt"
    with zipfile.ZipFile(scripted_tiny) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            target.writestr(item, evil.getvalue() if item.filename == member else source.read(item.filename))
    assert original  # the replaced member existed
    with pytest.raises(TorchScriptError, match="refused builtins.eval"):
        read_torchscript_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_code_carrying_backbone_checkpoint_is_refused(tmp_path, kind):
    marker = tmp_path / "marker"
    path = tmp_path / "weights.pt"
    if kind == "pickle":
        path.write_bytes(evil_pickle(marker))
    else:
        evil_torch_save(marker, path)
    with pytest.raises(BackboneError, match=r"weights\.pt: cannot be read"):
        read_state_dict(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# The text teacher's cache (written and read by trials, in a shared cache folder).


def test_a_code_carrying_teacher_cache_is_ignored_and_recomputed(tmp_path, caplog):
    from prometar.prompts import PromptedCLIP
    from prometar.teacher import teacher_cache_path

    model = PromptedCLIP(load_clip("tiny-test"), text_depth=0, vision_depth=0)
    names, templates = ["cat", "dog"], ["a photo of a {}."]
    expected = compute_text_teacher(model, names, templates)
    path = teacher_cache_path(tmp_path, "tiny", names, templates)
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "marker"
    evil_torch_save(marker, path)
    with caplog.at_level(logging.WARNING, logger="prometar.teacher"):
        got = compute_text_teacher(model, names, templates, cache_dir=tmp_path, cache_key="tiny")
    assert torch.equal(got, expected) and not marker.exists()
    assert str(path) in caplog.text and "cannot be read" in caplog.text
    assert torch.load(path, weights_only=True)["classnames"] == names  # rewritten as a clean cache


# ------------------------------------------------------------------------------------------
# YAML (run configs, presets, overrides, sweep files) and JSON (split files, caches).


def test_yaml_that_would_construct_objects_is_refused(tmp_path):
    marker = tmp_path / "marker"
    text = f"optim: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_yaml(text, source="evil.yaml")
    assert not marker.exists()


def test_a_sweep_file_with_a_python_tag_exits_2_naming_the_file(tmp_path):
    from orchestration.cli import main

    marker = tmp_path / "marker"
    sweep = tmp_path / "evil.yaml"
    sweep.write_text(
        f"name: evil\nprotocol: base2new\ngrid: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    result = CliRunner().invoke(main, ["validate", str(sweep)])
    assert result.exit_code == 2 and "evil.yaml" in result.output
    assert not marker.exists()


def test_json_is_read_as_data_only():
    # The split files, few-shot caches and trial records are JSON: the parser builds dicts, lists,
    # strings and numbers, nothing else, whatever the file says.
    loaded = json.loads('{"__reduce__": ["os.system", ["touch /tmp/x"]], "n": NaN}')
    assert set(loaded) == {"__reduce__", "n"} and math.isnan(loaded["n"])
