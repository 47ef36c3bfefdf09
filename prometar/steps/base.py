"""What every training step shares: the prompted forward passes, the logits and the named metrics.

A step is built from explicit arguments (never the config tree): the prompted CLIP, the prompt
optimiser, the tokenized class names, the autocast dtype and, for fp16 autocast, a gradient scaler
(``torch.amp.GradScaler``: losses are scaled before backward so that fp16 gradients do not
underflow, the gradients unscaled before the optimiser step, a step with non-finite gradients
skipped). ``zero_grad``, ``backward`` and the
optimiser steps happen inside :meth:`TrainingStep.step`. The step does not judge its numbers: a
diverged step returns non-finite values and the caller (the trainer) stops the run, naming epoch
and step.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from prometar import metrics as names
from prometar.meta import VirtualTask
from prometar.prompts import PromptedCLIP


class TrainingStep(ABC):
    """One training iteration of a scheme over the prompted CLIP.

    Args:
        model: The prompted CLIP; its prompt tensors are what ``prompt_optimizer`` trains.
        prompt_optimizer: Optimiser over the prompt tensors (SGD in the official run).
        class_tokens: ``[C, L]`` tokenized class names (``model.tokenize_classnames``).
        autocast_dtype: e.g. ``torch.bfloat16`` to run the CLIP forward passes under autocast on
            the inputs' device (CUDA); None = full precision (CPU).
        grad_scaler: A ``torch.amp.GradScaler`` (fp16 autocast); None = unscaled losses.
    """

    def __init__(
        self,
        model: PromptedCLIP,
        prompt_optimizer: torch.optim.Optimizer,
        *,
        class_tokens: Tensor,
        autocast_dtype: torch.dtype | None = None,
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.model = model
        self.prompt_optimizer = prompt_optimizer
        self.class_tokens = class_tokens
        self.autocast_dtype = autocast_dtype
        self.grad_scaler = grad_scaler
        self.tower_prompts: dict[str, dict[str, torch.nn.Parameter]] = {
            tower: model.prompt_parameters(tower) for tower in names.TOWERS
        }
        self.prompts: dict[str, torch.nn.Parameter] = {
            name: parameter for tower in names.TOWERS for name, parameter in self.tower_prompts[tower].items()
        }
        self.tower_of: dict[str, str] = {
            name: tower for tower in names.TOWERS for name in self.tower_prompts[tower]
        }

    # ----------------------------------------------------------------- entry points

    def __call__(self, images: Tensor, labels: Tensor, *, generator: torch.Generator) -> dict[str, float]:
        """Sample the virtual task from ``generator`` (if the scheme has one), then :meth:`step`."""
        return self.step(images, labels, self.sample_task(labels, generator))

    def sample_task(self, labels: Tensor, generator: torch.Generator) -> VirtualTask | None:
        """The virtual task of one batch; ``None`` for schemes without one."""
        return None

    def step(
        self, images: Tensor, labels: Tensor, task: VirtualTask | None, *, trace: dict[str, Any] | None = None
    ) -> dict[str, float]:
        """Run one iteration; zero_grad, backward and the optimiser steps happen inside.

        Args:
            images: ``[B, 3, H, W]`` the augmented batch.
            labels: ``[B]`` labels in ``[0, C)``.
            task: the virtual task (ProMetaR step); None skips phase B.
            trace: if a dict, intermediate tensors (detached copies) are recorded into it under
                ``phase_a/...`` and ``phase_b/...`` keys (used by the parity tests).

        Returns:
            The metrics named in ``prometar.metrics.STEP_METRICS``, as Python floats.
        """
        self.model.train()
        metrics = self._step(images, labels, task, trace)
        return {name: float(metrics[name]) for name in names.STEP_METRICS}

    @abstractmethod
    def _step(
        self, images: Tensor, labels: Tensor, task: VirtualTask | None, trace: dict[str, Any] | None
    ) -> dict[str, float]:
        """The scheme's iteration; returns every metric of ``STEP_METRICS``."""

    # ------------------------------------------------------------------ loss scaling

    def _scaled(self, loss: Tensor) -> Tensor:
        """The loss times the scaler's current scale (the loss itself without a scaler)."""
        return loss if self.grad_scaler is None else self.grad_scaler.scale(loss)

    def _loss_scale(self) -> float:
        """The factor :meth:`_scaled` multiplies losses by (1 without a scaler)."""
        return 1.0 if self.grad_scaler is None else float(self.grad_scaler.get_scale())

    def _backward(self, loss: Tensor) -> None:
        """``loss.backward()``, the loss scaled first when a gradient scaler is set."""
        self._scaled(loss).backward()

    def _optimizer_step(self, *optimizers: torch.optim.Optimizer) -> None:
        """Step the optimisers on their (scaled) gradients, then update the loss scale.

        With a scaler each optimiser's gradients are unscaled and the step is skipped when any is
        not finite; the scale then shrinks (``GradScaler.update``).
        """
        if self.grad_scaler is None:
            for optimizer in optimizers:
                optimizer.step()
            return
        for optimizer in optimizers:
            self.grad_scaler.step(optimizer)
        self.grad_scaler.update()

    # -------------------------------------------------------------------- forwards

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def _features(
        self, images: Tensor, fast_prompts: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Prompted image ``[B, E]`` and class text ``[C, E]`` features, unnormalised."""
        with self._autocast(images.device):
            if fast_prompts is None:
                image_features, text_features = self.model(images, self.class_tokens)
            else:
                image_features, text_features = functional_call(
                    self.model, dict(fast_prompts), (images, self.class_tokens)
                )
        return _full_precision(image_features), _full_precision(text_features)

    def _logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        image_features = F.normalize(image_features, dim=-1)  # [B, E]
        text_features = F.normalize(text_features, dim=-1)  # [C, E]
        scale = self.model.logit_scale.to(image_features.dtype)
        return scale * image_features @ text_features.t()  # [B, C]

    def _present_towers(self) -> tuple[str, ...]:
        return tuple(tower for tower in names.TOWERS if self.tower_prompts[tower])


def _full_precision(features: Tensor) -> Tensor:
    return features.float() if features.dtype in (torch.float16, torch.bfloat16) else features


def step_metrics(
    *,
    loss: float,
    ce: float,
    logits: Tensor,
    labels: Tensor,
    gate_value: float | None,
    towers: tuple[str, ...],
    text_reg: float = 0.0,
    image_reg: float = 0.0,
) -> dict[str, float]:
    """Every step metric: the losses, the batch accuracy and a gate value per prompted tower.

    ``gate_value`` is the regulariser gradient's multiplier of a scheme without a gate network
    (0 for plain, 1 for regularized); ``None`` leaves the gate and alignment metrics at 0 for the
    caller to fill in.
    """
    accuracy = (logits.detach().argmax(dim=-1) == labels).float().mean().item() * 100.0
    metrics = {
        names.LOSS: loss,
        names.CE: ce,
        names.TEXT_REG: text_reg,
        names.IMAGE_REG: image_reg,
        names.QUERY: 0.0,
        names.META_SKIPPED: 0.0,
        names.TRAIN_ACC: accuracy,
    }
    for tower in names.TOWERS:
        metrics[names.GATE_MEAN[tower]] = gate_value if (gate_value is not None and tower in towers) else 0.0
        metrics[names.GATE_STD[tower]] = 0.0
        metrics[names.GRAD_COS[tower]] = 0.0
    return metrics
