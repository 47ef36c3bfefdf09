"""The trainer: epochs, learning-rate schedules, checkpoints and resume (docs/algorithm.md §5).

The trainer owns everything around a training step and nothing inside it: the step
(``prometar.steps``: one class per training scheme) does its own forward, backward and optimiser steps and
returns named metrics. Per epoch the trainer

1. sets both optimisers' learning rates from their closed-form schedules (prompts: ``W``
   constant warm-up epochs, then the cosine restarted at the end of the warm-up,
   ``lr·(1+cos(π·(e−W)/T))/2`` at 0-based epoch ``e ≥ W`` with ``T`` the run's epoch count, as
   Dassl's ``WARMUP_RECOUNT=True`` does; gate: the same form with its own values, or — official —
   frozen at its epoch-0 value because the published code never steps that scheduler),
2. iterates a loader whose order and augmentation are seeded from (seed, epoch), drawing virtual
   tasks from a dedicated generator,
3. averages the step metrics over the epoch and adds the learning rates (and, if given, the
   metrics of an ``evaluate`` hook, run with every RNG state saved and restored around it so
   evaluation leaves the training streams untouched),
4. writes a checkpoint atomically (trainable tensors, both optimisers, schedule position, every
   RNG state, the metric history) and calls the metric callback.

Checkpoints hold tensors, numbers, strings, lists and dicts only, and are read with
``torch.load(weights_only=True)``: trial checkpoints live on shared storage that other users or
jobs may be able to write, and a pickle that can build arbitrary objects can run code when it is
loaded. Python's and NumPy's RNG states are stored as tensors for that reason.

Resuming from the checkpoint of epoch ``k`` restores all of that, so the run ends with the same
prompts and metrics as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prometar import events
from prometar import metrics as names
from prometar.errors import CheckpointError, NonFiniteLossError
from prometar.files import writing

logger = logging.getLogger(__name__)

__all__ = [
    "LearningRateSchedule",
    "Trainer",
    "checkpoint_files",
    "derive_seed",
    "seed_everything",
]

CHECKPOINT_FILE = "state.pt"
# 2: tensors and plain data only, read with weights_only=True (1 held NumPy objects and needed the
# full unpickler, which can run code from the file: version-1 checkpoints are refused, not read).
CHECKPOINT_VERSION = 2


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from the run seed and labels, e.g. ``derive_seed(1, "loader", 3)``."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


@dataclass(frozen=True)
class LearningRateSchedule:
    """Constant warm-up, then a cosine restarted after it, evaluated per 0-based epoch.

    The published schedule (Dassl's ``ConstantWarmupScheduler`` around ``CosineAnnealingLR``,
    stepped once per epoch, ``WARMUP_RECOUNT=True``): epochs ``e < W`` run at ``warmup_lr``;
    epoch ``e ≥ W`` runs at ``lr·(1+cos(π·(e−W)/T))/2``. The cosine starts at its peak right
    after the warm-up and keeps its full period ``T`` (the run's epoch count; it is not
    shortened by the warm-up), so with ``W ≥ 1`` the run ends before the cosine reaches 0.

    Attributes:
        lr: Peak learning rate.
        epochs: Cosine period T (the run's epoch count).
        warmup_epochs: Epochs W held at ``warmup_lr``; the cosine's epoch 0 is epoch W.
        warmup_lr: Learning rate during warm-up.
        stepped: False models a scheduler that is never stepped: every epoch keeps the epoch-0
            learning rate (the published gate optimiser).
    """

    lr: float
    epochs: int
    warmup_epochs: int = 0
    warmup_lr: float = 0.0
    stepped: bool = True

    def at(self, epoch: int) -> float:
        """Learning rate used throughout 0-based ``epoch``."""
        if not self.stepped:
            epoch = 0
        if epoch < self.warmup_epochs:
            return self.warmup_lr
        return self.lr * (1.0 + math.cos(math.pi * (epoch - self.warmup_epochs) / self.epochs)) / 2.0


def _trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}


def _load_trainable_state(module: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    params = {name: p for name, p in module.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        missing = sorted(set(params) - set(state))
        extra = sorted(set(state) - set(params))
        raise CheckpointError(f"{where}: trainable tensors differ (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for name, p in params.items():
            if p.shape != state[name].shape:
                raise CheckpointError(
                    f"{where}: {name} has shape {tuple(state[name].shape)}, expected {tuple(p.shape)}"
                )
            p.copy_(state[name].to(p.device, p.dtype))


def _python_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _set_python_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(
        (int(state["version"]), tuple(int(v) for v in state["internal"].tolist()), state["gauss"])
    )


def _numpy_rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "name": str(name),
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_rng_state(state: Mapping[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (state["name"], keys, int(state["pos"]), int(state["has_gauss"]), float(state["cached_gaussian"]))
    )


def _rng_state(generators: Mapping[str, torch.Generator]) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": _python_rng_state(),
        "numpy": _numpy_rng_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    _set_python_rng_state(state["python"])
    _set_numpy_rng_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in generators.items():
        g.set_state(state["generators"][name])


def _plain(value: Any) -> Any:
    """``value`` as data ``torch.load(weights_only=True)`` reads back: NumPy scalars become numbers."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class Trainer:
    """Runs the epochs of one training run.

    Args:
        step: The training step: ``step(images, labels, generator=...) -> dict[str, float]``; it
            does its own backward and optimiser steps (``prometar.steps.base.TrainingStep``).
        make_loader: ``make_loader(generator)`` returns an iterable of ``(images, labels)``
            batches for one epoch whose order and augmentation draw from ``generator`` (the
            trainer reseeds it per epoch; ``prometar.data.SeededSampler``).
        modules: Modules whose trainable tensors are checkpointed (``{"model": ..., "gate": ...}``).
        prompt_optimizer: Optimiser of the prompt tensors.
        prompt_schedule: Its per-epoch learning rates.
        gate_optimizer: Optimiser of the gate network, if any.
        gate_schedule: Its per-epoch learning rates (required with ``gate_optimizer``).
        epochs: Number of epochs.
        seed: Run seed; the loader and virtual-task generators derive from it.
        device: Where batches are moved.
        checkpoint_dir: Folder receiving ``epoch_<k>/`` after each epoch; None = no checkpoints.
        keep_checkpoints: How many of the latest epoch checkpoints to keep (None = all).
        callback: Called after each epoch's checkpoint with
            ``{"event": "epoch", "epoch": k, "checkpoint": path-or-None, **metrics}``; ``k`` is
            the 1-based number of completed epochs. Exceptions propagate (they stop the run).
        fingerprint: Identity of the run (e.g. a config hash) stored in checkpoints and checked
            on resume.
        evaluate: Called after each epoch's training; its named metrics join the epoch's record
            (history, checkpoint, callback). It runs with every RNG state restored afterwards.
    """

    def __init__(
        self,
        step: Callable[..., Mapping[str, float]],
        make_loader: Callable[[torch.Generator], Iterable[tuple[torch.Tensor, torch.Tensor]]],
        *,
        modules: Mapping[str, nn.Module],
        prompt_optimizer: torch.optim.Optimizer,
        prompt_schedule: LearningRateSchedule,
        gate_optimizer: torch.optim.Optimizer | None = None,
        gate_schedule: LearningRateSchedule | None = None,
        epochs: int,
        seed: int,
        device: torch.device | str = "cpu",
        checkpoint_dir: Path | None = None,
        keep_checkpoints: int | None = 1,
        callback: Callable[[dict[str, Any]], None] | None = None,
        fingerprint: str | None = None,
        evaluate: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        if gate_optimizer is not None and gate_schedule is None:
            raise ValueError("gate_schedule is required with gate_optimizer")
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        self.step = step
        self.make_loader = make_loader
        self.modules = dict(modules)
        self.prompt_optimizer = prompt_optimizer
        self.prompt_schedule = prompt_schedule
        self.gate_optimizer = gate_optimizer
        self.gate_schedule = gate_schedule
        self.epochs = epochs
        self.seed = seed
        self.device = torch.device(device)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.keep_checkpoints = keep_checkpoints
        self.callback = callback
        self.fingerprint = fingerprint
        self.evaluate = evaluate
        self.task_generator = torch.Generator().manual_seed(derive_seed(seed, "tasks"))
        self.loader_generator = torch.Generator()
        self.epoch = 0  # completed epochs
        self.history: list[dict[str, Any]] = []
        self.epoch_images = 0
        """Training images of the latest epoch (for ``images_per_second``)."""

    # ---------------------------------------------------------------------------------------
    def _generators(self) -> dict[str, torch.Generator]:
        return {"tasks": self.task_generator, "loader": self.loader_generator}

    def _set_learning_rates(self, epoch: int) -> dict[str, float]:
        rates = {names.LR: self.prompt_schedule.at(epoch)}
        for group in self.prompt_optimizer.param_groups:
            group["lr"] = rates[names.LR]
        if self.gate_optimizer is not None:
            assert self.gate_schedule is not None
            rates[names.GATE_LR] = self.gate_schedule.at(epoch)
            for group in self.gate_optimizer.param_groups:
                group["lr"] = rates[names.GATE_LR]
        return rates

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one 0-based epoch; return its mean step metrics plus learning rates."""
        rates = self._set_learning_rates(epoch)
        self.loader_generator.manual_seed(derive_seed(self.seed, "loader", epoch))
        sums: dict[str, float] = {}
        steps = 0
        self.epoch_images = 0
        for images, labels in self.make_loader(self.loader_generator):
            self.epoch_images += int(images.shape[0])
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            metrics = self.step(images, labels, generator=self.task_generator)
            steps += 1
            for name, value in metrics.items():
                value = float(value)
                if not math.isfinite(value):
                    raise NonFiniteLossError(epoch + 1, steps, name, value)
                sums[name] = sums.get(name, 0.0) + value
        if steps == 0:
            raise ValueError(
                f"epoch {epoch + 1} had no training batches (fewer training images than "
                "data.batch_size with drop_last?)"
            )
        out: dict[str, Any] = {name: total / steps for name, total in sums.items()}
        out.update(rates)
        out[names.STEPS] = steps
        return out

    def fit(self, resume_from: Path | None = None) -> list[dict[str, Any]]:
        """Train all remaining epochs.

        Args:
            resume_from: A checkpoint folder (``.../epoch_<k>``) written by this trainer for the
                same run; training continues with epoch ``k + 1``.

        Returns:
            One metrics dict per epoch (all epochs, including those before a resume).
        """
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        elif self.epoch == 0:
            # Augmentations in the loading process draw from the global RNGs: make them a
            # function of the seed, whatever ran before.
            seed_everything(derive_seed(self.seed, "global"))
        while self.epoch < self.epochs:
            started = time.perf_counter()  # a measurement for the ledger, never an input to a result
            metrics = self.train_epoch(self.epoch)
            seconds = max(time.perf_counter() - started, 1e-9)
            measured = {names.EPOCH_SECONDS: seconds, names.IMAGES_PER_SECOND: self.epoch_images / seconds}
            if self.evaluate is not None:
                rng = _rng_state(self._generators())
                try:
                    metrics.update(self.evaluate())
                finally:
                    _set_rng_state(rng, self._generators())
            self.epoch += 1
            record = {events.EPOCH_KEY: self.epoch, **metrics}
            self.history.append(record)
            logger.info(
                "epoch %d/%d (%.1fs, %.1f images/s): %s",
                self.epoch,
                self.epochs,
                seconds,
                measured[names.IMAGES_PER_SECOND],
                ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)),
            )
            skipped = metrics.get(names.META_SKIPPED, 0.0)
            if skipped > 0:
                logger.info(
                    "epoch %d: phase B skipped on %d of %d steps (single-label batches)",
                    self.epoch,
                    round(skipped * metrics[names.STEPS]),
                    metrics[names.STEPS],
                )
            path = self.save_checkpoint() if self.checkpoint_dir is not None else None
            if self.callback is not None:
                self.callback(
                    {
                        events.EVENT: events.EPOCH,
                        events.EPOCH_KEY: self.epoch,
                        events.CHECKPOINT: str(path) if path else None,
                        **metrics,
                        **measured,
                    }
                )
            self._prune_checkpoints()
        return list(self.history)

    # ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly."""
        return {
            "version": CHECKPOINT_VERSION,
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "seed": self.seed,
            "modules": {name: _trainable_state(m) for name, m in self.modules.items()},
            "prompt_optimizer": self.prompt_optimizer.state_dict(),
            "gate_optimizer": self.gate_optimizer.state_dict() if self.gate_optimizer else None,
            "schedules": {
                "prompt": dataclasses.asdict(self.prompt_schedule),
                "gate": dataclasses.asdict(self.gate_schedule) if self.gate_schedule else None,
            },
            "rng": _rng_state(self._generators()),
            "history": _plain(self.history),
        }

    def save_checkpoint(self) -> Path:
        """Write ``epoch_<k>/state.pt`` atomically (temporary folder, then rename).

        Raises:
            DiskFullError: No space for it (the message names the checkpoint; nothing half-written).
        """
        assert self.checkpoint_dir is not None
        final = self.checkpoint_dir / f"epoch_{self.epoch}"
        with writing(final / CHECKPOINT_FILE):
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".epoch_{self.epoch}.", dir=self.checkpoint_dir))
            try:
                with open(tmp / CHECKPOINT_FILE, "wb") as fh:
                    torch.save(self.state_dict(), fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                if final.exists():
                    stale = final.with_name(f".{final.name}.stale.{os.getpid()}")
                    os.replace(final, stale)
                    shutil.rmtree(stale, ignore_errors=True)
                os.replace(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _prune_checkpoints(self) -> None:
        if self.checkpoint_dir is None or self.keep_checkpoints is None:
            return
        done = sorted(
            (int(p.name.split("_", 1)[1]), p)
            for p in self.checkpoint_dir.glob("epoch_*")
            if p.is_dir() and p.name.split("_", 1)[1].isdigit()
        )
        for _, path in done[: max(0, len(done) - self.keep_checkpoints)]:
            shutil.rmtree(path, ignore_errors=True)

    def load_checkpoint(self, path: Path) -> Path:
        """Restore the state written by :meth:`save_checkpoint`.

        Args:
            path: A checkpoint folder (``.../epoch_<k>``), its ``state.pt``, or a folder of
                ``epoch_<k>`` checkpoints: then the newest one that can be read is used, and each
                newer one that cannot (deleted, truncated, not a checkpoint) is named in a warning.

        Returns:
            The checkpoint file that was restored.

        Raises:
            CheckpointError: Missing or unreadable file (none readable in a folder of
                checkpoints), another run's checkpoint, or tensors that do not fit.
        """
        path = Path(path)
        candidates = checkpoint_files(path) if path.is_dir() and not (path / CHECKPOINT_FILE).exists() else []
        if not candidates:
            file = path / CHECKPOINT_FILE if path.is_dir() else path
            self._apply_state(self._read_state(file), file)
            return file
        skipped: list[str] = []
        for file in candidates:
            try:
                state = self._read_state(file)
            except CheckpointError as error:
                logger.warning("skipping checkpoint %s", error)
                skipped.append(str(error))
                continue
            self._apply_state(state, file)
            return file
        raise CheckpointError(f"{path}: no readable checkpoint ({'; '.join(skipped)})")

    def _read_state(self, file: Path) -> dict[str, Any]:
        """Read and check one checkpoint file (tensors and plain data only)."""
        if not file.is_file():
            raise CheckpointError(f"{file}: no checkpoint there")
        try:
            # weights_only: tensors and plain data only. A file that would build any other object
            # (code carried in a pickle) is refused here, before anything in it runs.
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same error to the user
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"{file}: cannot read checkpoint (only tensors and plain data are accepted; {reason[:200]})"
            ) from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{file}: not a prometar checkpoint (holds a {type(state).__name__})")
        if state.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{file}: checkpoint version {state.get('version')!r}, expected {CHECKPOINT_VERSION}"
            )
        if self.fingerprint is not None and state.get("fingerprint") != self.fingerprint:
            raise CheckpointError(
                f"{file}: written by another run configuration "
                f"({state.get('fingerprint')} != {self.fingerprint})"
            )
        if not isinstance(state.get("epoch"), int) or not 0 <= state["epoch"] <= self.epochs:
            raise CheckpointError(
                f"{file}: epoch {state.get('epoch')!r} is not within this run's {self.epochs} epochs"
            )
        return state

    def _apply_state(self, state: Mapping[str, Any], file: Path) -> None:
        try:
            for name, module in self.modules.items():
                if name not in state["modules"]:
                    raise CheckpointError(f"{file}: no tensors for {name!r}")
                _load_trainable_state(module, state["modules"][name], f"{file}: {name}")
            self.prompt_optimizer.load_state_dict(state["prompt_optimizer"])
            if self.gate_optimizer is not None:
                if state["gate_optimizer"] is None:
                    raise CheckpointError(f"{file}: no gate optimiser state")
                self.gate_optimizer.load_state_dict(state["gate_optimizer"])
            _set_rng_state(state["rng"], self._generators())
            history = list(state["history"])
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
            raise CheckpointError(
                f"{file}: malformed checkpoint ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        self.epoch = int(state["epoch"])
        self.history = history
        logger.info("resumed from %s after epoch %d", file, self.epoch)


def checkpoint_files(folder: Path) -> list[Path]:
    """The ``epoch_<k>/state.pt`` files under ``folder``, newest epoch first (existing or not)."""
    epochs = [p for p in Path(folder).glob("epoch_*") if p.is_dir() and p.name[len("epoch_") :].isdigit()]
    epochs.sort(key=lambda p: int(p.name[len("epoch_") :]), reverse=True)
    return [p / CHECKPOINT_FILE for p in epochs]
