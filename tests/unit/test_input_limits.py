"""Hostile input has limits: every file read is a bounded regular file, sizes are counted before
anything is expanded or allocated, values stay in range, and network waits are bounded.

Each case hands a representative bad input to a verb (or the function behind it) and checks the
exit code, that one message names the file, key, path or limit, that no traceback is printed and
that nothing was written.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.errors import TrackingError, TrackingLostError
from orchestration.sweeps.spec import MAX_TRIALS
from prometar.config import MAX_SEED, ConfigError, load_preset, resolve_config
from prometar.data.readers import read_dataset
from prometar.errors import DataError, InputFileError
from prometar.files import read_input_bytes
from prometar.toy.miniature import write_miniatures

SWEEP = """\
name: limits
protocol: base2new
overrides:
  backbone.name: toy-clip
  prompts.deep_depth: 3
grid:
  method: [ivlp]
  dataset: [dtd]
  seed: [1]
"""


def invoke(*args: str):
    """Run the CLI; the result (exit code, output) and the output with stderr."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_message(result, exit_code: int, *names: str) -> None:
    """Exit code, every name in the output, and no traceback."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    for name in names:
        assert name in result.output, (name, result.output)


def closed_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# files read: regular files of bounded size


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "preset.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputFileError, match="not a regular file") as err:
        read_input_bytes(fifo, max_bytes=100)
    assert str(fifo) in str(err.value)
    with pytest.raises(ConfigError, match="not a regular file") as err:
        load_preset(str(fifo))
    assert str(fifo) in str(err.value)
    result = invoke("validate", fifo)
    assert_one_message(result, 2, str(fifo), "not a regular file")


def test_a_device_and_an_oversized_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="/dev/zero: is not a regular file"):
        read_input_bytes("/dev/zero", max_bytes=1000)
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" * 100)
    with pytest.raises(InputFileError, match="larger than the limit of 100 bytes") as err:
        read_input_bytes(big, max_bytes=100)
    assert str(big) in str(err.value)
    assert read_input_bytes(big, max_bytes=500) == big.read_bytes()
    result = invoke("table", "--runs", "/dev/zero")
    assert_one_message(result, 2, "/dev/zero", "not a regular file")


def test_deeply_nested_yaml_is_one_message(tmp_path: Path) -> None:
    sweep = tmp_path / "deep.yaml"
    sweep.write_text("grid: " + "[" * 100_000 + "]" * 100_000 + "\n")
    result = invoke("validate", sweep)
    assert_one_message(result, 2, str(sweep), "nested too deeply")


# ---------------------------------------------------------------------------------------------
# sweep sizes: counted before expansion


def test_a_million_trial_grid_fails_fast_naming_the_limit(tmp_path: Path) -> None:
    """validate and launch --dry-run refuse a 10^6-trial grid (a few lines) within a generous guard."""
    sweep = tmp_path / "huge.yaml"
    sweep.write_text(
        SWEEP.replace("seed: [1]", f"seed: {list(range(1000))}\n  shots: {list(range(1, 1001))}")
    )
    started = time.monotonic()
    result = invoke("validate", sweep)
    assert_one_message(result, 2, str(sweep), "1,000,000 trials", f"limit of {MAX_TRIALS:,}")
    out = tmp_path / "out"
    result = invoke("launch", sweep, "--dry-run", "--output", out, "--data-root", tmp_path)
    assert_one_message(result, 2, str(sweep), f"limit of {MAX_TRIALS:,}")
    assert time.monotonic() - started < 30  # fails fast instead of expanding the grid
    assert not out.exists()


def test_a_search_counts_its_samples_against_the_limit(tmp_path: Path) -> None:
    sweep = tmp_path / "search.yaml"
    sweep.write_text(
        SWEEP.replace("protocol: base2new\n", "")
        + "search:\n  num_samples: 1000000000\n  space:\n    optim.lr: {loguniform: [0.001, 0.1]}\n"
    )
    result = invoke("validate", sweep)
    assert_one_message(result, 2, str(sweep), "search.num_samples", f"limit of {MAX_TRIALS:,}")


# ---------------------------------------------------------------------------------------------
# impossible values


RESOURCES = "resources:\n  default: {cpu: %s, gpu: %s}\n"
SEARCH = "search:\n  seed: %s\n  space:\n    optim.lr: {loguniform: [0.001, %s]}\n"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (SWEEP.replace("seed: [1]", f"seed: [{2**70}]"), "grid.seed[0]"),
        (SWEEP.replace("seed: [1]", "seed: [-1]"), "grid.seed[0]"),
        (SWEEP + RESOURCES % (".inf", 0), "resources.default.cpu"),
        (SWEEP + RESOURCES % (100000, 0), "resources.default.cpu"),
        (SWEEP + RESOURCES % (1, "1e-9"), "resources.default.gpu"),
        (SWEEP + RESOURCES % (1, ".nan"), "resources.default.gpu"),
        (
            SWEEP.replace("protocol: base2new\n", "") + SEARCH % (0, ".inf"),
            "search.space.optim.lr.loguniform",
        ),
        (SWEEP.replace("protocol: base2new\n", "") + SEARCH % (2**40, 0.1), "search.seed"),
    ],
)
def test_impossible_sweep_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(text)
    result = invoke("validate", sweep)
    assert_one_message(result, 2, str(sweep), key)


def test_seeds_are_bounded_in_run_configs_and_on_the_command_line(tmp_path: Path) -> None:
    resolve_config("official", {"data.dataset": "dtd", "seed": MAX_SEED})
    with pytest.raises(ConfigError, match=r"seed.*0\.\.4294967295"):
        resolve_config("official", {"data.dataset": "dtd", "seed": MAX_SEED + 1})
    result = invoke("train", "--dataset", "dtd", "--seed", 2**70, "--data-root", tmp_path)
    assert_one_message(result, 2, "--seed", "4294967295")
    result = invoke(
        "data", "fewshot", "--dataset", "dtd", "--shots", 1, "--seed", -1, "--data-root", tmp_path
    )
    assert_one_message(result, 2, "--seed")


def test_fewshot_with_k_above_every_class_is_one_message(tmp_path: Path) -> None:
    write_miniatures(tmp_path, ["dtd"], images_per_class=4)
    result = invoke(
        "data", "fewshot", "--dataset", "dtd", "--shots", 1000, "--seed", 1, "--data-root", tmp_path
    )
    assert_one_message(result, 2, "--shots 1000", "at most")
    result = invoke("data", "fewshot", "--dataset", "dtd", "--shots", 1, "--seed", 1, "--data-root", tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["train"]


# ---------------------------------------------------------------------------------------------
# runs CSVs are validated like sweep files

GOOD_CSV = "method,dataset,seed,shots,base_acc,new_acc\nivlp,dtd,1,16,80.5,60.25\n"


@pytest.mark.parametrize(
    ("csv", "names"),
    [
        (GOOD_CSV.replace(",1,16,", ",1e30,16,"), ("'seed'", "1e30")),
        (GOOD_CSV.replace(",1,16,", ",nan,16,"), ("'seed'",)),
        (GOOD_CSV.replace("80.5", "inf"), ("'base_acc'", "0..100")),
        (GOOD_CSV.replace("80.5", "250"), ("'base_acc'", "0..100")),
        (GOOD_CSV.replace("60.25", "-40"), ("'new_acc'", "0..100")),
        (GOOD_CSV.replace("ivlp,", "kgcoop,"), ("unknown method", "'kgcoop'")),
        (GOOD_CSV.replace(",dtd,", ",mnist,"), ("unknown dataset", "'mnist'")),
        (
            GOOD_CSV.replace("new_acc\n", "new_acc,base_acc\n").replace("60.25\n", "60.25,99\n"),
            ("'base_acc'", "more than once"),
        ),
    ],
)
def test_bad_runs_csvs_are_one_message(tmp_path: Path, csv: str, names: tuple[str, ...]) -> None:
    path = tmp_path / "runs.csv"
    path.write_text(csv)
    result = invoke("table", "--runs", path)
    assert_one_message(result, 2, str(path), *names)


def test_a_good_runs_csv_still_makes_a_table(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text(GOOD_CSV)
    result = invoke("table", "--runs", path)
    assert result.exit_code == 0, result.output
    assert "80.5" in result.output


# ---------------------------------------------------------------------------------------------
# split files: bounded labels, bounded depth, paths inside the image root


@pytest.fixture
def pets(tmp_path: Path) -> tuple[Path, Path]:
    write_miniatures(tmp_path, ["oxford_pets"])
    return tmp_path, tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"


def _edit_split(split: Path, edit) -> None:
    data = json.loads(split.read_text())
    edit(data)
    split.write_text(json.dumps(data))


def test_a_huge_label_is_refused_without_allocating(pets) -> None:
    root, split = pets
    _edit_split(split, lambda d: d["train"][0].__setitem__(1, 10**18))
    with pytest.raises(DataError, match="the largest is 1000000000000000000") as err:
        read_dataset("oxford_pets", root)
    assert str(split) in str(err.value)
    result = invoke("data", "check", "--data-root", root, "--dataset", "oxford_pets")
    assert_one_message(result, 2, str(split), "1000000000000000000")


def test_a_deeply_nested_split_file_is_one_message(pets) -> None:
    root, split = pets
    split.write_text("[" * 100_000 + "]" * 100_000)
    result = invoke("data", "check", "--data-root", root, "--dataset", "oxford_pets")
    assert_one_message(result, 2, str(split), "nested too deeply")


@pytest.mark.parametrize("entry", ["/etc/passwd", "../../../../etc/passwd", "images/../../x.jpg"])
def test_a_split_entry_outside_the_image_root_is_refused(pets, entry: str) -> None:
    root, split = pets
    _edit_split(split, lambda d: d["test"][2].__setitem__(0, entry))
    with pytest.raises(DataError, match=r"test\[2\]") as err:
        read_dataset("oxford_pets", root)
    assert str(split) in str(err.value) and entry in str(err.value)
    result = invoke("data", "check", "--data-root", root, "--dataset", "oxford_pets")
    assert_one_message(result, 2, str(split), "test[2]", entry, "not inside the image root")


def test_a_symlink_out_of_the_image_root_is_refused(pets, tmp_path_factory) -> None:
    root, split = pets
    outside = tmp_path_factory.mktemp("outside") / "secret.jpg"
    first = json.loads(split.read_text())["train"][0][0]
    image = root / "oxford_pets" / "images" / first
    outside.write_bytes(image.read_bytes())
    image.unlink()
    image.symlink_to(outside)
    result = invoke("data", "check", "--data-root", root, "--dataset", "oxford_pets")
    assert_one_message(result, 2, str(split), "train[0]", str(image), "outside the image root")


def test_a_symlink_swapped_in_after_the_checks_is_refused_by_the_loader(pets, tmp_path_factory) -> None:
    """The split is read and checked, few-shot sampled and cached; then an image becomes a symlink
    out of the root: the loader refuses it with the same message naming the split file and entry,
    also for an item read back from the few-shot cache."""
    from prometar.data.fewshot import few_shot
    from prometar.data.loaders import ImageDataset

    root, split = pets
    splits = read_dataset("oxford_pets", root)
    for _ in range(2):  # sampled and cached, then read back from the cache
        sampled = few_shot(splits, key="oxford_pets", data_root=root, shots=1, seed=1)
        assert ImageDataset(sampled.train)[0][1] == sampled.train[0].label  # inside: loads
    first = sampled.train[0]
    entry = first.origin.rsplit(": ", 1)[1]  # e.g. train[7]
    outside = tmp_path_factory.mktemp("outside") / "secret.jpg"
    outside.write_bytes(Path(first.path).read_bytes())
    Path(first.path).unlink()
    Path(first.path).symlink_to(outside)  # swapped in after the checks
    with pytest.raises(DataError) as err:
        ImageDataset(sampled.train)[0]
    message = str(err.value)
    assert message.startswith(f"{split}: {entry}: image {first.path} resolves to a place outside")
    assert str(root / "oxford_pets" / "images") in message
    result = invoke("data", "check", "--data-root", root, "--dataset", "oxford_pets")
    assert_one_message(result, 2, str(split), entry, first.path, "outside the image root")


def test_a_few_shot_cache_cannot_name_a_file_the_split_file_does_not(pets) -> None:
    """A cache edited to point outside the split (``../``) is not trusted: it is rebuilt."""
    from prometar.data.fewshot import cache_path, few_shot

    root, _ = pets
    splits = read_dataset("oxford_pets", root)
    few_shot(splits, key="oxford_pets", data_root=root, shots=1, seed=1)
    cache = cache_path("oxford_pets", str(root), 1, 1, None)
    data = json.loads(cache.read_text())
    data["train"][0][0] = "../../../../etc/passwd"
    cache.write_text(json.dumps(data))
    sampled = few_shot(splits, key="oxford_pets", data_root=root, shots=1, seed=1)
    assert all(item.path.startswith(str(root / "oxford_pets" / "images")) for item in sampled.train)


# ---------------------------------------------------------------------------------------------
# network waits are bounded


@pytest.mark.parametrize("scheme", ["http", "postgresql"])
def test_reading_verbs_refuse_an_unreachable_tracking_store_at_once(tmp_path: Path, scheme: str) -> None:
    uri = f"{scheme}://127.0.0.1:{closed_port()}" + ("/mlflow" if scheme == "postgresql" else "")
    started = time.monotonic()
    for verb in (["table"], ["plot", "-o", tmp_path / "figs"], ["report", "-o", tmp_path / "report"]):
        result = invoke(*verb, "--experiment", "demo", "--tracking-uri", uri)
        assert_one_message(result, 2, uri, "unreachable")
    assert time.monotonic() - started < 60  # fails fast instead of retrying for minutes
    assert not (tmp_path / "figs").exists() and not (tmp_path / "report").exists()


def test_mlflow_http_retries_are_bounded_for_every_verb(monkeypatch) -> None:
    from orchestration.ledger.uri import HTTP_LIMITS, bounded_request_settings

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "50")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    settings = bounded_request_settings()
    assert settings["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(HTTP_LIMITS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    assert settings["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5"  # a smaller value given stays
    assert settings["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"  # MLflow's default (2) is lowered
    invoke("validate", "no-such-sweep.yaml")  # any verb
    for name, value in settings.items():
        assert os.environ[name] == value


def test_launch_refuses_a_ray_address_where_nothing_listens(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(SWEEP)
    address = f"127.0.0.1:{closed_port()}"
    out = tmp_path / "out"
    result = invoke("launch", sweep, "--address", address, "--output", out)
    assert_one_message(result, 2, address, "no Ray cluster answers")
    assert not out.exists()


def test_a_store_lost_during_a_launch_ends_it_with_one_line(tmp_path: Path) -> None:
    """The fan-out fails while the store is unreachable: a TrackingLostError (the CLI: exit 1, one
    line naming the URI); a failure with the store still answering stays what it was."""
    from orchestration.launch.runner import _store_loss_ends_the_launch
    from orchestration.ledger.store import TrialLedger

    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(TrackingLostError, match="stopped answering during the launch") as err:
        with _store_loss_ends_the_launch(TrialLedger(uri, "demo"), "demo"):
            raise ConnectionError("API request to endpoint /api/2.0/mlflow/runs/log-batch failed")
    assert uri in str(err.value) and "launch again" in str(err.value)
    local = TrialLedger(f"sqlite:///{tmp_path / 'mlflow.db'}", "demo")
    with pytest.raises(RuntimeError, match="Ray lost"):
        with _store_loss_ends_the_launch(local, "demo"):
            raise RuntimeError("Ray lost")
    with pytest.raises(TrackingError, match=uri):
        TrialLedger(uri, "demo").check_reachable()


def test_node_sizing_never_asks_more_cpus_than_a_node_has() -> None:
    """The smallest GPU fraction with many CPUs per trial would need 12,800 CPUs per 8-GPU node:
    refused naming the resources entry, instead of an sbatch script asking for them."""
    import yaml

    from orchestration.cluster.sizing import MAX_NODE_CPUS, cpus_to_fill
    from orchestration.errors import ClusterError
    from orchestration.sweeps.planning import plan_sweep
    from orchestration.sweeps.spec import MIN_GPU_FRACTION, parse_sweep

    data = yaml.safe_load(SWEEP + RESOURCES % (100, MIN_GPU_FRACTION))
    plan = plan_sweep(parse_sweep(data, source="sweep.yaml"))
    with pytest.raises(ClusterError, match=rf"resources.default: .*12800 CPUs.*{MAX_NODE_CPUS}"):
        cpus_to_fill(plan, 8)
    fitting = plan_sweep(parse_sweep(yaml.safe_load(SWEEP + RESOURCES % (4, 0.5)), source="sweep.yaml"))
    assert cpus_to_fill(fitting, 8) == 64


def test_joining_an_address_where_something_else_answers_is_one_message(monkeypatch) -> None:
    """A port that accepts connections but is no Ray cluster (a proxy, another service): Ray's
    ConnectionError becomes one LaunchError naming the address (the CLI: exit 2)."""
    import ray

    from orchestration.errors import LaunchError
    from orchestration.launch.ray_session import join_ray

    def refuse(**_: object) -> None:
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.7:6379")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(LaunchError) as err:
        join_ray("10.0.0.7:6379")
    assert str(err.value) == (
        "--address 10.0.0.7:6379 (or RAY_ADDRESS): no Ray cluster answers there "
        "(Failed to connect to Ray cluster at 10.0.0.7:6379)"
    )
