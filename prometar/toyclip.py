"""The toy CLIP: a tiny open_clip ``CLIP`` pretrained contrastively on the toy world.

``build_toy`` is the one entry point: it renders the toy world's pretraining set
(``prometar/data/toyworld.py``), pretrains the ``toy-clip`` architecture
(``prometar/model_configs/toy-clip.json``) under a wall-clock budget, saves an open_clip-format
checkpoint that ``load_clip("toy-clip", "<dir>/toy_clip.pt")`` loads, writes the toy downstream
datasets under ``<dir>/data/`` in the real on-disk layouts, and measures zero-shot accuracy:

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
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel

from prometar.backbone import load_clip, load_model_config
from prometar.data import toyworld
from prometar.data.catalog import get_dataset
from prometar.data.protocols import base_new_split
from prometar.data.readers import read_dataset

logger = logging.getLogger(__name__)

MODEL_NAME = "toy-clip"
CHECKPOINT_NAME = "toy_clip.pt"
MANIFEST_NAME = "manifest.json"
DATA_DIR_NAME = "data"
DEFAULT_OUTPUT = Path("prometar_runs") / "toy"
ZERO_SHOT_TEMPLATE = "a photo of a {}."  # the pretraining-distribution evaluation prompt


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
    datasets: tuple[str, ...] = tuple(toyworld.TOY_DATASETS)

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
        unknown = [k for k in self.datasets if k not in toyworld.TOY_DATASETS]
        if unknown:
            raise ValueError(f"toy settings: unknown datasets {unknown}; valid: {list(toyworld.TOY_DATASETS)}")

    def digest(self) -> str:
        """Short hash of the settings and the world/training code version."""
        payload = {"settings": dataclasses.asdict(self), "world": toyworld.WORLD_VERSION, "trainer": TRAINER_VERSION}
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


# ---------------------------------------------------------------------------------------------
# Model, tokens, images
# ---------------------------------------------------------------------------------------------


def create_toy_clip(seed: int) -> open_clip.CLIP:
    """A freshly initialised ``toy-clip`` model (fp32, CPU), deterministic from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.CLIP(**load_model_config(MODEL_NAME))


def context_length() -> int:
    """The toy CLIP's text context length (from its model config)."""
    return int(load_model_config(MODEL_NAME)["text_cfg"]["context_length"])


def token_count(text: str) -> int:
    """Tokens the standard tokenizer uses for ``text`` including start and end tokens (no truncation)."""
    return len(_encoder().encode(text)) + 2


@functools.cache
def _encoder() -> open_clip.SimpleTokenizer:
    return open_clip.SimpleTokenizer()


