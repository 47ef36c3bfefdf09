"""Live progress of a launch: one compact line per change (done / running / failed / to do, ETA).

A Tune callback on the driver; it replaces Tune's own tables (the launch runs Tune with
``verbose=0``). Counts include the trials a previous launch already finished.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from ray import tune


def format_duration(seconds: float) -> str:
    """``3h05m``, ``4m10s`` or ``12s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class ProgressLine(tune.Callback):
    """Prints ``[sweep] done 3/12 · running 2 · failed 0 · to do 7 · ETA 4m10s`` on each change.

    Args:
        sweep: The sweep's name (line prefix).
        total: Trials of the whole sweep.
        done_before: Trials a previous launch already finished (skipped now).
        stream: Where the lines go (stdout by default).
    """

    def __init__(self, sweep: str, total: int, done_before: int = 0, stream: IO[str] | None = None) -> None:
        self.sweep = sweep
        self.total = total
        self.done_before = done_before
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.running: set[str] = set()
        self.finished: set[str] = set()
        self.failed: set[str] = set()
        self.retries = 0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; a stream does not pickle.
        state = dict(self.__dict__)
        state["stream"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stream = self.stream or sys.stdout

    def line(self) -> str:
        """The current progress line."""
        done = self.done_before + len(self.finished)
        ended = len(self.finished) + len(self.failed)
        todo = max(0, self.total - done - len(self.failed) - len(self.running))
        eta = "?"
        if ended:
            per_trial = (time.monotonic() - self.started) / ended  # wall time per ended trial (throughput)
            eta = format_duration(per_trial * (todo + len(self.running)))
        retry = f" · retried {self.retries}" if self.retries else ""
        return (
            f"[{self.sweep}] done {done}/{self.total} · running {len(self.running)} · "
            f"failed {len(self.failed)} · to do {todo}{retry} · ETA {eta}"
        )

    def _show(self) -> None:
        print(self.line(), file=self.stream, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        self._show()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.retries += 1
        self._show()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.finished.add(trial.trial_id)
        self._show()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from orchestration.ledger.callback import error_reason

        self.running.discard(trial.trial_id)
        self.failed.add(trial.trial_id)
        config = getattr(trial, "config", None) or {}
        key = config.get("trial_key") or config.get("group") or getattr(trial, "trial_id", trial)
        print(f"[{self.sweep}] trial {key} FAILED: {error_reason(trial)}", file=self.stream, flush=True)
        self._show()
