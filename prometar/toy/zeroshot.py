"""Zero-shot accuracy of a toy CLIP: on the 64 colour × shape classes and on the toy datasets.

``evaluate_combinations`` classifies fresh renders of the combinations held out of pretraining
(compositional transfer) and of the seen ones among all 64 combinations;
``evaluate_toy_datasets`` reads the toy datasets' test splits through the real readers and
classifies each base / new half among its own classes, next to the single-attribute baselines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from prometar.data.catalog import get_dataset
from prometar.data.readers import read_dataset
from prometar.data.splits import base_new_split
from prometar.toy import datasets, world
from prometar.toy.clip import to_tensor

ZERO_SHOT_TEMPLATE = "a photo of a {}."  # the pretraining-distribution evaluation prompt


def evaluate_combinations(
    model: open_clip.CLIP,
    tokenizer: Callable[[list[str]], torch.Tensor],
    *,
    per_combination: int,
    seed: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> dict[str, float]:
    """64-way zero-shot accuracy on fresh renders of the held-out and of the seen combinations.

    Args:
        model: A CLIP model.
        tokenizer: Its tokenizer.
        per_combination: Images per held-out combination (half as many, at least one, per seen one).
        seed: World seed (the renders use seeds derived from it).
        mean: Image normalisation mean.
        std: Image normalisation standard deviation.
        device: Evaluation device.

    Returns:
        ``{"chance", "heldout_acc", "seen_acc"}`` in [0, 1].
    """
    prompts = [ZERO_SHOT_TEMPLATE.format(f"{c} {s}") for c, s in world.ALL_COMBINATIONS]
    out: dict[str, float] = {"chance": 1.0 / len(prompts)}
    for name, combos, salt in (
        ("heldout_acc", world.HELD_OUT_COMBINATIONS, 1),
        ("seen_acc", world.SEEN_COMBINATIONS, 2),
    ):
        per = per_combination if salt == 1 else max(1, per_combination // 2)
        rendered = world.render_per_combination(combos, per, seed=seed * 1000 + 7 + salt)
        x = to_tensor(rendered.images, mean, std, device)
        y = torch.from_numpy(rendered.combination_index)
        out[name] = zero_shot_accuracy(model, tokenizer, x, y, prompts)
    return out


@torch.no_grad()
def zero_shot_accuracy(
    model: open_clip.CLIP,
    tokenizer: Callable[[list[str]], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    prompts: Sequence[str],
    batch_size: int = 512,
) -> float:
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
        feats = F.normalize(model.encode_image(images[i : i + batch_size]).float(), dim=-1)  # [b, E]
        correct += int((feats @ text.T).argmax(dim=-1).eq(labels[i : i + batch_size].to(device)).sum())
    return correct / max(len(images), 1)


def _load_images(paths: Sequence[Path]) -> np.ndarray:
    """uint8 [N, H, W, 3] from image files."""
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def evaluate_toy_datasets(
    model: open_clip.CLIP,
    tokenizer: Callable[[list[str]], torch.Tensor],
    data_root: Path | str,
    keys: Sequence[str],
    *,
    seed: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, dict[str, Any]]:
    """Zero-shot base / new accuracy on toy datasets' test splits, read through the real readers.

    The base/new cut is the benchmark's (``prometar.data.splits.base_new_split``); each half is
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
        style = datasets.TOY_DATASETS[key].style
        classes = datasets.toy_dataset_classes(key, seed)
        cut = base_new_split(read_dataset(key, data_root))
        template = get_dataset(key).template
        row: dict[str, Any] = {"style": style.name, "systematic": style.systematic}
        for half, splits, labels in (("base", cut.base, cut.base_labels), ("new", cut.new, cut.new_labels)):
            x = to_tensor(_load_images([it.path for it in splits.test]), mean, std, device)  # [N, 3, H, W]
            y = torch.tensor([it.label for it in splits.test])
            prompts = [template.format(name.replace("_", " ")) for name in splits.classnames]
            half_classes = [classes[label] for label in labels]
            row[half] = zero_shot_accuracy(model, tokenizer, x, y, prompts)
            row[f"colour_only_{half}"] = datasets.single_attribute_baseline(half_classes, "colour")
            row[f"shape_only_{half}"] = datasets.single_attribute_baseline(half_classes, "shape")
            row[f"chance_{half}"] = 1.0 / len(half_classes)
        report[key] = row
    return report
