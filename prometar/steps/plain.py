"""The plain step: cross-entropy only, one backward (CoOp, VPT, IVLP)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from prometar.losses import cross_entropy
from prometar.meta import VirtualTask
from prometar.steps.base import TrainingStep, step_metrics


class PlainStep(TrainingStep):
    """CE on the batch, one backward, one prompt-optimiser step; ``text_reg = image_reg = 0``."""

    def _step(
        self, images: Tensor, labels: Tensor, task: VirtualTask | None, trace: dict[str, Any] | None
    ) -> dict[str, float]:
        self.prompt_optimizer.zero_grad(set_to_none=True)
        image_features, text_features = self._features(images)
        logits = self._logits(image_features, text_features)
        ce = cross_entropy(logits, labels)
        self._backward(ce)
        self._optimizer_step(self.prompt_optimizer)
        return step_metrics(
            loss=ce.item(),
            ce=ce.item(),
            logits=logits,
            labels=labels,
            gate_value=0.0,
            towers=self._present_towers(),
        )
