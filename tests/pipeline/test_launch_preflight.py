"""Inputs that cannot work stop a launch before its first trial: exit 2, one line, nothing written.

Each case used to start every trial and let it fail (a FAILED run per trial, a Ray traceback).
Now `launch`, `launch --dry-run` and `validate --data-root` refuse it with the key or path named.
No Ray is started: the refusal comes first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from tiny import TINY_OVERRIDES

from orchestration.cli import main
from prometar.backbone import load_clip
from prometar.toy.miniature import write_miniatures


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_miniatures(root, ["eurosat", "dtd"])
    return root


def sweep_file(folder: Path, **overrides) -> Path:
    data = {
        "name": "pre",
        "protocol": "base2new",
        "overrides": {**TINY_OVERRIDES, **overrides},
        "grid": {"method": ["ivlp"], "dataset": ["eurosat", "dtd"], "seed": [1, 2], "shots": [2]},
        "resources": {"default": {"cpu": 1}},
    }
    path = folder / "pre.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def refused(args: list[str], *words: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "launch"])
def test_a_missing_checkpoint_is_refused_before_any_trial(tmp_path, data_root, dry):
    sweep = sweep_file(tmp_path, **{"backbone.pretrained": str(tmp_path / "absent.pt")})
    out = tmp_path / "out"
    refused(
        [
            "launch",
            str(sweep),
            "--data-root",
            str(data_root),
            "--output",
            str(out),
            *(["--dry-run"] if dry else []),
        ],
        str(tmp_path / "absent.pt"),
    )
    assert not out.exists()


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path, data_root):
    weights = tmp_path / "parity.pt"
    torch.save(load_clip("parity-tiny").model.state_dict(), weights)
    sweep = sweep_file(tmp_path, **{"backbone.pretrained": str(weights)})
    refused(
        ["launch", str(sweep), "--data-root", str(data_root), "--output", str(tmp_path / "out"), "--dry-run"],
        "parity.pt does not fit the model",
    )
    refused(["validate", str(sweep), "--data-root", str(data_root)], "parity.pt does not fit the model")


def test_an_unknown_backbone_is_refused_by_validate_and_dry_run(tmp_path, data_root):
    sweep = sweep_file(tmp_path, **{"backbone.name": "no-such-clip"})
    refused(["validate", str(sweep)], "no-such-clip")
    refused(
        ["launch", str(sweep), "--data-root", str(data_root), "--output", str(tmp_path / "out"), "--dry-run"],
        "no-such-clip",
    )


def test_prompts_deeper_than_the_backbone_name_the_key(tmp_path, data_root):
    sweep = sweep_file(tmp_path, **{"prompts.vision_depth": 9})
    refused(["validate", str(sweep)], str(sweep), "prompts.vision_depth", "0..4")
    refused(
        ["launch", str(sweep), "--data-root", str(data_root), "--output", str(tmp_path / "out")],
        "prompts.vision_depth",
    )
    assert not (tmp_path / "out").exists()


def test_a_dataset_without_its_split_file_is_refused(tmp_path):
    root = tmp_path / "data"
    write_miniatures(root, ["eurosat", "dtd"])
    split = root / "dtd" / "split_zhou_DescribableTextures.json"
    split.unlink()
    sweep = sweep_file(tmp_path)
    for args in (
        ["launch", str(sweep), "--data-root", str(root), "--output", str(tmp_path / "out")],
        ["launch", str(sweep), "--data-root", str(root), "--output", str(tmp_path / "out"), "--dry-run"],
        ["validate", str(sweep), "--data-root", str(root)],
    ):
        refused(args, str(split))
    assert not (tmp_path / "out").exists()


def test_a_missing_image_is_refused(tmp_path):
    root = tmp_path / "data"
    write_miniatures(root, ["eurosat", "dtd"])
    image = next((root / "eurosat").rglob("*.jpg"))
    image.unlink()
    refused(
        [
            "launch",
            str(sweep_file(tmp_path)),
            "--data-root",
            str(root),
            "--output",
            str(tmp_path / "out"),
            "--dry-run",
        ],
        str(image),
    )


def test_validate_without_a_data_root_needs_no_weights_or_data(tmp_path):
    sweep = sweep_file(tmp_path, **{"backbone.pretrained": str(tmp_path / "on-the-cluster.pt")})
    result = CliRunner().invoke(main, ["validate", str(sweep)])
    assert result.exit_code == 0, result.output


def test_an_output_folder_name_too_long_is_refused(tmp_path, data_root):
    out = tmp_path / ("x" * 300)
    refused(
        [
            "launch",
            str(sweep_file(tmp_path)),
            "--data-root",
            str(data_root),
            "--output",
            str(out),
            "--dry-run",
        ],
        "more than a file system takes (255)",
        "--output",
    )


def test_an_output_folder_under_a_file_or_a_read_only_folder_is_refused(tmp_path, data_root, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    refused(
        [
            "launch",
            str(sweep_file(tmp_path)),
            "--data-root",
            str(data_root),
            "--output",
            str(blocker / "out"),
        ],
        f"Invalid value for '--output': '{blocker / 'out'}' lies inside '{blocker}', which is a file",
    )
    import os

    real = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    # What a folder without write permission does for a user who is not root (the tests may run as root).
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else real(path, mode))
    refused(
        ["launch", str(sweep_file(tmp_path)), "--data-root", str(data_root), "--output", str(locked / "out")],
        f"{locked} cannot be written",
    )
    assert not (locked / "out").exists()
