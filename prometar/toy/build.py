"""The toy build: the toy datasets and the pretrained toy CLIP, built once and cached.

``build_toy`` is the one entry point: it renders the toy world's pretraining set
(``prometar/toy/world.py``), pretrains the toy CLIP (``prometar/toy/clip.py``) under a wall-clock
budget, saves an open_clip-format checkpoint that ``load_clip("toy-clip", "<dir>/toy_clip.pt")``
loads, writes the toy downstream datasets (``prometar/toy/datasets.py``) under ``<dir>/data/`` in
the real on-disk layouts, and measures zero-shot accuracy (``prometar/toy/zeroshot.py``):

* 64-way on the 16 colour × shape combinations held out of pretraining (compositional transfer),
  on the seen ones, and chance;
* on every toy dataset, base and new halves, next to the colour-only baseline.

A build is cached: ``manifest.json`` (written last, atomically) records a hash of the build
settings and the figures; a folder without a matching manifest — e.g. a build that was
interrupted — is rebuilt from scratch. Everything is deterministic from the seed except the number
of optimisation steps a wall-clock budget allows; pass ``max_steps`` for a bit-reproducible build.
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

import torch

from prometar.backbone import load_clip
from prometar.toy.clip import MODEL_NAME, create_toy_clip, pretrain
from prometar.toy.datasets import TOY_DATASETS, write_toy_datasets
from prometar.toy.world import WORLD_VERSION, render_set
from prometar.toy.zeroshot import evaluate_combinations, evaluate_toy_datasets

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "toy_clip.pt"
MANIFEST_NAME = "manifest.json"
DATA_DIR_NAME = "data"
DEFAULT_OUTPUT = Path("prometar_runs") / "toy"


@dataclass(frozen=True)
class ToySettings:
    """Everything that changes a toy build's result (hashed into the manifest).

    Attributes:
        seed: World and training seed.
        budget_s: Wall-clock budget in seconds from the start of the build to the end of
            pretraining (rendering the pretraining set counts against it).
        max_steps: Optional step budget; the cosine schedule then follows steps (bit-reproducible).
        n_pretrain: Number of pre-rendered pretraining images.
        batch_size: Contrastive batch size.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay (not on embeddings, gains, biases or the logit scale).
        warmup_steps: Linear warm-up steps before the cosine decay.
        bf16: Use bf16 autocast on CPU (faster on most CPUs; parameters stay fp32).
        train_per_class: Toy datasets: training images per class.
        val_per_class: Toy datasets: validation images per class.
        test_per_class: Toy datasets: test images per class.
        eval_per_combination: Images per combination in the held-out / seen evaluation.
        datasets: Toy dataset keys to write (default: all 11).
    """

    seed: int = 0
    budget_s: float = 240.0
    max_steps: int | None = None
    n_pretrain: int = 40_000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    bf16: bool = True
    train_per_class: int = 24
    val_per_class: int = 8
    test_per_class: int = 100
    eval_per_combination: int = 20
    datasets: tuple[str, ...] = tuple(TOY_DATASETS)

    def __post_init__(self) -> None:
        checks = {
            "budget_s": self.budget_s > 0,
            "max_steps": self.max_steps is None or self.max_steps > 0,
            "n_pretrain": self.n_pretrain >= self.batch_size,
            "batch_size": self.batch_size >= 2,
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

    def digest(self) -> str:
        """Short hash of the settings and the world/training code version."""
        payload = {"settings": dataclasses.asdict(self), "world": WORLD_VERSION, "trainer": TRAINER_VERSION}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


TRAINER_VERSION = 1  # bump when pretraining or evaluation changes


@dataclass(frozen=True)
class ToyBuild:
    """A finished toy build.

    Attributes:
        output_dir: The build folder.
        data_root: Data root holding the toy datasets (``<output_dir>/data``).
        checkpoint: The toy CLIP checkpoint (``<output_dir>/toy_clip.pt``).
        model_name: Backbone config name to pass to ``load_clip`` (``toy-clip``).
        reused: True if an existing finished build was returned without rebuilding.
        results: The figures recorded in the manifest (steps, accuracies, per-dataset zero-shot).
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


