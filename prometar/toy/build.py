"""The toy build: the toy datasets and the pretrained toy CLIP, built once, checked and cached.

``build_toy`` is the one entry point: it renders the toy world's pretraining set
(``prometar/toy/world.py``), pretrains the toy CLIP (``prometar/toy/clip.py``) for a fixed number
of steps, saves an open_clip-format checkpoint that ``load_clip("toy-clip", "<dir>/toy_clip.pt")``
loads, writes the toy downstream datasets (``prometar/toy/datasets.py``) under ``<dir>/data/`` in
the real on-disk layouts, and measures zero-shot accuracy (``prometar/toy/zeroshot.py``):

* 64-way on the 16 colour × shape combinations held out of pretraining (compositional transfer),
  on the seen ones, and chance;
* on every toy dataset, base and new halves, next to the colour-only baseline.

Reproducible: nothing depends on the clock or the machine's load. The schedule is a fixed number
of steps, pretraining runs on a fixed number of torch threads with deterministic algorithms, and
the same settings on the same machine give a bit-identical checkpoint (``checkpoint_sha256`` in
the manifest). Across CPU types (AVX2 / AVX-512 kernels) the bits, and the figures by a little,
differ. A time limit, when given, only aborts the build.

Checked and cached: a build whose held-out accuracy is under ``min_heldout_acc`` fails with
``ToyQualityError``. A build is written in a scratch folder beside ``<dir>`` and renamed into
place only when complete and above the floor, with ``manifest.json`` (the cache key — a hash of
every setting and code version that changes the checkpoint — and the figures); a failed or
interrupted build leaves nothing that is reused, and a finished build of other settings stays
until a new one replaces it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import PIL
import torch

from prometar.backbone import load_clip, load_model_config
from prometar.toy.clip import MODEL_NAME, Precision, create_toy_clip, pretrain, resolve_precision
from prometar.toy.datasets import TOY_DATASETS, write_toy_datasets
from prometar.toy.world import WORLD_VERSION, render_set
from prometar.toy.zeroshot import evaluate_combinations, evaluate_toy_datasets

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "toy_clip.pt"
MANIFEST_NAME = "manifest.json"
DATA_DIR_NAME = "data"
DEFAULT_OUTPUT = Path("prometar_runs") / "toy"
TRAINER_VERSION = 2  # bump when pretraining or evaluation changes
#: The quality floor: zero-shot accuracy on the held-out combinations (64-way, chance 1/64) below
#: which a build fails. The default build reaches about 50% (docs/demo.md); a build that learnt
#: too little (e.g. a few dozen steps) stays near 20%.
HELDOUT_FLOOR = 0.35


class ToyBuildError(RuntimeError):
    """A toy build failed (time limit, dataset writer, quality floor); nothing was cached."""


class ToyQualityError(ToyBuildError):
    """A toy build's held-out zero-shot accuracy is under the quality floor."""


