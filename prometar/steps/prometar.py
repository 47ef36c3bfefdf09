"""The ProMetaR step: the gate-modulated phase A and the bi-level meta step (docs/algorithm.md).

Phase A: the three gradients taken separately, the regulariser gradient modulated by the gate
(``prometar.meta.modulate_gradient``), the prompt optimiser steps. Phase B: a virtual task — a
differentiable inner SGD step on the support items with fast prompt weights, modulated the same
way (``torch.func.functional_call``: the frozen CLIP is never copied), task augmentation
(``prometar.meta.augment_task``: manifold mixup of the query items' final image features with their
support partners under the fast weights), and the scaled mixed cross-entropy back-propagated into
the prompts and the gate network; both optimisers step. Phase B is skipped (``meta_skipped = 1``)
when the batch has a single label.

Gate modes: ``learned`` (the gate network), ``constant`` (0.5 everywhere, no gate parameters
needed), ``off`` (no modulation: g = ∇CE + ∇R). Phase B runs in every gate mode; only ``learned``
needs and steps the gate optimiser. The gate's input in phase B is the inner gradients *with*
their graph (second order), as in the published implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from prometar import metrics as names
from prometar.losses import mixed_cross_entropy
from prometar.meta import (
    CONSTANT_GATE,
    GATE_MODES,
    GateMode,
    GateNetwork,
    VirtualTask,
    augment_task,
    modulate_gradient,
    sample_virtual_task,
)
from prometar.prompts import PromptedCLIP, math_attention
from prometar.steps.base import step_metrics
from prometar.steps.regularized import RegularizedStep


class ProMetaRStep(RegularizedStep):
    """ProMetaR's iteration: phase A with the modulated regulariser gradient, then phase B.

    Args:
        model, prompt_optimizer, class_tokens, teacher_text, text_weight, image_weight,
            autocast_dtype, grad_scaler: As :class:`~prometar.steps.regularized.RegularizedStep`.
            The prompt optimiser steps twice per iteration, its state carried over; with a
            scaler, the gradients the gate reads are unscaled, and the scale is updated after each
            phase.
        gate: The gate network (``learned`` gate mode).
        gate_optimizer: Optimiser over the gate network (``learned`` gate mode).
        gate_mode: ``learned`` | ``constant`` (0.5) | ``off`` (no network: ∇CE + s·∇R with
            ``ungated_scale`` s).
        ungated_scale: As :class:`~prometar.steps.regularized.RegularizedStep`; read by the
            ``off`` gate mode only.
        inner_lr: Learning rate of phase B's inner SGD step.
        meta_loss_scale: Factor of the meta loss before it is back-propagated (LR_RATIO).
        second_order: Differentiate through the inner gradient; False = first-order (the inner
            gradients are constants; the gate still gets the gradient of its direct effect).
        beta: Beta distribution of the mixing coefficients (:meth:`sample_task`).

    Raises:
        ValueError: An unknown gate mode, a missing teacher / gate / gate optimiser, a gate without
            a gate for some prompt tensor, or a non-positive inner learning rate or loss scale.
    """

    scheme = "prometar"

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
        gate: GateNetwork | None = None,
        gate_optimizer: torch.optim.Optimizer | None = None,
        gate_mode: GateMode = "learned",
        inner_lr: float = 5e-4,
        meta_loss_scale: float = 5e-4,
        second_order: bool = True,
        beta: tuple[float, float] = (0.5, 0.5),
        autocast_dtype: torch.dtype | None = None,
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if gate_mode not in GATE_MODES:
            raise ValueError(f"unknown gate mode {gate_mode!r}; valid: {list(GATE_MODES)}")
        super().__init__(
            model,
            prompt_optimizer,
            class_tokens=class_tokens,
            teacher_text=teacher_text,
            text_weight=text_weight,
            image_weight=image_weight,
            ungated_scale=ungated_scale,
            autocast_dtype=autocast_dtype,
            grad_scaler=grad_scaler,
        )
        if gate_mode == "learned":
            if gate is None or gate_optimizer is None:
                raise ValueError("the 'prometar' scheme with a learned gate needs gate and gate_optimizer")
            missing = [name for name in self.prompts if name not in gate.prompt_shapes]
            if missing:
                raise ValueError(f"the gate network has no gate for prompt tensors {missing}")
        if inner_lr <= 0 or meta_loss_scale <= 0:
            raise ValueError(
                f"inner_lr ({inner_lr}) and meta_loss_scale ({meta_loss_scale}) must be positive"
            )
        self.gate = gate
        self.gate_optimizer = gate_optimizer
        self.gate_mode = gate_mode
        self.inner_lr = float(inner_lr)
        self.meta_loss_scale = float(meta_loss_scale)
        self.second_order = bool(second_order)
        self.beta = (float(beta[0]), float(beta[1]))

    def sample_task(self, labels: Tensor, generator: torch.Generator) -> VirtualTask | None:
        """The batch's virtual task (query, support, mixing weights, partners), from ``generator``."""
        return sample_virtual_task(labels, generator, self.beta)

    def _step(
        self, images: Tensor, labels: Tensor, task: VirtualTask | None, trace: dict[str, Any] | None
    ) -> dict[str, float]:
        # ---- phase A: plain step on the full batch, the regulariser gradient modulated.
        teacher_image = self._image_teacher(images)  # [B, E] normalised
        logits, ce, text_reg, image_reg = self._losses(images, labels, teacher_image)
        ce_grads, reg_grads = self._separate_gradients(ce, text_reg, image_reg, create_graph=False)
        with torch.no_grad():
            gates = {name: self._gate_values(name, ce_grads[name], reg_grads[name]) for name in self.prompts}
            modulated = {
                name: modulate_gradient(ce_grads[name], reg_grads[name], gates[name]) for name in self.prompts
            }
        self.prompt_optimizer.zero_grad(set_to_none=True)
        scale = self._loss_scale()  # the optimiser step unscales (and skips non-finite gradients)
        for name, parameter in self.prompts.items():
            parameter.grad = (modulated[name].detach() * scale).to(parameter.dtype)
        self._optimizer_step(self.prompt_optimizer)
        if trace is not None:
            trace["phase_a/prompts_after_step"] = _detached(self.prompts)

        metrics = step_metrics(
            loss=(ce + text_reg + image_reg).item(),
            ce=ce.item(),
            text_reg=text_reg.item(),
            image_reg=image_reg.item(),
            logits=logits,
            labels=labels,
            gate_value=None,
            towers=self._present_towers(),
        )
        for tower in names.TOWERS:
            tower_names = list(self.tower_prompts[tower])
            if not tower_names:
                continue
            values = torch.cat([_as_tensor(gates[name], ce_grads[name]).reshape(-1) for name in tower_names])
            metrics[names.GATE_MEAN[tower]] = values.mean().item()
            metrics[names.GATE_STD[tower]] = values.std().item() if values.numel() > 1 else 0.0
            metrics[names.GRAD_COS[tower]] = _cosine(
                torch.cat([ce_grads[name].reshape(-1) for name in tower_names]),
                torch.cat([reg_grads[name].reshape(-1) for name in tower_names]),
            )
        if trace is not None:
            trace["phase_a/losses"] = {
                "ce": ce.detach(),
                "text_reg": text_reg.detach(),
                "image_reg": image_reg.detach(),
            }
            trace["phase_a/logits"] = logits.detach()
            trace["phase_a/ce_grads"] = _detached(ce_grads)
            trace["phase_a/reg_grads"] = _detached(reg_grads)
            trace["phase_a/gates"] = {name: _as_tensor(gates[name], ce_grads[name]) for name in self.prompts}
            trace["phase_a/modulated_grads"] = _detached(modulated)
        del logits, ce, text_reg, image_reg, ce_grads, reg_grads

        # ---- phase B: meta step on the virtual task.
        if task is None or len(set(labels.tolist())) < 2:
            metrics[names.META_SKIPPED] = 1.0
            return metrics
        metrics[names.QUERY] = self._meta_step(images, labels, teacher_image, task, trace)
        return metrics

    # ------------------------------------------------------------------- pieces

    def _separate_gradients(
        self, ce: Tensor, text_reg: Tensor, image_reg: Tensor, *, create_graph: bool
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """∇CE of every prompt tensor, and ∇R_text of the text / ∇R_image of the vision tensors.

        With a gradient scaler the losses are scaled before differentiation (no fp16 underflow)
        and the gradients returned unscaled.
        """

        def gradients(loss: Tensor, tensors: list[Tensor]) -> list[Tensor]:
            if self.grad_scaler is None:
                return _gradients(loss, tensors, create_graph=create_graph)
            scaled = _gradients(self._scaled(loss), tensors, create_graph=create_graph)
            return [g / self._loss_scale() for g in scaled]

        names = list(self.prompts)
        ce_grads = gradients(ce, [self.prompts[name] for name in names])
        reg_grads: dict[str, Tensor] = {}
        for tower, reg in (("text", text_reg), ("vision", image_reg)):
            tower_names = list(self.tower_prompts[tower])
            if tower_names:
                grads = gradients(reg, [self.prompts[name] for name in tower_names])
                reg_grads.update(zip(tower_names, grads, strict=True))
        return dict(zip(names, ce_grads, strict=True)), reg_grads

    def _gate_values(self, name: str, ce_grad: Tensor, reg_grad: Tensor) -> Tensor | float:
        if self.gate_mode == "off":
            return self.ungated_scale
        if self.gate_mode == "constant":
            return CONSTANT_GATE
        assert self.gate is not None  # checked by __init__
        return self.gate(name, ce_grad, reg_grad).to(ce_grad.dtype)

    def _meta_step(
        self,
        images: Tensor,
        labels: Tensor,
        teacher_image: Tensor,
        task: VirtualTask,
        trace: dict[str, Any] | None,
    ) -> float:
        """Phase B: inner step on the support items, mixup on the query items, meta update."""
        device = labels.device
        support = torch.tensor(task.support, device=device)
        attention = math_attention() if self.second_order else contextlib.nullcontext()
        with attention:
            # Inner step: θ' = θ − inner_lr · (∇CE + gate ⊙ ∇R) on the support items, graph kept.
            _, inner_ce, inner_text_reg, inner_image_reg = self._losses(
                images[support], labels[support], teacher_image[support]
            )
            ce_grads, reg_grads = self._separate_gradients(
                inner_ce, inner_text_reg, inner_image_reg, create_graph=self.second_order
            )
            gates = {name: self._gate_values(name, ce_grads[name], reg_grads[name]) for name in self.prompts}
            inner_grads = {
                name: modulate_gradient(ce_grads[name], reg_grads[name], gates[name]) for name in self.prompts
            }
            fast_prompts = {
                name: parameter - self.inner_lr * inner_grads[name]
                for name, parameter in self.prompts.items()
            }

            # Task augmentation: mix final image features of query items and their support partners.
            needed = sorted(set(task.query) | set(task.partners))
            row_of = {batch_index: row for row, batch_index in enumerate(needed)}
            image_features, text_features = self._features(
                images[torch.tensor(needed, device=device)], fast_prompts
            )  # [n_needed, E], [C, E]
            query_rows = torch.tensor([row_of[i] for i in task.query], device=device)
            partner_rows = torch.tensor([row_of[i] for i in task.partners], device=device)
            lam = torch.tensor(task.lam, device=device, dtype=image_features.dtype)  # [Q]
            mixed = augment_task(image_features[query_rows], image_features[partner_rows], lam)  # [Q, E]
            logits = self._logits(mixed, text_features)  # [Q, C]
            query_labels = labels[torch.tensor(task.query, device=device)]
            partner_labels = labels[torch.tensor(task.partners, device=device)]
            query_ce = mixed_cross_entropy(logits, query_labels, partner_labels, lam)
            meta_loss = query_ce * self.meta_loss_scale

            self.prompt_optimizer.zero_grad(set_to_none=True)
            if self.gate_optimizer is not None:
                self.gate_optimizer.zero_grad(set_to_none=True)
            self._backward(meta_loss)
        if trace is not None:
            trace["phase_b/losses"] = {
                "ce": inner_ce.detach(),
                "text_reg": inner_text_reg.detach(),
                "image_reg": inner_image_reg.detach(),
            }
            trace["phase_b/gates"] = {
                name: _as_tensor(gates[name], ce_grads[name]).detach() for name in self.prompts
            }
            trace["phase_b/inner_grads"] = _detached(inner_grads)
            trace["phase_b/query_ce"] = query_ce.detach()
            trace["phase_b/meta_loss"] = meta_loss.detach()
            trace["phase_b/meta_grads"] = {
                name: _grad_or_zeros(parameter) for name, parameter in self.prompts.items()
            }
            if self.gate is not None and self.gate_mode == "learned":
                trace["phase_b/gate_grads"] = {
                    name: _grad_or_zeros(parameter) for name, parameter in self.gate.named_parameters()
                }
        learned = self.gate_optimizer is not None and self.gate_mode == "learned"
        self._optimizer_step(self.prompt_optimizer, *([self.gate_optimizer] if learned else []))
        return meta_loss.item()


# ------------------------------------------------------------------------ helpers


def _gradients(loss: Tensor, parameters: list[Tensor], *, create_graph: bool) -> list[Tensor]:
    """∂loss/∂parameters; zeros where the loss does not depend on a parameter."""
    if not loss.requires_grad:
        return [torch.zeros_like(parameter) for parameter in parameters]
    grads = torch.autograd.grad(
        loss, parameters, retain_graph=True, create_graph=create_graph, allow_unused=True
    )
    return [
        torch.zeros_like(parameter) if grad is None else grad
        for grad, parameter in zip(grads, parameters, strict=True)
    ]


def _as_tensor(gate: Tensor | float, like: Tensor) -> Tensor:
    if isinstance(gate, Tensor):
        return gate.detach()
    return torch.full_like(like, gate).detach()


def _detached(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in tensors.items()}


def _grad_or_zeros(parameter: Tensor) -> Tensor:
    return torch.zeros_like(parameter) if parameter.grad is None else parameter.grad.detach().clone()


def _cosine(first: Tensor, second: Tensor) -> float:
    denominator = first.norm() * second.norm()
    if denominator.item() == 0.0:
        return 0.0
    return (first @ second / denominator).item()
