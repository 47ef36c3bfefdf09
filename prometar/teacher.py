"""The frozen teacher of ProMetaR (docs/algorithm.md §2): unprompted CLIP's 60-template text ensemble
per class and its image features of the training batch, plus the single-template zero-shot
classifier built from the same unprompted text tower.

The text teacher is computed once per class list and can be cached on disk, keyed by a backbone
identifier, the class names and the templates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from prometar.files import write_atomic

if TYPE_CHECKING:  # pragma: no cover - typing only
    from prometar.prompts import PromptedCLIP

logger = logging.getLogger(__name__)

TEMPLATES_RESOURCE = "teacher_templates_60.txt"
_CACHE_FORMAT = 1


def load_templates(path: str | os.PathLike | None = None) -> list[str]:
    """Read prompt templates, one per line, each with one ``{}`` for the class name.

    Args:
        path: a text file; ``None`` reads the packaged 60 ImageNet templates in the official order.

    Raises:
        ValueError: a line lacks exactly one ``{}``, or the file holds no template.
    """
    if path is None:
        text = resources.files("prometar.resources").joinpath(TEMPLATES_RESOURCE).read_text(encoding="utf-8")
        source = f"prometar/resources/{TEMPLATES_RESOURCE}"
    else:
        text = Path(path).read_text(encoding="utf-8")
        source = str(path)
    templates = [line.strip() for line in text.splitlines() if line.strip()]
    if not templates:
        raise ValueError(f"{source}: no templates")
    for number, template in enumerate(templates, start=1):
        if template.count("{}") != 1:
            raise ValueError(f"{source}: template {number} ({template!r}) needs exactly one '{{}}'")
    return templates


def format_classname(classname: str) -> str:
    """Class names as CLIP reads them: underscores become spaces."""
    return classname.replace("_", " ")


def teacher_cache_path(
    cache_dir: str | os.PathLike, cache_key: str, classnames: Sequence[str], templates: Sequence[str]
) -> Path:
    """The cache file of one (backbone, class list, templates) combination."""
    payload = json.dumps(
        {
            "format": _CACHE_FORMAT,
            "backbone": cache_key,
            "classnames": list(classnames),
            "templates": list(templates),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]
    return Path(cache_dir) / f"text_teacher_{digest}.pt"


def compute_text_teacher(
    model: PromptedCLIP,
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    cache_dir: str | os.PathLike | None = None,
    cache_key: str | None = None,
    classes_per_batch: int = 16,
) -> Tensor:
    """Unprompted CLIP text features per class, averaged over the templates.

    Args:
        model: the prompted model; only its unprompted text path (``encode_plain_text``) is used.
        classnames: class names in label order.
        templates: templates with one ``{}`` each (``load_templates()`` for the official 60).
        cache_dir: if given, the result is read from / written to this folder (atomic write).
        cache_key: identifies the backbone weights (e.g. ``"ViT-B-16-quickgelu|openai"``);
            required with ``cache_dir``.
        classes_per_batch: how many classes are encoded per forward pass (memory bound only).

    Returns:
        ``[C, E]`` raw mean of the template features, NOT normalised, float32, on the model's
        device, without gradient.
    """
    if not classnames:
        raise ValueError("compute_text_teacher needs at least one class name")
    if not templates:
        raise ValueError("compute_text_teacher needs at least one template")
    device = model.logit_scale.device
    path = None
    if cache_dir is not None:
        if not cache_key:
            raise ValueError("compute_text_teacher: cache_dir given without a cache_key naming the backbone")
        path = teacher_cache_path(cache_dir, cache_key, classnames, templates)
        if path.exists():
            cached = _read_cache(path)
            if (
                cached is not None
                and cached.get("classnames") == list(classnames)
                and cached.get("backbone") == cache_key
                and isinstance(cached.get("features"), Tensor)
            ):
                logger.debug("text teacher read from %s", path)
                return cached["features"].to(device)
            if cached is not None:
                logger.warning("ignoring text teacher cache %s: it belongs to other inputs", path)

    class_means = []
    with torch.no_grad():
        for start in range(0, len(classnames), classes_per_batch):
            names = [format_classname(name) for name in classnames[start : start + classes_per_batch]]
            texts = [template.format(name) for name in names for template in templates]
            features = model.encode_plain_text(texts).float()  # [n_names * T, E]
            features = features.reshape(len(names), len(templates), -1)  # [n_names, T, E]
            class_means.append(features.mean(dim=1))  # [n_names, E]
    teacher = torch.cat(class_means, dim=0)  # [C, E]

    if path is not None:
        _atomic_save(
            {
                "backbone": cache_key,
                "classnames": list(classnames),
                "templates": list(templates),
                "features": teacher.cpu(),
            },
            path,
        )
        logger.debug("text teacher written to %s", path)
    return teacher


def _read_cache(path: Path) -> dict[str, Any] | None:
    """A teacher cache file (tensors and plain data only), or None with a warning if it is unusable."""
    try:
        # weights_only: a cache file that would build any other object is refused before it runs.
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable cache is recomputed, whatever the cause
        logger.warning(
            "ignoring text teacher cache %s: cannot be read (%s)", path, str(exc).splitlines()[0][:200]
        )
        return None
    if not isinstance(cached, dict):
        logger.warning("ignoring text teacher cache %s: not a teacher cache", path)
        return None
    return cached


def compute_image_teacher(model: PromptedCLIP, images: Tensor) -> Tensor:
    """Unprompted CLIP image features of the batch the student sees.

    Args:
        model: the prompted model; its prompts are bypassed.
        images: ``[B, 3, H, W]`` the same augmented batch the student is trained on.

    Returns:
        ``[B, E]`` L2-normalised features without gradient.
    """
    with torch.no_grad():
        features = model.encode_image(images, use_prompts=False)  # [B, E]
        return F.normalize(features.float(), dim=-1)


def compute_zero_shot_weights(model: PromptedCLIP, classnames: Sequence[str], template: str) -> Tensor:
    """Zero-shot CLIP classifier from one template (e.g. the dataset's ``"a photo of a {}."``).

    Returns:
        ``[C, E]`` L2-normalised unprompted text features, one row per class, without gradient.
    """
    if template.count("{}") != 1:
        raise ValueError(f"template {template!r} needs exactly one '{{}}'")
    with torch.no_grad():
        texts = [template.format(format_classname(name)) for name in classnames]
        return F.normalize(model.encode_plain_text(texts).float(), dim=-1)  # [C, E]


def _atomic_save(obj: dict, path: Path) -> None:
    write_atomic(path, lambda stream: torch.save(obj, stream), binary=True)
