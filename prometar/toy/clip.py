"""The toy CLIP: a tiny open_clip ``CLIP`` and its contrastive pretraining on captioned images.

The architecture is the ``toy-clip`` model config (``prometar/model_configs/toy-clip.json``);
``create_toy_clip`` initialises it deterministically from a seed and ``pretrain`` trains it in
place on uint8 images and their captions (``prometar/toy/world.py`` renders them), updating only
the token-embedding rows the captions use.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from prometar.backbone import load_model_config

logger = logging.getLogger(__name__)

MODEL_NAME = "toy-clip"
Precision = Literal["fp32", "bf16"]


PROGRESS_EVERY_S = 5.0
"""Seconds between the pretraining's progress records (step, loss, ETA) in the log."""


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


def to_tensor(
    images: np.ndarray, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> normalised float32 [N, 3, H, W] on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # [N, 3, H, W]
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def _tokenize_unique(
    captions: Sequence[str], tokenizer: Callable[[list[str]], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize each distinct caption once: (tokens [U, L], index [N] into them)."""
    unique = sorted(set(captions))
    lookup = {c: i for i, c in enumerate(unique)}
    index = torch.tensor([lookup[c] for c in captions], dtype=torch.long)
    return tokenizer(unique), index


def _param_groups(model: open_clip.CLIP, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices only (not embeddings, gains, biases, logit scale)."""
    no_decay_ids = {
        id(model.token_embedding.weight),
        id(model.positional_embedding),
        id(model.visual.positional_embedding),
        id(model.visual.class_embedding),
    }
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim >= 2 and id(p) not in no_decay_ids else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_factor(step: int, steps: int, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to zero at ``steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bf16 natively (CPU: AVX-512 BF16 or AMX; CUDA: the device says).

    Without it, bf16 autocast on a CPU is emulated and several times slower than fp32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    probes = [
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    return any(bool(probe()) for probe in probes if probe is not None)


def resolve_precision(precision: Precision, device: torch.device | str) -> Precision:
    """The precision pretraining runs in: ``bf16`` only where the device has native bf16, else ``fp32``.

    Args:
        precision: The requested precision.
        device: The training device.

    Returns:
        ``precision``, or ``fp32`` (with a warning) when ``bf16`` is requested without native bf16.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"toy CLIP precision must be fp32 or bf16, got {precision!r}")
    if precision == "bf16" and not native_bf16(device):
        logger.warning("toy CLIP: %s has no native bf16; pretraining in fp32 instead (same steps)", device)
        return "fp32"
    return precision


def pretrain(
    model: open_clip.CLIP,
    images: np.ndarray,
    captions: Sequence[str],
    *,
    seed: int,
    steps: int,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 0.1,
    warmup_steps: int = 50,
    precision: Precision = "fp32",
    device: torch.device | str = "cpu",
    deadline: float | None = None,
) -> dict[str, float]:
    """Contrastive (CLIP) pretraining for a fixed number of steps.

    Warm-up, then a cosine decay over ``steps``; initialisation (the caller's), batch order and
    every update are deterministic from ``seed`` for a fixed torch thread count on one machine.
    Nothing depends on the clock: ``deadline`` only aborts.

    Args:
        model: The model to train in place (fp32 parameters).
        images: uint8 [N, H, W, 3] pretraining images.
        captions: N captions.
        seed: Seed of the batch order.
        steps: Optimisation steps.
        batch_size: Contrastive batch size.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay on weight matrices.
        warmup_steps: Linear warm-up steps.
        precision: ``fp32``, or ``bf16`` autocast (parameters stay fp32) where the device has native
            bf16 (``resolve_precision``; elsewhere fp32).
        device: Training device.
        deadline: A ``time.monotonic()`` value; passing it raises ``TimeoutError`` (a guard,
            never a shorter schedule).

    Returns:
        ``{"steps", "seconds", "final_loss"}``.

    Raises:
        TimeoutError: ``deadline`` passed before the last step.
    """
    if steps < 1 or batch_size < 2 or len(images) < batch_size:
        raise ValueError(
            f"toy CLIP pretraining: need steps >= 1 and 2 <= batch_size <= {len(images)} images, "
            f"got steps={steps}, batch_size={batch_size}"
        )
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    model.to(device).train()
    tokens, caption_index = _tokenize_unique(
        list(captions), open_clip.SimpleTokenizer(context_length=model.context_length)
    )
    with _compact_token_embedding(model, tokens) as compact_tokens:
        result = _contrastive_loop(
            model,
            images,
            compact_tokens.to(device),
            caption_index,
            seed=seed,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            bf16=precision == "bf16",
            device=device,
            deadline=deadline,
        )
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
    compact = torch.nn.Embedding.from_pretrained(
        full.weight.detach()[used].clone(), freeze=False
    )  # [U, width]
    model.token_embedding = compact.to(full.weight.device)
    try:
        yield renumber[tokens]
    finally:
        with torch.no_grad():
            full.weight[used.to(full.weight.device)] = model.token_embedding.weight.to(full.weight.dtype)
        model.token_embedding = full


def _contrastive_loop(
    model: open_clip.CLIP,
    images: np.ndarray,
    tokens: torch.Tensor,
    caption_index: torch.Tensor,
    *,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    bf16: bool,
    device: torch.device,
    deadline: float | None,
) -> dict[str, float]:
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    optimizer = torch.optim.AdamW(
        _param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True
    )
    generator = torch.Generator().manual_seed(seed)
    n = len(images)
    order = torch.randperm(n, generator=generator)
    cursor, loss_value = 0, float("nan")
    labels = torch.arange(batch_size, device=device)
    # CPU flash attention's bf16 backward is several times slower than the plain math path.
    attention = sdpa_kernel(SDPBackend.MATH) if bf16 and device.type == "cpu" else contextlib.nullcontext()
    start = time.perf_counter()
    shown = 0.0
    with attention:
        for step in range(steps):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"toy CLIP pretraining passed its time limit at step {step} of {steps}")
            for group in optimizer.param_groups:
                group["lr"] = lr * _lr_factor(step, steps, warmup_steps)
            if cursor + batch_size > n:
                order, cursor = torch.randperm(n, generator=generator), 0
            batch = order[cursor : cursor + batch_size]
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
            elapsed = time.perf_counter() - start
            if elapsed - shown >= PROGRESS_EVERY_S or step + 1 == steps:  # the log only: no result reads it
                shown = elapsed
                logger.info(
                    "toy CLIP step %d of %d (%.0fs): loss %.3f, ETA %.0fs",
                    step + 1,
                    steps,
                    elapsed,
                    loss_value,
                    elapsed / (step + 1) * (steps - step - 1),
                )
    return {"steps": steps, "seconds": time.perf_counter() - start, "final_loss": loss_value}
