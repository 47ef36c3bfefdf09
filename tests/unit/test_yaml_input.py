"""Sweep files, presets and --set values as a user writes them: strict YAML, one clear exit 2.

Duplicate keys (the last value used to win silently), alias bombs (the message used to echo
megabytes), files that are not UTF-8 (a UnicodeDecodeError traceback) and unreadable files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestration.cli import main
from prometar.config import ConfigError, load_preset, parse_override
from prometar.yamlio import MAX_EXPANDED_NODES, parse_yaml, shorten

SWEEP = """name: dup
protocol: base2new
preset: official
overrides:
  optim.epochs: 2
grid:
  method: [ivlp]
  dataset: [eurosat]
  seed: [1]
"""


def validate(tmp_path: Path, text: str | bytes, name: str = "sweep.yaml"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path, CliRunner().invoke(main, ["validate", str(path)])


@pytest.mark.parametrize(
    ("text", "key", "first", "second"),
    [
        (SWEEP + "name: again\n", "'name'", 1, 10),
        (SWEEP.replace("  seed: [1]\n", "  seed: [1]\n  dataset: [dtd]\n"), "'dataset'", 8, 10),
        (
            SWEEP.replace("  optim.epochs: 2\n", "  optim.epochs: 2\n  optim.epochs: 3\n"),
            "'optim.epochs'",
            5,
            6,
        ),
    ],
    ids=["top-level", "grid", "overrides"],
)
def test_a_duplicate_key_exits_2_naming_the_key_and_both_lines(tmp_path, text, key, first, second):
    path, result = validate(tmp_path, text)
    assert result.exit_code == 2, result.output
    assert str(path) in result.output and f"duplicate key {key}" in result.output
    assert f"first at line {first}, again at line {second}" in result.output
    assert "Traceback" not in result.output


def test_merge_keys_and_distinct_keys_still_parse():
    assert parse_yaml("a: &x {b: 1}\nc:\n  <<: *x\n  d: 2\n") == {"a": {"b": 1}, "c": {"b": 1, "d": 2}}
    assert parse_yaml("lr: 1e-5\n") == {"lr": 1e-5}  # YAML 1.2 floats, as before


def test_an_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        previous = chr(ord("a") + level - 1)
        lines.append(f"{chr(ord('a') + level)}: &{chr(ord('a') + level)} [{', '.join(['*' + previous] * 9)}]")
    bomb = (
        "name: bomb\nprotocol: base2new\ngrid: {method: [ivlp], dataset: [eurosat]}\n"
        + "\n".join(lines)
        + "\n"
    )
    start = time.monotonic()
    path, result = validate(tmp_path, bomb)
    assert time.monotonic() - start < 60  # fails fast instead of hanging (generous guard)
    assert result.exit_code == 2 and str(path) in result.output
    assert f"past {MAX_EXPANDED_NODES:,} values" in result.output
    assert len(result.output) < 1000
    with pytest.raises(yaml.YAMLError, match="aliases expand"):
        parse_yaml("\n".join(lines))


def test_modest_aliases_are_fine():
    text = "base: &b {lr: 0.1, epochs: 2}\nruns: [*b, *b, *b]\n"
    assert parse_yaml(text)["runs"] == [{"lr": 0.1, "epochs": 2}] * 3


@pytest.mark.parametrize(
    "payload", [b"\xff\xfe\x00\x01binary\x00", "name: caf\xe9\n".encode("latin-1")], ids=["binary", "latin-1"]
)
def test_a_sweep_file_that_is_not_utf8_exits_2_naming_it(tmp_path, payload):
    path, result = validate(tmp_path, payload)
    assert result.exit_code == 2 and str(path) in result.output and "not UTF-8" in result.output
    assert "Traceback" not in result.output and "UnicodeDecodeError" not in result.output


def test_a_preset_file_that_is_not_utf8_or_unreadable_is_a_config_error(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_bytes("optim: {lr: caf\xe9}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"preset\.yaml.*not UTF-8"):
        load_preset(str(path))
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"folder\.yaml.*folder, not a file"):
        load_preset(str(folder))


def test_an_unreadable_sweep_file_exits_2(tmp_path, monkeypatch):
    path, _ = validate(tmp_path, SWEEP)
    real = os.open

    def refuse(file, *args, **kwargs):  # what chmod 0 does for a user who is not root (tests may run as root)
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and str(path) in result.output
    assert "cannot be read (Permission denied)" in result.output and "Traceback" not in result.output


def test_a_duplicate_key_inside_a_set_value_is_refused():
    with pytest.raises(ConfigError, match="duplicate key 'lr'"):
        parse_override("optim={lr: 1, lr: 2}")


def test_echoed_values_are_capped():
    assert len(shorten("x" * 10_000)) == 200 and shorten("x" * 10_000).endswith("…")
    assert shorten([1, 2]) == "[1, 2]"