@dataclass(frozen=True)
class ToySettings:
    """Every setting that changes a toy build's checkpoint or figures (hashed into the cache key).

    Attributes:
        seed: World and training seed.
        steps: Pretraining steps (fixed; the cosine schedule runs over them).
        n_pretrain: Number of pre-rendered pretraining images.
        batch_size: Contrastive batch size.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay (not on embeddings, gains, biases or the logit scale).
        warmup_steps: Linear warm-up steps before the cosine decay.
        precision: ``fp32``, or ``bf16`` autocast where the device has native bf16 (elsewhere the
            build runs, and is keyed, as fp32; the step count is the same).
        threads: Torch threads for pretraining and evaluation (results depend on it, bit for bit).
        train_per_class: Toy datasets: training images per class.
        val_per_class: Toy datasets: validation images per class.
        test_per_class: Toy datasets: test images per class.
        eval_per_combination: Images per combination in the held-out / seen evaluation.
        datasets: Toy dataset keys to write (default: all 11).
    """

    seed: int = 0
    steps: int = 1000
    n_pretrain: int = 40_000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    precision: Precision = "fp32"
    threads: int = 1
    train_per_class: int = 24
    val_per_class: int = 8
    test_per_class: int = 100
    eval_per_combination: int = 20
    datasets: tuple[str, ...] = tuple(TOY_DATASETS)

    def __post_init__(self) -> None:
        checks = {
            "steps": self.steps >= 1,
            "n_pretrain": self.n_pretrain >= self.batch_size,
            "batch_size": self.batch_size >= 2,
            "warmup_steps": 0 <= self.warmup_steps <= self.steps,
            "precision": self.precision in ("fp32", "bf16"),
            "threads": self.threads >= 1,
            "train_per_class": self.train_per_class >= 1,
            "test_per_class": self.test_per_class >= 1,
            "eval_per_combination": self.eval_per_combination >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"toy settings: invalid {key}={getattr(self, key)!r}")
        unknown = [k for k in self.datasets if k not in TOY_DATASETS]
        if unknown:
            raise ValueError(f"toy settings: unknown datasets {unknown}; valid: {list(TOY_DATASETS)}")

    def key(self, device: torch.device | str = "cpu") -> dict[str, Any]:
        """What the cache key hashes: these settings, the model config, code and library versions.

        Args:
            device: The build device (its type, and on a CPU the kernel family torch uses, change
                the checkpoint's bits).
        """
        device = torch.device(device)
        return {
            "settings": dataclasses.asdict(self),
            "model_config": load_model_config(MODEL_NAME),
            "world": WORLD_VERSION,
            "trainer": TRAINER_VERSION,
            "device": device.type,
            "cpu_capability": torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else None,
            "versions": {
                "torch": torch.__version__,
                "open_clip": open_clip.__version__,
                "numpy": np.__version__,
                "pillow": PIL.__version__,
            },
        }

    def digest(self, device: torch.device | str = "cpu") -> str:
        """Short hash of ``key(device)``: the cache key of a build with these settings."""
        return hashlib.sha256(json.dumps(self.key(device), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ToyBuild:
    """A finished toy build.

    Attributes:
        output_dir: The build folder.
        data_root: Data root holding the toy datasets (``<output_dir>/data``).
        checkpoint: The toy CLIP checkpoint (``<output_dir>/toy_clip.pt``).
        model_name: Backbone config name to pass to ``load_clip`` (``toy-clip``).
        reused: True if an existing finished build was returned without rebuilding.
        results: The figures recorded in the manifest (steps, accuracies, per-dataset zero-shot,
            ``checkpoint_sha256``).
    """

    output_dir: Path
    data_root: Path
    checkpoint: Path
    model_name: str
    reused: bool
    results: dict[str, Any]


def read_manifest(output_dir: Path | str) -> dict[str, Any] | None:
    """The manifest of a finished build in ``output_dir``, or None if there is none (or unreadable)."""
    path = Path(output_dir) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's bytes (hex)."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _is_finished(output_dir: Path, digest: str) -> dict[str, Any] | None:
    manifest = read_manifest(output_dir)
    if manifest is None or manifest.get("settings_hash") != digest:
        return None
    checkpoint = output_dir / CHECKPOINT_NAME
    if not checkpoint.is_file() or not (output_dir / DATA_DIR_NAME).is_dir():
        return None
    if file_sha256(checkpoint) != manifest.get("results", {}).get("checkpoint_sha256"):
        return None
    return manifest


def _scratch(output_dir: Path, kind: str) -> Path:
    """A scratch folder beside ``output_dir`` (``.<name>.<kind>-<pid>``), where builds are written."""
    return output_dir.parent / f".{output_dir.name}.{kind}-{os.getpid()}"


@contextlib.contextmanager
def _exclusive_lock(output_dir: Path) -> Iterator[None]:
    """One builder per folder at a time (a second one waits, then reuses the finished build)."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(output_dir.parent / f".{output_dir.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _reproducible_torch(threads: int) -> Iterator[None]:
    """Fixed torch threads and deterministic algorithms while building; the caller's restored after."""
    before = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def build_toy(
    output_dir: Path | str = DEFAULT_OUTPUT,
    *,
    seed: int = 0,
    force: bool = False,
    device: torch.device | str = "cpu",
    min_heldout_acc: float = HELDOUT_FLOOR,
    time_limit_s: float | None = None,
    writer_process: bool = True,
    **overrides: Any,
) -> ToyBuild:
    """Build (or reuse) the toy world, the toy datasets and the pretrained toy CLIP.

    Args:
        output_dir: Build folder; receives ``toy_clip.pt``, ``data/`` and ``manifest.json``.
        seed: World and training seed.
        force: Rebuild even if a finished build with the same settings exists.
        device: Training and evaluation device.
        min_heldout_acc: Quality floor on held-out zero-shot accuracy (default ``HELDOUT_FLOOR``);
            a build under it fails and is not cached, a cached build under it is not returned.
        time_limit_s: Optional guard: a build still running after this many seconds fails
            (``ToyBuildError``); it never shortens the schedule.
        writer_process: Write the toy datasets in a second process (a fresh interpreter) while
            the model trains (same files either way; False keeps everything in this process).
        **overrides: Other ``ToySettings`` fields (e.g. ``steps``, ``n_pretrain``, ``test_per_class``).

    Returns:
        The finished build, with ``reused`` telling whether it was taken from the cache.

    Raises:
        ValueError: Invalid settings.
        ToyQualityError: The build (or the cached one) is under the quality floor.
        ToyBuildError: The time limit passed, or writing the toy datasets failed.
    """
    if not 0.0 <= min_heldout_acc <= 1.0:
        raise ValueError(f"toy build: min_heldout_acc must be in [0, 1], got {min_heldout_acc!r}")
    if time_limit_s is not None and time_limit_s <= 0:
        raise ValueError(f"toy build: time_limit_s must be positive, got {time_limit_s!r}")
    device = torch.device(device)
    settings = ToySettings(seed=seed, **overrides)
    settings = dataclasses.replace(settings, precision=resolve_precision(settings.precision, device))
    output_dir = Path(output_dir).resolve()
    digest = settings.digest(device)
    with _exclusive_lock(output_dir):
        for leftover in [
            *output_dir.parent.glob(f".{output_dir.name}.partial-*"),
            *output_dir.parent.glob(f".{output_dir.name}.old-*"),
        ]:
            shutil.rmtree(leftover, ignore_errors=True)  # from builders that died (we hold the lock)
        manifest = None if force else _is_finished(output_dir, digest)
        if manifest is not None:
            logger.info("toy build in %s is up to date (settings %s)", output_dir, digest)
            _check_floor(manifest["results"], min_heldout_acc, f"the cached build in {output_dir}")
            return _as_build(output_dir, manifest, reused=True)
        partial = _scratch(output_dir, "partial")
        partial.mkdir()
        deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
        try:
            with _reproducible_torch(settings.threads):
                manifest = _build(
                    partial, settings, digest, device, writer_process, deadline, min_heldout_acc
                )
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        _install(partial, output_dir)
        return _as_build(output_dir, manifest, reused=False)


def _install(partial: Path, output_dir: Path) -> None:
    """Move a complete build into place, then delete what it replaces."""
    old = None
    if output_dir.exists():
        old = _scratch(output_dir, "old")
        os.replace(output_dir, old)
    os.replace(partial, output_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_floor(results: dict[str, Any], floor: float, what: str) -> None:
    if results["heldout_acc"] < floor:
        raise ToyQualityError(
            f"toy build failed its quality floor: {what} reaches {100 * results['heldout_acc']:.1f}% "
            "zero-shot "
            f"accuracy on the held-out colour x shape combinations, under the floor of {100 * floor:.1f}% "
            f"(chance {100 * results['chance']:.1f}%; seen combinations {100 * results['seen_acc']:.1f}%, "
            f"{results['steps']} steps). Nothing was cached; the settings, not the machine, decide this "
            f"(the build is deterministic): see docs/demo.md for the default build's figures."
        )


def _as_build(output_dir: Path, manifest: dict[str, Any], *, reused: bool) -> ToyBuild:
    return ToyBuild(
        output_dir=output_dir,
        data_root=output_dir / DATA_DIR_NAME,
        checkpoint=output_dir / CHECKPOINT_NAME,
        model_name=MODEL_NAME,
        reused=reused,
        results=manifest["results"],
    )


def _time_limit_error(what: str) -> ToyBuildError:
    return ToyBuildError(
        f"toy build passed its time limit ({what}); nothing was cached. The build is a fixed "
        "number of steps, never cut short: allow more time, or build on a less loaded machine"
    )


def _build(
    folder: Path,
    settings: ToySettings,
    digest: str,
    device: torch.device,
    writer_process: bool,
    deadline: float | None,
    floor: float,
) -> dict[str, Any]:
    """Build from scratch in ``folder``: datasets, pretraining, checkpoint, evaluation, floor, manifest."""
    started = time.perf_counter()
    data_root = folder / DATA_DIR_NAME
    write_args = {
        "data_root": str(data_root),
        "seed": settings.seed,
        "keys": list(settings.datasets),
        "train_per_class": settings.train_per_class,
        "val_per_class": settings.val_per_class,
        "test_per_class": settings.test_per_class,
    }
    # The toy datasets are written by a second process (on another core) while the model trains.
    writer_log = folder / "writer.log"
    writer = _start_writer(write_args, writer_log) if writer_process else None
    try:
        logger.info("toy build in %s: rendering %d pretraining images", folder, settings.n_pretrain)
        pretraining_set = render_set(settings.n_pretrain, seed=settings.seed)
        render_s = time.perf_counter() - started
        model = create_toy_clip(settings.seed)
        try:
            training = pretrain(
                model,
                pretraining_set.images,
                pretraining_set.captions,
                seed=settings.seed,
                steps=settings.steps,
                batch_size=settings.batch_size,
                lr=settings.lr,
                weight_decay=settings.weight_decay,
                warmup_steps=settings.warmup_steps,
                precision=settings.precision,
                device=device,
                deadline=deadline,
            )
        except TimeoutError as err:
            raise _time_limit_error(str(err)) from None
        del pretraining_set
        checkpoint = folder / CHECKPOINT_NAME
        # Saved through a file object: the archive's inner name does not depend on the file name.
        with open(checkpoint, "wb") as handle:
            torch.save(
                {
                    "name": MODEL_NAME,
                    "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                },
                handle,
            )
        if writer is None:
            write_toy_datasets(**write_args)
        else:
            _finish_writer(writer, data_root, writer_log)
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
            writer.wait()

    # Evaluate through the same loader every consumer uses, from the checkpoint on disk.
    backbone = load_clip(MODEL_NAME, str(checkpoint), device=device)
    clip, tokenizer = backbone.model, backbone.tokenizer
    results: dict[str, Any] = {
        "steps": training["steps"],
        "precision": settings.precision,
        "threads": settings.threads,
        "checkpoint_sha256": file_sha256(checkpoint),
        "train_seconds": round(training["seconds"], 1),
        "final_loss": training["final_loss"],
        "render_seconds": round(render_s, 1),
    }
    results.update(
        evaluate_combinations(
            clip,
            tokenizer,
            per_combination=settings.eval_per_combination,
            seed=settings.seed,
            mean=backbone.mean,
            std=backbone.std,
            device=device,
        )
    )
    results["datasets"] = evaluate_toy_datasets(
        clip,
        tokenizer,
        data_root,
        settings.datasets,
        seed=settings.seed,
        mean=backbone.mean,
        std=backbone.std,
    )
    results["build_seconds"] = round(time.perf_counter() - started, 1)
    if deadline is not None and time.monotonic() > deadline:
        raise _time_limit_error("while evaluating")
    logger.info(
        "toy build done in %.0fs: held-out %.3f, seen %.3f, chance %.3f; checkpoint sha256 %s",
        results["build_seconds"],
        results["heldout_acc"],
        results["seen_acc"],
        results["chance"],
        results["checkpoint_sha256"],
    )
    _check_floor(results, floor, "the new build")

    manifest = {
        "settings_hash": digest,
        "key": settings.key(device),
        "settings": dataclasses.asdict(settings),
        "model_name": MODEL_NAME,
        "checkpoint": CHECKPOINT_NAME,
        "data_root": DATA_DIR_NAME,
        "min_heldout_acc": floor,
        "results": results,
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return manifest


def _start_writer(write_args: dict[str, Any], log_path: Path) -> subprocess.Popen:
    """Run ``write_toy_datasets(**write_args)`` in a fresh interpreter, stderr to ``log_path``.

    A plain subprocess (not multiprocessing) so that callers' scripts are never re-imported and no
    torch threads are forked.
    """
    code = (
        "import json, sys; from prometar.toy.datasets import write_toy_datasets; "
        "write_toy_datasets(**json.loads(sys.argv[1]))"
    )
    package_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(write_args)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _finish_writer(writer: subprocess.Popen, data_root: Path, log_path: Path) -> None:
    writer.wait()
    if writer.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-15:])
        raise ToyBuildError(
            f"writing the toy datasets under {data_root} failed (exit {writer.returncode}):\n{tail}"
        )


def format_report(build: ToyBuild) -> str:
    """A plain-text report of a toy build: pretraining figures and per-dataset zero-shot accuracy.

    Args:
        build: A finished build (``build_toy``).

    Returns:
        Lines of text, ending with a newline.
    """
    r = build.results
    how = "reused" if build.reused else "built in {:.0f}s".format(r["build_seconds"])
    lines = [
        f"toy build: {build.output_dir} ({how})",
        f"checkpoint: {build.checkpoint}  (load_clip({build.model_name!r}, ...))",
        f"data root:  {build.data_root}",
        f"checkpoint sha256: {r['checkpoint_sha256']}",
        f"pretraining: {r['steps']} steps ({r['precision']}, {r['threads']} thread(s)) in "
        f"{r['train_seconds']:.0f}s, "
        f"final loss {r['final_loss']:.3f}",
        f"zero-shot, 64 colour x shape classes: held-out combinations {100 * r['heldout_acc']:.1f}% "
        f"({r['heldout_acc'] / r['chance']:.0f}x chance), seen {100 * r['seen_acc']:.1f}%, "
        f"chance {100 * r['chance']:.1f}%",
        "",
        f"{'dataset':<15} {'style':<14} {'shift':<10} {'base':>6} {'new':>6} {'colour-only':>12} "
        f"{'chance':>7}",
    ]
    for key, row in r["datasets"].items():
        lines.append(
            f"{key:<15} {row['style']:<14} {'systematic' if row['systematic'] else 'random':<10} "
            f"{100 * row['base']:6.1f} {100 * row['new']:6.1f} {100 * row['colour_only_base']:12.1f} "
            f"{100 * row['chance_base']:7.1f}"
        )
    return "\n".join(lines) + "\n"
