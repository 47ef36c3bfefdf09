"""Evaluation: top-1 accuracy with class text features computed once per class list (docs/algorithm.md §6).

Accuracy is ``100 · correct / total`` over a split; per-class accuracies use the same formula per
label. The classifier of a split is the L2-normalised text features of *that split's* class list:
base-to-new evaluates base test images with a base-only classifier and new test images with a
new-only classifier, with the same prompts. The harmonic mean of base and new accuracy is
``2·B·N / (B + N)``.

Zero-shot CLIP (no prompts) classifies with the dataset's single template
(``teacher.compute_zero_shot_weights``); a prompted model encodes its tokenized class names.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from prometar.prompts import PromptedCLIP
from prometar.teacher import compute_zero_shot_weights

logger = logging.getLogger(__name__)

__all__ = ["AccuracyResult", "Evaluator", "accuracy"]


def accuracy(correct: int, total: int) -> float:
    """``100 · correct / total``; 0.0 for an empty split."""
    return 100.0 * correct / total if total else 0.0


@dataclass(frozen=True)
class AccuracyResult:
    """Top-1 accuracy of one split.

    Attributes:
        accuracy: ``100 · correct / total``.
        correct: Correctly classified images.
        total: Images evaluated.
        per_class: Class name → accuracy (%) for every class with at least one image.
    """

    accuracy: float
    correct: int
    total: int
    per_class: dict[str, float] = field(default_factory=dict)


class Evaluator:
    """Classifies images against class lists, caching each class list's text features.

    The cache assumes the prompts do not change while the evaluator is used: build it after
    training (or call :meth:`clear`).

    Args:
        model: The prompted CLIP.
        template: Zero-shot template (``"a photo of a {}."``): classify with unprompted CLIP and
            this single template. None = the model's prompted text features.
        autocast_dtype: e.g. ``torch.bfloat16`` for autocast on CUDA; None = full precision.
        text_batch_size: Classes encoded per forward pass (memory bound only).
    """

    def __init__(
        self,
        model: PromptedCLIP,
        *,
        template: str | None = None,
        autocast_dtype: torch.dtype | None = None,
        text_batch_size: int = 256,
    ) -> None:
        self.model = model
        self.template = template
        self.autocast_dtype = autocast_dtype
        self.text_batch_size = text_batch_size
        self._features: dict[tuple[str, ...], Tensor] = {}

    @property
    def device(self) -> torch.device:
        """Device of the model."""
        return self.model.logit_scale.device

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def clear(self) -> None:
        """Forget cached class features (after the prompts changed)."""
        self._features.clear()

    @torch.no_grad()
    def class_features(self, classnames: Sequence[str]) -> Tensor:
        """L2-normalised text features ``[C, E]`` of a class list, computed once per list."""
        key = tuple(classnames)
        if key not in self._features:
            if not key:
                raise ValueError("cannot build a classifier over an empty class list")
            self.model.eval()
            chunks = []
            with self._autocast():
                for start in range(0, len(key), self.text_batch_size):
                    names = list(key[start : start + self.text_batch_size])
                    if self.template is not None:
                        chunks.append(compute_zero_shot_weights(self.model, names, self.template))
                    else:
                        tokens = self.model.tokenize_classnames(names)  # [c, L]
                        chunks.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
            self._features[key] = torch.cat(chunks, dim=0)  # [C, E]
        return self._features[key]

    @torch.no_grad()
    def evaluate(self, loader: Iterable[tuple[Tensor, Tensor]], classnames: Sequence[str]) -> AccuracyResult:
        """Top-1 accuracy of ``loader``'s images over ``classnames`` (labels index that list).

        Args:
            loader: Batches of ``(images [B, 3, H, W], labels [B])``.
            classnames: The classifier's classes in label order.

        Returns:
            Overall and per-class accuracy.
        """
        text = self.class_features(classnames)  # [C, E]
        self.model.eval()
        num_classes = len(classnames)
        correct = torch.zeros(num_classes, dtype=torch.long)
        total = torch.zeros(num_classes, dtype=torch.long)
        use_prompts = self.template is None
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(torch.long).cpu()
            if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError(f"label {int(labels.max())} out of range for {num_classes} classes")
            with self._autocast():
                image = self.model.encode_image(images, use_prompts=use_prompts)  # [B, E]
            image = F.normalize(image.float(), dim=-1)
            predictions = (image @ text.t()).argmax(dim=-1).cpu()  # [B]
            hits = (predictions == labels).long()
            total += torch.bincount(labels, minlength=num_classes)
            correct += torch.bincount(labels, weights=hits.double(), minlength=num_classes).long()
        n_correct, n_total = int(correct.sum()), int(total.sum())
        per_class = {
            name: accuracy(int(correct[i]), int(total[i]))
            for i, name in enumerate(classnames)
            if total[i] > 0
        }
        return AccuracyResult(accuracy(n_correct, n_total), n_correct, n_total, per_class)
