"""The regularised step: CE + weighted R_text + weighted R_image, one backward (IVLP + regularisers).

The regularisers pull the prompted features towards the frozen teacher's (docs/algorithm.md §2): the
text teacher is given (``prometar.teacher.compute_text_teacher``), the image teacher is the
unprompted image features of the same batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from prometar.losses import cross_entropy, image_regularizer, text_regularizer
from prometar.meta import VirtualTask
from prometar.prompts import PromptedCLIP
from prometar.steps.base import TrainingStep, step_metrics
from prometar.teacher import compute_image_teacher


class RegularizedStep(TrainingStep):
    """CE plus both weighted regularisers, summed and back-propagated once.

    Args:
        model, prompt_optimizer, class_tokens, autocast_dtype: As :class:`TrainingStep`.
        teacher_text: ``[C, E]`` text teacher (``compute_text_teacher``).
        text_weight: Weight of R_text (50 in the official run).
        image_weight: Weight of R_image (20 in the official run).

    Raises:
        ValueError: No text teacher.
    """

    scheme = "regularized"

    def __init__(
        self,
        model: PromptedCLIP,
        prompt_optimizer: torch.optim.Optimizer,
        *,
        class_tokens: Tensor,
        teacher_text: Tensor,
        text_weight: float,
        image_weight: float,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        if teacher_text is None:
            raise ValueError(f"the {self.scheme!r} scheme needs teacher_text (compute_text_teacher)")
        super().__init__(model, prompt_optimizer, class_tokens=class_tokens, autocast_dtype=autocast_dtype)
        self.teacher_text = teacher_text
        self.text_weight = float(text_weight)
        self.image_weight = float(image_weight)

    def _image_teacher(self, images: Tensor) -> Tensor:
        with self._autocast(images.device):
            return compute_image_teacher(self.model, images)

    def _losses(
        self,
        images: Tensor,
        labels: Tensor,
        teacher_image: Tensor,
        fast_prompts: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Logits, CE and the weighted regularisers of one forward pass."""
        image_features, text_features = self._features(images, fast_prompts)
        logits = self._logits(image_features, text_features)
        ce = cross_entropy(logits, labels)
        text_reg = self.text_weight * text_regularizer(text_features, self.teacher_text)
        image_reg = self.image_weight * image_regularizer(image_features, teacher_image)
        return logits, ce, text_reg, image_reg

    def _step(
        self, images: Tensor, labels: Tensor, task: VirtualTask | None, trace: dict[str, Any] | None
    ) -> dict[str, float]:
        self.prompt_optimizer.zero_grad(set_to_none=True)
        teacher_image = self._image_teacher(images)
        logits, ce, text_reg, image_reg = self._losses(images, labels, teacher_image)
        total = ce + text_reg + image_reg
        total.backward()
        self.prompt_optimizer.step()
        return step_metrics(
            loss=total.item(),
            ce=ce.item(),
            text_reg=text_reg.item(),
            image_reg=image_reg.item(),
            logits=logits,
            labels=labels,
            gate_value=1.0,
            towers=self._present_towers(),
        )
