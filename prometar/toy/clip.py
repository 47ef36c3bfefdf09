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
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from prometar.backbone import load_model_config

logger = logging.getLogger(__name__)

MODEL_NAME = "toy-clip"


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
