"""The input-error family: one base the CLI maps to exit 2, and every error survives pickling.

Errors raised inside Ray trials reach the driver pickled; an error whose ``__init__`` takes other
arguments than its ``args`` used to fail to unpickle, hiding the real reason behind a TypeError.
"""

from __future__ import annotations

import math
import pickle

import cloudpickle
import pytest
from click.testing import CliRunner

import orchestration.errors as app_errors
import prometar.errors as core_errors
from orchestration.cli import main

EXAMPLES: dict[str, BaseException] = {
    "InputError": core_errors.InputError("bad input: x.yaml"),
    "ConfigError": core_errors.ConfigError("optim.lr", "-1 must be > 0", source="run.yaml"),
    "DataError": core_errors.DataError("/data/eurosat/split_zhou_EuroSAT.json: no such file"),
    "BackboneError": core_errors.BackboneError("unknown backbone 'ViT-Z'"),
    "CheckpointError": core_errors.CheckpointError("/runs/x/state.pt: no checkpoint there"),
    "NonFiniteLossError": core_errors.NonFiniteLossError(1, 2, "loss", math.nan),
    "SpecError": app_errors.SpecError("sweep.yaml", "grid.dataset[0]", "unknown dataset 'mnist'"),
    "LaunchError": app_errors.LaunchError("data root /nowhere does not exist (--data-root)"),
    "TrackingError": app_errors.TrackingError("tracking URI http://127.0.0.1:9 is unreachable"),
    "ResultsError": app_errors.ResultsError("runs.csv: missing column 'seed'"),
    "ClusterError": app_errors.ClusterError("--address http://x:8265: no Ray dashboard answers there"),
    "InputFileError": core_errors.InputFileError("/dev/zero", "is not a regular file"),
    "MissingInputFileError": core_errors.MissingInputFileError("/data/preset.yaml", "no such file"),
    "DiskFullError": core_errors.DiskFullError("/out/trials/k/checkpoints/epoch_2/state.pt"),
    "LaunchStoppedError": app_errors.LaunchStoppedError("[demo] the launch could not go on"),
    "DiskFullLaunchError": app_errors.DiskFullLaunchError(
        "[demo] no space left on device: the output folder /out (or a disk the launch writes to) is full"
    ),
    "TrackingLostError": app_errors.TrackingLostError(
        "[demo] tracking URI http://127.0.0.1:9 stopped answering during the launch"
    ),
    "StorageError": app_errors.StorageError(
        "s3:///prefix: an s3:// storage URI names a bucket (s3://BUCKET/PREFIX)"
    ),
}


def _error_types() -> set[type]:
    found: set[type] = set()
    for module in (core_errors, app_errors):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value is not core_errors.PicklableError
            ):
                found.add(value)
    return found


def test_every_error_type_has_an_example() -> None:
    assert {t.__name__ for t in _error_types()} == set(EXAMPLES)


@pytest.mark.parametrize(
    "dumps, loads",
    [(pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)],
    ids=["pickle", "cloudpickle"],
)
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_error_survives_a_pickle_round_trip(name: str, dumps, loads) -> None:
    error = EXAMPLES[name]
    copy = loads(dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error) and copy.args == error.args
    assert vars(copy) == vars(error)  # key, source, reason, epoch, step, ...


def test_messages_name_what_went_wrong() -> None:
    assert str(EXAMPLES["ConfigError"]) == "run.yaml: optim.lr: -1 must be > 0"
    assert str(EXAMPLES["SpecError"]) == "sweep.yaml: grid.dataset[0]: unknown dataset 'mnist'"
    assert str(EXAMPLES["NonFiniteLossError"]) == "non-finite loss (nan) at epoch 1, step 2"


def test_every_input_error_is_one_family_and_divergence_is_not() -> None:
    for name, error in EXAMPLES.items():
        failure = name in (  # not the user's input
            "NonFiniteLossError",
            "DiskFullError",
            "LaunchStoppedError",
            "TrackingLostError",
            "DiskFullLaunchError",
        )
        assert isinstance(error, core_errors.InputError) == (not failure), name


def test_the_cli_maps_any_input_error_to_exit_2_with_its_message(tmp_path) -> None:
    # a bad override (ConfigError from the core) and a missing sweep file (SpecError) through two verbs
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--dataset",
            "eurosat",
            "--seed",
            "1",
            "--shots",
            "1",
            "--set",
            "optim.lrr=1",
            "--data-root",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "optim.lrr: unknown key" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2 and "absent.yaml: no such sweep file" in result.output
    assert not any(tmp_path.iterdir())  # nothing written
