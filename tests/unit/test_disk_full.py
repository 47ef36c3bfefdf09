"""A disk that fills: each write that finds no space is one error naming the file, the ledger gets
room to record what happened, and a launch ends with one line naming its output folder (exit 1)."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from orchestration.cli import main
from orchestration.errors import DiskFullLaunchError
from orchestration.launch.reserve import SpaceReserve, space_reserve
from orchestration.ledger.callback import MlflowTrialCallback
from orchestration.ledger.store import TrialLedger
from prometar.errors import DiskFullError
from prometar.files import is_disk_full, write_atomic, writing


def _full(*_: object, **__: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_that_finds_no_space_names_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "subset.json"
    with pytest.raises(DiskFullError) as err:
        write_atomic(target, _full)
    assert str(err.value) == f"cannot write {target}: no space left on device"
    assert err.value.path == str(target)
    assert list(target.parent.iterdir()) == []  # no temporary file left behind
    with pytest.raises(PermissionError):  # other errors pass unchanged
        with writing(target):
            raise PermissionError(errno.EACCES, "Permission denied")


def test_a_full_disk_is_recognised_anywhere_in_an_error_chain() -> None:
    full_sqlite = sqlite3.OperationalError("database or disk is full")
    full_sqlite.sqlite_errorcode = 13  # SQLITE_FULL, as sqlite3 sets it
    try:
        try:
            raise full_sqlite
        except sqlite3.OperationalError as inner:
            raise RuntimeError("(sqlite3.OperationalError) database or disk is full") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(DiskFullError("/x"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("database or disk is full"))  # words alone say nothing
    assert not is_disk_full(None)


def test_the_reserve_holds_room_and_gives_it_back(tmp_path: Path) -> None:
    path = tmp_path / ".launch-demo.reserve"
    with space_reserve(path) as reserve:
        assert path.stat().st_size > 0
        assert reserve.release() is True and not path.exists()
        assert reserve.release() is False  # given back once
    with space_reserve(path):
        assert path.exists()
    assert not path.exists()  # removed when the launch ends, whatever happened


def _callback(tmp_path: Path, make_room) -> tuple[MlflowTrialCallback, TrialLedger, str]:
    ledger = TrialLedger(f"sqlite:///{tmp_path / 'mlflow.db'}", "demo", artifact_root=tmp_path / "art")
    run_id = ledger.client.create_run(ledger.experiment_id(create=True)).info.run_id
    callback = MlflowTrialCallback(
        ledger, "parent", resolve=lambda config: None, sweep="demo", make_room=make_room
    )
    callback.runs["t1"], callback.keys["t1"] = run_id, "key1"
    return callback, ledger, run_id


def _failed_trial(error: BaseException) -> SimpleNamespace:
    return SimpleNamespace(trial_id="t1", error_file=None, local_path=None, get_pickled_error=lambda: error)


def _sqlite_full() -> Exception:
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as cause:
        try:
            raise RuntimeError("(sqlite3.OperationalError) database or disk is full") from cause
        except RuntimeError as error:
            return error


def test_a_ledger_write_on_a_full_disk_makes_room_and_ends_the_run_failed(tmp_path, monkeypatch) -> None:
    reserve = SpaceReserve(tmp_path / "reserve")
    reserve.hold(4096)
    callback, ledger, run_id = _callback(tmp_path, reserve.release)
    real = ledger.client.set_terminated
    calls: list[str] = []

    def full_until_room(run: str, status: str) -> None:
        calls.append(status)
        if reserve.path.exists():
            raise _sqlite_full()
        real(run, status)

    monkeypatch.setattr(ledger.client, "set_terminated", full_until_room)
    callback.on_trial_error(0, [], _failed_trial(DiskFullError("/out/trials/key1/state.pt")))
    run = ledger.client.get_run(run_id)
    assert run.info.status == "FAILED" and calls == ["FAILED", "FAILED"]  # room made, written again
    assert not reserve.path.exists()
    assert (
        callback.disk_full == {"key1"}
        and callback.unrecorded == 0
        and callback.outcomes == {"key1": "FAILED"}
    )


def test_a_ledger_write_with_no_room_left_is_counted_and_tune_goes_on(tmp_path, monkeypatch) -> None:
    callback, ledger, run_id = _callback(tmp_path, lambda: False)  # nothing left to give back

    def always_full(*_: object) -> None:
        raise _sqlite_full()

    monkeypatch.setattr(ledger.client, "set_terminated", always_full)
    callback.on_trial_error(0, [], _failed_trial(DiskFullError("/out/trials/key1/state.pt")))  # no raise
    assert callback.unrecorded == 1 and callback.outcomes == {"key1": "FAILED"}
    monkeypatch.setattr(ledger.client, "set_terminated", lambda *_: (_ for _ in ()).throw(ValueError("bug")))
    with pytest.raises(ValueError, match="bug"):  # anything but a full disk still stops Tune
        callback.on_trial_error(0, [], _failed_trial(RuntimeError("other")))


def test_a_fan_out_broken_by_a_full_disk_ends_the_launch_in_one_line(tmp_path: Path) -> None:
    from orchestration.launch.runner import _closing_parent

    done: list[tuple] = []
    ledger = SimpleNamespace(
        fail_running=lambda parent, reason: done.append(("fail_running", parent, reason)),
        end_run=lambda run, status: done.append(("end_run", run, status)),
    )
    reserve = SpaceReserve(tmp_path / "reserve")
    reserve.hold(4096)
    launch = SimpleNamespace(
        ledger=ledger,
        report=SimpleNamespace(parent_run_id="p1", disk_full=0),
        reserve=reserve,
        output=tmp_path / "out",
        plan=SimpleNamespace(name="demo"),
    )
    with pytest.raises(DiskFullLaunchError) as err:
        with _closing_parent(launch):
            raise RuntimeError("Tune could not save its state") from OSError(errno.ENOSPC, "full")
    assert f"the output folder {tmp_path / 'out'} " in str(err.value) and "launch again" in str(err.value)
    assert done == [
        ("fail_running", "p1", f"no space left on device under {tmp_path / 'out'}"),
        ("end_run", "p1", "FAILED"),
    ]
    assert not reserve.path.exists()
    done.clear()
    with pytest.raises(RuntimeError, match="Ray lost"):  # another failure stays what it was
        with _closing_parent(launch):
            raise RuntimeError("Ray lost")
    assert done == [("end_run", "p1", "FAILED")]


def test_the_cli_ends_a_launch_stopped_by_a_full_disk_with_one_line_and_exit_1(tmp_path, monkeypatch) -> None:
    import orchestration.launch.runner as runner

    def full(*_: object, **__: object) -> None:
        raise DiskFullLaunchError(f"[demo] no space left on device: the output folder {tmp_path} is full")

    monkeypatch.setattr(runner, "launch", full)
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: demo\n")
    result = CliRunner().invoke(main, ["launch", str(sweep), "--output", str(tmp_path)])
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [
        f"Error: [demo] no space left on device: the output folder {tmp_path} is full"
    ]
    assert "Traceback" not in result.output


def test_a_table_written_to_a_full_disk_is_one_line_exit_1_and_nothing_half_written(tmp_path, monkeypatch):
    """``table -o`` whose write finds the disk full (reported by ``fsync``, as delayed allocation
    does): one line naming the file, exit 1, no traceback, and no file left behind."""
    import os

    import pandas as pd

    import prometar.files

    runs = tmp_path / "runs.csv"
    rows = [
        dict(method=method, dataset="eurosat", seed=seed, shots=16, base_acc=70.0 + seed, new_acc=60.0 - seed)
        for method in ("ivlp", "prometar")
        for seed in (1, 2, 3)
    ]
    pd.DataFrame(rows).to_csv(runs, index=False)
    target = tmp_path / "tables" / "table.csv"
    monkeypatch.setattr(prometar.files.os, "fsync", _full)
    result = CliRunner().invoke(main, ["table", "--runs", str(runs), "--format", "csv", "-o", str(target)])
    monkeypatch.setattr(prometar.files.os, "fsync", os.fsync)
    assert result.exit_code == 1, result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [
        f"Error: cannot write {target}: no space left on device; free space and run this again"
    ]
    assert "Traceback" not in result.output
    assert list(target.parent.iterdir()) == []


def test_a_trial_failed_for_a_full_disk_is_told_before_tune_syncs_its_error(tmp_path: Path) -> None:
    """When the callbacks run, Tune's pickled error is not yet in the run's storage
    (``get_pickled_error`` gives None): the error's text, which Tune wrote to the driver's staging
    folder (``error_file``), says what the trial raised; a pickled error, once there, decides."""
    from orchestration.ledger.callback import trial_disk_full

    def trial(text: str | None, pickled: BaseException | None = None) -> SimpleNamespace:
        error_file = None
        if text is not None:
            error_file = tmp_path / f"error-{len(list(tmp_path.iterdir()))}.txt"
            error_file.write_text(text)
        return SimpleNamespace(
            trial_id="t1",
            error_file=None if error_file is None else str(error_file),
            local_path=str(tmp_path),
            get_pickled_error=lambda: pickled,
        )

    raised = "Traceback (most recent call last):\n  ...\nprometar.errors.DiskFullError: cannot write /x"
    assert trial_disk_full(trial(raised))
    assert trial_disk_full(trial("OSError: [Errno 28] No space left on device: '/x'"))
    assert not trial_disk_full(trial("prometar.errors.NonFiniteLossError: loss is nan at epoch 2"))
    assert not trial_disk_full(trial(None))  # no error text either, and room on the disk
    assert not trial_disk_full(trial(raised, pickled=ValueError("diverged")))  # the object decides
    assert trial_disk_full(trial(None, pickled=DiskFullError("/out/trials/k/state.pt")))
