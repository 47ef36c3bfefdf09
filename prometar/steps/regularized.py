"""The regularised step: CE + s·(weighted R_text + weighted R_image), one backward (IVLP + regularisers).

``s`` is the ungated strength: without a gate network the regulariser gradient is scaled by
ProMetaR's gate at initialisation (``prometar.meta.INITIAL_GATE``), the strength the published
ProMetaR step applies it at, so that IVLP + regularisers differs from ProMetaR in the
meta-learning alone; ``s = 1`` (``regularizer.ungated_strength: nominal``) is the plain weighted
sum.

The regularisers pull the prompted features towards the frozen teacher's (docs/algorithm.md §2): the
text teacher is given (``prometar.teacher.compute_text_teacher``), the image teacher is the
unprompted image features of the same batch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from prometar.losses import cross_entropy, image_regularizer, text_regularizer
from prometar.meta import INITIAL_GATE, VirtualTask
from prometar.prompts import PromptedCLIP
from prometar.steps.base import TrainingStep, step_metrics
from prometar.teacher import compute_image_teacher


def ungated_scale(strength: Literal["prometar", "nominal"]) -> float:
    """The factor of the regulariser gradient where no gate network modulates it.

    ``prometar``: ProMetaR's gate at initialisation (:data:`prometar.meta.INITIAL_GATE`), the
    strength the published ProMetaR step applies its 50 / 20 weights at; ``nominal``: 1.

    Raises:
        ValueError: Another strength.
    """
    scales = {"prometar": INITIAL_GATE, "nominal": 1.0}
    if strength not in scales:
        raise ValueError(f"unknown ungated strength {strength!r}; valid: {list(scales)}")
    return scales[strength]


class RegularizedStep(TrainingStep):
    """CE plus both weighted regularisers, summed and back-propagated once.

    Args:
        model, prompt_optimizer, class_tokens, autocast_dtype, grad_scaler: As
            :class:`TrainingStep`.
        teacher_text: ``[C, E]`` text teacher (``compute_text_teacher``).
        text_weight: Weight of R_text (50 in the official run).
        image_weight: Weight of R_image (20 in the official run).
        ungated_scale: Factor of the weighted regularisers' gradient where no gate network
            modulates it (``prometar.meta.INITIAL_GATE`` by default in the run config; 1 = the
            weights alone). Reported as the step's gate value.

    Raises:
        ValueError: No text teacher, or a scale outside [0, 1].
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
        ungated_scale: float = 1.0,
        autocast_dtype: torch.dtype | None = None,
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if teacher_text is None:
            raise ValueError(f"the {self.scheme!r} scheme needs teacher_text (compute_text_teacher)")
        if not 0.0 <= ungated_scale <= 1.0:
            raise ValueError(f"ungated_scale must lie in [0, 1], got {ungated_scale}")
        super().__init__(
            model,
            prompt_optimizer,
            class_tokens=class_tokens,
            autocast_dtype=autocast_dtype,
            grad_scaler=grad_scaler,
        )
        self.teacher_text = teacher_text
        self.text_weight = float(text_weight)
        self.image_weight = float(image_weight)
        self.ungated_scale = float(ungated_scale)

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
        total = ce + self.ungated_scale * (text_reg + image_reg)
        self._backward(total)
        self._optimizer_step(self.prompt_optimizer)
        return step_metrics(
            loss=total.item(),
            ce=ce.item(),
            text_reg=text_reg.item(),
            image_reg=image_reg.item(),
            logits=logits,
            labels=labels,
            gate_value=self.ungated_scale,
            towers=self._present_towers(),
        )
