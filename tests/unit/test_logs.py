"""A trial's log: its stdout, stderr and the core's log records in ``trial.log``; an error leaving the
trial quotes the log's last lines after a header, and readers separate the two."""

from __future__ import annotations

import io
import logging
import sys
import traceback
from pathlib import Path

import pytest

from orchestration.logs import TAIL_HEADER, quoting_log_tail, records_to, split_error, tail, trial_log


def test_trial_log_keeps_prints_and_log_records_and_restores_the_streams(tmp_path) -> None:
    path = tmp_path / "trial" / "trial.log"
    out, err = sys.stdout, sys.stderr
    with trial_log(path):
        print("from stdout")
        print("from stderr", file=sys.stderr)
        logging.getLogger("prometar.run").info("core record")
        logging.getLogger("orchestration.launch.trainable").info("application record")
        logging.getLogger("some.library").debug("not kept")
    assert (sys.stdout, sys.stderr) == (out, err)
    logging.getLogger("prometar.run").info("after the trial")
    text = path.read_text()
    assert "from stdout\n" in text and "from stderr\n" in text
    assert "INFO prometar.run: core record" in text and "application record" in text
    assert "not kept" not in text and "after the trial" not in text
    with trial_log(path):  # a retry appends
        print("second attempt")
    assert path.read_text().startswith(text) and path.read_text().endswith("second attempt\n")


def test_an_error_quotes_the_last_lines_and_readers_split_them(tmp_path) -> None:
    path = tmp_path / "trial.log"
    path.write_text("".join(f"line {i}\n" for i in range(50)))
    with pytest.raises(ValueError) as caught, quoting_log_tail(path, lines=3):
        raise ValueError("bad value")
    assert caught.value.__notes__ == [f"{TAIL_HEADER}\nline 47\nline 48\nline 49"]
    text = "".join(traceback.format_exception(caught.value))
    error, quoted = split_error(text)
    assert error.endswith("ValueError: bad value") and quoted == "line 47\nline 48\nline 49"
    assert split_error("RuntimeError: plain") == ("RuntimeError: plain", "")
    assert tail(tmp_path / "absent.log") == ""


def test_records_to_shows_one_loggers_records_for_a_while() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("prometar.toy.clip")
    with records_to(stream, "prometar.toy"):
        logger.info("toy CLIP step 100 of 1000")
    logger.info("not shown")
    assert stream.getvalue() == "toy CLIP step 100 of 1000\n"


def test_a_trial_log_on_a_full_disk_loses_its_lines_not_the_trial(capsys) -> None:
    """trial.log on a full disk (Linux's ``/dev/full``: every write finds no space): prints and log
    records still reach the console, and nothing prints a traceback about the log."""
    with trial_log(Path("/dev/full")):
        print("printed")
        logging.getLogger("prometar.test").warning("logged")
        print("still printed", file=sys.stderr)
    captured = capsys.readouterr()
    assert "printed" in captured.out and "still printed" in captured.err
    assert "Logging error" not in captured.err and "Traceback" not in captured.err