def _is_finished(output_dir: Path, digest: str) -> dict[str, Any] | None:
    manifest = read_manifest(output_dir)
    if manifest is None or manifest.get("settings_hash") != digest:
        return None
    if not (output_dir / CHECKPOINT_NAME).is_file() or not (output_dir / DATA_DIR_NAME).is_dir():
        return None
    return manifest


@contextlib.contextmanager
def _exclusive_lock(output_dir: Path) -> Iterator[None]:
    """One builder per folder at a time (a second one waits, then reuses the finished build)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_toy(output_dir: Path | str = DEFAULT_OUTPUT, *, seed: int = 0, budget_s: float = 240.0,
              max_steps: int | None = None, force: bool = False, device: torch.device | str = "cpu",
              writer_process: bool = True, **overrides: Any) -> ToyBuild:
    """Build (or reuse) the toy world, the toy datasets and the pretrained toy CLIP.

    Args:
        output_dir: Build folder; receives ``toy_clip.pt``, ``data/`` and ``manifest.json``.
        seed: World and training seed.
        budget_s: Wall-clock budget in seconds from the start of the build to the end of
            pretraining; evaluation follows (well under a minute), so the default build takes
            under 5 minutes on 2 CPU cores.
        max_steps: Optional step budget for a bit-reproducible build.
        force: Rebuild even if a finished build with the same settings exists.
        device: Training and evaluation device.
        writer_process: Write the toy datasets in a second process (a fresh interpreter) while
            the model trains (same files either way; False keeps everything in this process).
        **overrides: Other ``ToySettings`` fields (e.g. ``n_pretrain``, ``test_per_class``).

    Returns:
        The finished build, with ``reused`` telling whether it was taken from the cache.
    """
    settings = ToySettings(seed=seed, budget_s=budget_s, max_steps=max_steps, **overrides)
    output_dir = Path(output_dir).resolve()
    digest = settings.digest()
    with _exclusive_lock(output_dir):
        manifest = None if force else _is_finished(output_dir, digest)
        if manifest is not None:
            logger.info("toy build in %s is up to date (settings %s)", output_dir, digest)
            return _as_build(output_dir, manifest, reused=True)
        manifest = _build(output_dir, settings, digest, torch.device(device), writer_process)
        return _as_build(output_dir, manifest, reused=False)


def _as_build(output_dir: Path, manifest: dict[str, Any], *, reused: bool) -> ToyBuild:
    return ToyBuild(output_dir=output_dir, data_root=output_dir / DATA_DIR_NAME,
                    checkpoint=output_dir / CHECKPOINT_NAME, model_name=MODEL_NAME, reused=reused,
                    results=manifest["results"])


def _build(output_dir: Path, settings: ToySettings, digest: str, device: torch.device,
           writer_process: bool) -> dict[str, Any]:
    """Build from scratch: clear what an earlier (maybe half-written) build left, write, then the manifest."""
    started = time.perf_counter()
    (output_dir / MANIFEST_NAME).unlink(missing_ok=True)  # from here on the folder is "not done"
    for stale in (output_dir / DATA_DIR_NAME, output_dir / CHECKPOINT_NAME):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()

    data_root = output_dir / DATA_DIR_NAME
    write_args = {"data_root": str(data_root), "seed": settings.seed, "keys": list(settings.datasets),
                  "train_per_class": settings.train_per_class, "val_per_class": settings.val_per_class,
                  "test_per_class": settings.test_per_class}
    # The toy datasets are written by a second process (on another core) while the model trains.
    writer_log = output_dir / "writer.log"
    writer = _start_writer(write_args, writer_log) if writer_process else None
    logger.info("toy build in %s: rendering %d pretraining images", output_dir, settings.n_pretrain)
    pretraining_set = render_set(settings.n_pretrain, seed=settings.seed)
    render_s = time.perf_counter() - started
    try:
        model = create_toy_clip(settings.seed)
        training = pretrain(model, pretraining_set.images, pretraining_set.captions, seed=settings.seed,
                            budget_s=max(settings.budget_s - render_s, 1.0), max_steps=settings.max_steps,
                            batch_size=settings.batch_size, lr=settings.lr, weight_decay=settings.weight_decay,
                            warmup_steps=settings.warmup_steps, bf16=settings.bf16, device=device)
    except BaseException:
        if writer is not None:
            writer.kill()
            writer.wait()
        raise
    del pretraining_set
    checkpoint = output_dir / CHECKPOINT_NAME
    tmp = checkpoint.with_name(checkpoint.name + f".tmp{os.getpid()}")
    torch.save({"name": MODEL_NAME, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, tmp)
    os.replace(tmp, checkpoint)
    if writer is None:
        write_toy_datasets(**write_args)
    else:
        _finish_writer(writer, data_root, writer_log)

    # Evaluate through the same loader every consumer uses, from the checkpoint on disk.
    backbone = load_clip(MODEL_NAME, str(checkpoint), device=device)
    clip, tokenizer = backbone.model, backbone.tokenizer
    results: dict[str, Any] = {"steps": training["steps"], "train_seconds": round(training["seconds"], 1),
                               "final_loss": training["final_loss"], "render_seconds": round(render_s, 1)}
    results.update(evaluate_combinations(clip, tokenizer, per_combination=settings.eval_per_combination,
                                         seed=settings.seed, mean=backbone.mean, std=backbone.std, device=device))
    results["datasets"] = evaluate_toy_datasets(clip, tokenizer, data_root, settings.datasets, seed=settings.seed,
                                                mean=backbone.mean, std=backbone.std)
    results["build_seconds"] = round(time.perf_counter() - started, 1)

    manifest = {"settings_hash": digest, "settings": dataclasses.asdict(settings), "model_name": MODEL_NAME,
                "checkpoint": CHECKPOINT_NAME, "data_root": DATA_DIR_NAME, "results": results}
    tmp_manifest = output_dir / f"{MANIFEST_NAME}.tmp{os.getpid()}"
    tmp_manifest.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp_manifest, output_dir / MANIFEST_NAME)
    logger.info("toy build done in %.0fs: held-out %.3f, seen %.3f, chance %.3f", results["build_seconds"],
                results["heldout_acc"], results["seen_acc"], results["chance"])
    return manifest


def _start_writer(write_args: dict[str, Any], log_path: Path) -> subprocess.Popen:
    """Run ``write_toy_datasets(**write_args)`` in a fresh interpreter, stderr to ``log_path``.

    A plain subprocess (not multiprocessing) so that callers' scripts are never re-imported and no
    torch threads are forked.
    """
    code = ("import json, sys; from prometar.toy.datasets import write_toy_datasets; "
            "write_toy_datasets(**json.loads(sys.argv[1]))")
    package_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-c", code, json.dumps(write_args)], env=env,
                                stdout=subprocess.DEVNULL, stderr=log)


def _finish_writer(writer: subprocess.Popen, data_root: Path, log_path: Path) -> None:
    writer.wait()
    if writer.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-15:])
        raise RuntimeError(f"writing the toy datasets under {data_root} failed (exit {writer.returncode}):\n{tail}")


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
        f"pretraining: {r['steps']} steps in {r['train_seconds']:.0f}s, final loss {r['final_loss']:.3f}",
        f"zero-shot, 64 colour x shape classes: held-out combinations {100 * r['heldout_acc']:.1f}% "
        f"({r['heldout_acc'] / r['chance']:.0f}x chance), seen {100 * r['seen_acc']:.1f}%, "
        f"chance {100 * r['chance']:.1f}%",
        "",
        f"{'dataset':<15} {'style':<14} {'shift':<10} {'base':>6} {'new':>6} {'colour-only':>12} {'chance':>7}",
    ]
    for key, row in r["datasets"].items():
        lines.append(
            f"{key:<15} {row['style']:<14} {'systematic' if row['systematic'] else 'random':<10} "
            f"{100 * row['base']:6.1f} {100 * row['new']:6.1f} {100 * row['colour_only_base']:12.1f} "
            f"{100 * row['chance_base']:7.1f}"
        )
    return "\n".join(lines) + "\n"