def to_tensor(images: np.ndarray, mean: Sequence[float], std: Sequence[float],
              device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [N, H, W, 3] -> normalised float32 [N, 3, H, W] on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # [N, 3, H, W]
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _tokenize_unique(captions: Sequence[str], tokenizer: Callable[[list[str]], torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize each distinct caption once: (tokens [U, L], index [N] into them)."""
    unique = sorted(set(captions))
    lookup = {c: i for i, c in enumerate(unique)}
    index = torch.tensor([lookup[c] for c in captions], dtype=torch.long)
    return tokenizer(unique), index


# ---------------------------------------------------------------------------------------------
# Pretraining
# ---------------------------------------------------------------------------------------------


def _param_groups(model: open_clip.CLIP, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices only (not embeddings, gains, biases, logit scale)."""
    no_decay_ids = {id(model.token_embedding.weight), id(model.positional_embedding),
                    id(model.visual.positional_embedding), id(model.visual.class_embedding)}
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim >= 2 and id(p) not in no_decay_ids else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_factor(step: int, progress: float, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay over ``progress`` in [0, 1]."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def pretrain(model: open_clip.CLIP, images: np.ndarray, captions: Sequence[str], *, seed: int,
             budget_s: float, max_steps: int | None = None, batch_size: int = 128, lr: float = 2e-3,
             weight_decay: float = 0.1, warmup_steps: int = 50, bf16: bool = True,
             device: torch.device | str = "cpu") -> dict[str, float]:
    """Contrastive (CLIP) pretraining under a wall-clock budget.

    The cosine schedule follows the fraction of the budget spent (or of ``max_steps`` when
    given), so training ends on time on a loaded machine; batch order and initialisation are
    deterministic from ``seed``.

    Args:
        model: The model to train in place (fp32 parameters).
        images: uint8 [N, H, W, 3] pretraining images.
        captions: N captions.
        seed: Seed of the batch order.
        budget_s: Wall-clock budget of the loop in seconds.
        max_steps: Optional step budget (then the schedule follows steps).
        batch_size: Contrastive batch size.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay on weight matrices.
        warmup_steps: Linear warm-up steps.
        bf16: bf16 autocast (parameters stay fp32).
        device: Training device.

    Returns:
        ``{"steps", "seconds", "final_loss"}``.
    """
    device = torch.device(device)
    model.to(device).train()
    tokens, caption_index = _tokenize_unique(list(captions), open_clip.SimpleTokenizer(context_length=model.context_length))
    with _compact_token_embedding(model, tokens) as compact_tokens:
        result = _contrastive_loop(model, images, compact_tokens.to(device), caption_index, seed=seed,
                                   budget_s=budget_s, max_steps=max_steps, batch_size=batch_size, lr=lr,
                                   weight_decay=weight_decay, warmup_steps=warmup_steps, bf16=bf16, device=device)
    model.eval()
    return result


@contextlib.contextmanager
def _compact_token_embedding(model: open_clip.CLIP, tokens: torch.Tensor) -> Iterator[torch.Tensor]:
    """Train only the token-embedding rows the captions use; yields ``tokens`` renumbered for them.

    The 49,408-row table is 81% of the toy CLIP's parameters, but captions use a few dozen tokens.
    Rows never seen get zero gradients and no weight decay, so AdamW would leave them unchanged
    anyway: swapping in a compact table and writing its rows back afterwards is the same training,
    without updating 6 M idle numbers per step. Renumbering keeps the order of token ids, so the
    end-of-text token stays the largest id in every sequence (open_clip pools at the argmax).
    """
    full = model.token_embedding
    used = torch.unique(tokens)  # sorted token ids present  # [U]
    renumber = torch.zeros(full.num_embeddings, dtype=torch.long)
    renumber[used] = torch.arange(len(used))
    compact = torch.nn.Embedding.from_pretrained(full.weight.detach()[used].clone(), freeze=False)  # [U, width]
    model.token_embedding = compact.to(full.weight.device)
    try:
        yield renumber[tokens]
    finally:
        with torch.no_grad():
            full.weight[used.to(full.weight.device)] = model.token_embedding.weight.to(full.weight.dtype)
        model.token_embedding = full


def _contrastive_loop(model: open_clip.CLIP, images: np.ndarray, tokens: torch.Tensor, caption_index: torch.Tensor,
                      *, seed: int, budget_s: float, max_steps: int | None, batch_size: int, lr: float,
                      weight_decay: float, warmup_steps: int, bf16: bool, device: torch.device) -> dict[str, float]:
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6,
                                  fused=True)
    generator = torch.Generator().manual_seed(seed)
    n = len(images)
    order = torch.randperm(n, generator=generator)
    cursor, step, loss_value = 0, 0, float("nan")
    labels = torch.arange(batch_size, device=device)
    # CPU flash attention's bf16 backward is several times slower than the plain math path.
    attention = sdpa_kernel(SDPBackend.MATH) if bf16 and device.type == "cpu" else contextlib.nullcontext()
    with attention:
        start = time.perf_counter()
        while True:
            elapsed = time.perf_counter() - start
            if (max_steps is not None and step >= max_steps) or (max_steps is None and elapsed >= budget_s):
                break
            if max_steps is not None and elapsed >= budget_s:
                logger.warning("toy CLIP pretraining: wall-clock budget %.0fs reached at step %d of %d", budget_s, step, max_steps)
                break
            progress = step / max_steps if max_steps is not None else elapsed / budget_s
            factor = _lr_factor(step, progress, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
            if cursor + batch_size > n:
                order, cursor = torch.randperm(n, generator=generator), 0
            batch = order[cursor:cursor + batch_size]
            cursor += batch_size
            x = to_tensor(images[batch.numpy()], mean, std, device)  # [B, 3, H, W]
            t = tokens[caption_index[batch].to(device)]  # [B, L]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                image_features = F.normalize(model.encode_image(x).float(), dim=-1)  # [B, E]
                text_features = F.normalize(model.encode_text(t).float(), dim=-1)  # [B, E]
                logits = model.logit_scale.exp() * image_features @ text_features.T  # [B, B]
                loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0.0, math.log(100.0))
            loss_value = float(loss.detach())
            step += 1
            if step % 100 == 0:
                logger.info("toy CLIP step %d (%.0fs): loss %.3f", step, time.perf_counter() - start, loss_value)
    return {"steps": step, "seconds": time.perf_counter() - start, "final_loss": loss_value}


# ---------------------------------------------------------------------------------------------
# Zero-shot evaluation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def zero_shot_accuracy(model: open_clip.CLIP, tokenizer: Callable[[list[str]], torch.Tensor],
                       images: torch.Tensor, labels: torch.Tensor, prompts: Sequence[str],
                       batch_size: int = 512) -> float:
    """Top-1 accuracy of classifying ``images`` among ``prompts`` (one prompt per class).

    Args:
        model: A CLIP model.
        tokenizer: Its tokenizer.
        images: Normalised float [N, 3, H, W] on the model's device.
        labels: int64 [N], indices into ``prompts``.
        prompts: One text per class.
        batch_size: Images per forward pass.

    Returns:
        Accuracy in [0, 1].
    """
    device = images.device
    text = F.normalize(model.encode_text(tokenizer(list(prompts)).to(device)).float(), dim=-1)  # [C, E]
    correct = 0
    for i in range(0, len(images), batch_size):
        feats = F.normalize(model.encode_image(images[i:i + batch_size]).float(), dim=-1)  # [b, E]
        correct += int((feats @ text.T).argmax(dim=-1).eq(labels[i:i + batch_size].to(device)).sum())
    return correct / max(len(images), 1)


def _load_images(paths: Sequence[Path]) -> np.ndarray:
    """uint8 [N, H, W, 3] from image files."""
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def evaluate_toy_datasets(model: open_clip.CLIP, tokenizer: Callable[[list[str]], torch.Tensor],
                          data_root: Path | str, keys: Sequence[str], *, seed: int, mean: Sequence[float],
                          std: Sequence[float]) -> dict[str, dict[str, Any]]:
    """Zero-shot base / new accuracy on toy datasets' test splits, read through the real readers.

    The base/new cut is the benchmark's (``prometar.data.protocols.base_new_split``); each half is
    classified among its own classes with the dataset's single zero-shot template (as the "CLIP"
    row of the benchmark tables), underscores in class names read as spaces.

    Args:
        model: A CLIP model.
        tokenizer: Its tokenizer.
        data_root: Data root the toy datasets were written under.
        keys: Toy dataset keys.
        seed: World seed they were written with (gives the colour/shape of each class).
        mean: Image normalisation mean.
        std: Image normalisation standard deviation.

    Returns:
        ``{key: {"style", "systematic", "base", "new", "colour_only_base", "colour_only_new",
        "shape_only_base", "shape_only_new", "chance_base", "chance_new"}}``, accuracies in [0, 1].
    """
    device = next(model.parameters()).device
    report: dict[str, dict[str, Any]] = {}
    for key in keys:
        style = toyworld.TOY_DATASETS[key].style
        classes = toyworld.toy_dataset_classes(key, seed)
        cut = base_new_split(read_dataset(key, data_root))
        template = get_dataset(key).template
        row: dict[str, Any] = {"style": style.name, "systematic": style.systematic}
        for half, splits, labels in (("base", cut.base, cut.base_labels), ("new", cut.new, cut.new_labels)):
            x = to_tensor(_load_images([it.path for it in splits.test]), mean, std, device)  # [N, 3, H, W]
            y = torch.tensor([it.label for it in splits.test])
            prompts = [template.format(name.replace("_", " ")) for name in splits.classnames]
            half_classes = [classes[label] for label in labels]
            row[half] = zero_shot_accuracy(model, tokenizer, x, y, prompts)
            row[f"colour_only_{half}"] = toyworld.single_attribute_baseline(half_classes, "colour")
            row[f"shape_only_{half}"] = toyworld.single_attribute_baseline(half_classes, "shape")
            row[f"chance_{half}"] = 1.0 / len(half_classes)
        report[key] = row
    return report


# ---------------------------------------------------------------------------------------------
# The cached build
# ---------------------------------------------------------------------------------------------


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
    world = toyworld.render_set(settings.n_pretrain, seed=settings.seed)
    render_s = time.perf_counter() - started
    try:
        model = create_toy_clip(settings.seed)
        training = pretrain(model, world.images, world.captions, seed=settings.seed,
                            budget_s=max(settings.budget_s - render_s, 1.0), max_steps=settings.max_steps,
                            batch_size=settings.batch_size, lr=settings.lr, weight_decay=settings.weight_decay,
                            warmup_steps=settings.warmup_steps, bf16=settings.bf16, device=device)
    except BaseException:
        if writer is not None:
            writer.kill()
            writer.wait()
        raise
    del world
    checkpoint = output_dir / CHECKPOINT_NAME
    tmp = checkpoint.with_name(checkpoint.name + f".tmp{os.getpid()}")
    torch.save({"name": MODEL_NAME, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, tmp)
    os.replace(tmp, checkpoint)
    if writer is None:
        toyworld.write_toy_datasets(**write_args)
    else:
        _finish_writer(writer, data_root, writer_log)

    # Evaluate through the same loader every consumer uses, from the checkpoint on disk.
    backbone = load_clip(MODEL_NAME, str(checkpoint), device=device)
    clip, tokenizer = backbone.model, backbone.tokenizer
    results: dict[str, Any] = {"steps": training["steps"], "train_seconds": round(training["seconds"], 1),
                               "final_loss": training["final_loss"], "render_seconds": round(render_s, 1)}
    results.update(_evaluate_combinations(clip, tokenizer, settings, backbone.mean, backbone.std, device))
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
    """Run ``toyworld.write_toy_datasets(**write_args)`` in a fresh interpreter, stderr to ``log_path``.

    A plain subprocess (not multiprocessing) so that callers' scripts are never re-imported and no
    torch threads are forked.
    """
    code = ("import json, sys; from prometar.data.toyworld import write_toy_datasets; "
            "write_toy_datasets(**json.loads(sys.argv[1]))")
    package_parent = str(Path(__file__).resolve().parents[1])
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


def _evaluate_combinations(model: open_clip.CLIP, tokenizer: Callable[[list[str]], torch.Tensor],
                           settings: ToySettings, mean: Sequence[float], std: Sequence[float],
                           device: torch.device) -> dict[str, float]:
    """64-way zero-shot accuracy on fresh renders of the held-out and of the seen combinations."""
    prompts = [ZERO_SHOT_TEMPLATE.format(f"{c} {s}") for c, s in toyworld.ALL_COMBINATIONS]
    out: dict[str, float] = {"chance": 1.0 / len(prompts)}
    for name, combos, salt in (("heldout_acc", toyworld.HELD_OUT_COMBINATIONS, 1),
                               ("seen_acc", toyworld.SEEN_COMBINATIONS, 2)):
        per = settings.eval_per_combination if salt == 1 else max(1, settings.eval_per_combination // 2)
        rendered = toyworld.render_per_combination(combos, per, seed=settings.seed * 1000 + 7 + salt)
        x = to_tensor(rendered.images, mean, std, device)
        y = torch.from_numpy(rendered.combination_index)
        out[name] = zero_shot_accuracy(model, tokenizer, x, y, prompts)
    return out


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
