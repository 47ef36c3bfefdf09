"""One training iteration per training scheme (algorithm.md §4).

- ``plain``: cross-entropy only (CoOp, VPT, IVLP).
- ``regularized``: CE + weighted R_text + weighted R_image, one backward (IVLP + regularisers).
- ``prometar``: phase A — the three gradients taken separately, the regulariser gradient
  modulated by the gate (``prometar.meta``), the prompt optimiser steps; phase B — a virtual
  task: a differentiable inner SGD step on the support items with fast prompt weights
  (``torch.func.functional_call``: the frozen CLIP is never copied), manifold mixup of the query
  items' final image features with their support partners under the fast weights, and the
  scaled mixed cross-entropy back-propagated into the prompts and the gate network; both
  optimisers step. Phase B is skipped (``meta_skipped = 1``) when the batch has a single label.

Sampling the virtual task is separate from the step: ``TrainingStep.step`` is a deterministic
function of (prompts, gate, optimiser states, batch, task).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from prometar.losses import cross_entropy, image_regularizer, mixed_cross_entropy, text_regularizer
from prometar.meta import CONSTANT_GATE, GATE_MODES, GateMode, GateNetwork, VirtualTask, sample_virtual_task
from prometar.prompts import PromptedCLIP, math_attention
from prometar.teacher import compute_image_teacher

Scheme = Literal["plain", "regularized", "prometar"]
SCHEMES: tuple[str, ...] = ("plain", "regularized", "prometar")

METRIC_NAMES: tuple[str, ...] = (
    "loss", "ce", "text_reg", "image_reg", "query", "meta_skipped",
    "gate_mean/text", "gate_std/text", "gate_mean/vision", "gate_std/vision",
    "grad_cos/text", "grad_cos/vision", "train_acc",
)
"""Keys of every step's metrics, in every scheme and mode.

- ``loss``: the phase-A objective ``ce + text_reg + image_reg`` (``ce`` alone for ``plain``).
- ``text_reg``, ``image_reg``: already weighted; 0.0 in the ``plain`` scheme (not computed).
- ``query``: phase B's meta loss (mixed query CE × meta-loss scale); 0.0 when phase B did not run.
- ``meta_skipped``: 1.0 when the ``prometar`` scheme skipped phase B (single-label batch), else 0.0.
- ``gate_mean/<tower>``, ``gate_std/<tower>``: the effective multiplier of the regulariser
  gradient in phase A over all of the tower's prompt values (std with Bessel's correction):
  the learned gate; 0.5 / 0 for a constant gate; 1 / 0 when the gate is off and in the
  ``regularized`` scheme; 0 / 0 in the ``plain`` scheme or for a tower without prompts.
- ``grad_cos/<tower>``: cosine between the tower's CE gradient and its regulariser gradient
  (all the tower's prompt tensors flattened together); only the ``prometar`` scheme takes the
  gradients separately, the other schemes report 0.0.
- ``train_acc``: phase-A batch accuracy in percent.

The step does not judge its numbers: a diverged step returns non-finite values and the caller
(the trainer) stops the run, naming epoch and step.
"""

_TOWERS: tuple[str, ...] = ("text", "vision")


def build_training_step(
    scheme: Scheme,
    model: PromptedCLIP,
    prompt_optimizer: torch.optim.Optimizer,
    *,
    class_tokens: Tensor,
    teacher_text: Tensor | None,
    text_weight: float,
    image_weight: float,
    gate: GateNetwork | None = None,
    gate_optimizer: torch.optim.Optimizer | None = None,
    gate_mode: GateMode = "learned",
    inner_lr: float = 5e-4,
    meta_loss_scale: float = 5e-4,
    second_order: bool = True,
    beta: tuple[float, float] = (0.5, 0.5),
    autocast_dtype: torch.dtype | None = None,
) -> TrainingStep:
    """Build the training iteration of one scheme.

    Args:
        scheme: ``plain`` | ``regularized`` | ``prometar``.
        model: the prompted CLIP; its prompt tensors are what ``prompt_optimizer`` trains.
        prompt_optimizer: optimiser over the prompt tensors (SGD in the official run). In the
            ``prometar`` scheme it steps twice per iteration, its state carried over.
        class_tokens: ``[C, L]`` tokenized class names (``model.tokenize_classnames``).
        teacher_text: ``[C, E]`` text teacher (``compute_text_teacher``); needed unless ``plain``.
        text_weight: weight of R_text (50 in the official run).
        image_weight: weight of R_image (20 in the official run).
        gate: the gate network (``learned`` gate mode of the ``prometar`` scheme).
        gate_optimizer: optimiser over the gate network (``learned`` gate mode).
        gate_mode: ``learned`` | ``constant`` (0.5) | ``off`` (no modulation: ∇CE + ∇R).
        inner_lr: learning rate of phase B's inner SGD step.
        meta_loss_scale: factor of the meta loss before it is back-propagated (LR_RATIO).
        second_order: differentiate through the inner gradient; False = first-order (the inner
            gradients are constants; the gate still gets the gradient of its direct effect).
        beta: Beta distribution of the mixing coefficients (used by ``TrainingStep.__call__``).
        autocast_dtype: e.g. ``torch.bfloat16`` to run the CLIP forward passes under autocast on
            the inputs' device (CUDA); None = full precision (CPU).

    Raises:
        ValueError: an unknown scheme or gate mode, or a missing teacher / gate / gate optimiser.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown training scheme {scheme!r}; valid: {list(SCHEMES)}")
    if gate_mode not in GATE_MODES:
        raise ValueError(f"unknown gate mode {gate_mode!r}; valid: {list(GATE_MODES)}")
    if scheme != "plain" and teacher_text is None:
        raise ValueError(f"the {scheme!r} scheme needs teacher_text (compute_text_teacher)")
    if scheme == "prometar" and gate_mode == "learned":
        if gate is None or gate_optimizer is None:
            raise ValueError("the 'prometar' scheme with a learned gate needs gate and gate_optimizer")
        names = [name for tower in _TOWERS for name in model.prompt_parameters(tower)]
        missing = [name for name in names if name not in gate.prompt_shapes]
        if missing:
            raise ValueError(f"the gate network has no gate for prompt tensors {missing}")
    if inner_lr <= 0 or meta_loss_scale <= 0:
        raise ValueError(f"inner_lr ({inner_lr}) and meta_loss_scale ({meta_loss_scale}) must be positive")
    return TrainingStep(
        scheme=scheme, model=model, prompt_optimizer=prompt_optimizer, class_tokens=class_tokens,
        teacher_text=teacher_text, text_weight=float(text_weight), image_weight=float(image_weight),
        gate=gate, gate_optimizer=gate_optimizer, gate_mode=gate_mode, inner_lr=float(inner_lr),
        meta_loss_scale=float(meta_loss_scale), second_order=bool(second_order),
        beta=(float(beta[0]), float(beta[1])), autocast_dtype=autocast_dtype,
    )


class TrainingStep:
    """One training iteration of a scheme; build it with ``build_training_step``."""

    def __init__(self, *, scheme: Scheme, model: PromptedCLIP, prompt_optimizer: torch.optim.Optimizer,
                 class_tokens: Tensor, teacher_text: Tensor | None, text_weight: float,
                 image_weight: float, gate: GateNetwork | None, gate_optimizer: torch.optim.Optimizer | None,
                 gate_mode: GateMode, inner_lr: float, meta_loss_scale: float, second_order: bool,
                 beta: tuple[float, float], autocast_dtype: torch.dtype | None) -> None:
        self.scheme = scheme
        self.model = model
        self.prompt_optimizer = prompt_optimizer
        self.class_tokens = class_tokens
        self.teacher_text = teacher_text
        self.text_weight = text_weight
        self.image_weight = image_weight
        self.gate = gate
        self.gate_optimizer = gate_optimizer
        self.gate_mode = gate_mode
        self.inner_lr = inner_lr
        self.meta_loss_scale = meta_loss_scale
        self.second_order = second_order
        self.beta = beta
        self.autocast_dtype = autocast_dtype
        self.tower_prompts: dict[str, dict[str, torch.nn.Parameter]] = {
            tower: model.prompt_parameters(tower) for tower in _TOWERS}
        self.prompts: dict[str, torch.nn.Parameter] = {
            name: parameter for tower in _TOWERS for name, parameter in self.tower_prompts[tower].items()}
        self.tower_of: dict[str, str] = {
            name: tower for tower in _TOWERS for name in self.tower_prompts[tower]}

    # ----------------------------------------------------------------- entry points

    def __call__(self, images: Tensor, labels: Tensor, *, generator: torch.Generator) -> dict[str, float]:
        """Sample the virtual task from ``generator`` (``prometar`` scheme only), then ``step``."""
        task = sample_virtual_task(labels, generator, self.beta) if self.scheme == "prometar" else None
        return self.step(images, labels, task)

    def step(self, images: Tensor, labels: Tensor, task: VirtualTask | None, *,
             trace: dict[str, Any] | None = None) -> dict[str, float]:
        """Run one iteration; zero_grad, backward and the optimiser steps happen inside.

        Args:
            images: ``[B, 3, H, W]`` the augmented batch.
            labels: ``[B]`` labels in ``[0, C)``.
            task: the virtual task (``prometar`` scheme); None skips phase B.
            trace: if a dict, intermediate tensors (detached copies) are recorded into it under
                ``phase_a/...`` and ``phase_b/...`` keys (used by the parity tests).

        Returns:
            The metrics named in ``METRIC_NAMES``, as Python floats.
        """
        self.model.train()
        if self.scheme == "plain":
            metrics = self._plain_step(images, labels)
        elif self.scheme == "regularized":
            metrics = self._regularized_step(images, labels)
        else:
            metrics = self._prometar_step(images, labels, task, trace)
        return {name: float(metrics[name]) for name in METRIC_NAMES}

    # -------------------------------------------------------------------- forwards

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def _features(self, images: Tensor, fast_prompts: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Prompted image ``[B, E]`` and class text ``[C, E]`` features, unnormalised."""
        with self._autocast(images.device):
            if fast_prompts is None:
                image_features, text_features = self.model(images, self.class_tokens)
            else:
                image_features, text_features = functional_call(
                    self.model, dict(fast_prompts), (images, self.class_tokens))
        return _full_precision(image_features), _full_precision(text_features)

    def _image_teacher(self, images: Tensor) -> Tensor:
        with self._autocast(images.device):
            return compute_image_teacher(self.model, images)

    def _logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        image_features = F.normalize(image_features, dim=-1)  # [B, E]
        text_features = F.normalize(text_features, dim=-1)  # [C, E]
        scale = self.model.logit_scale.to(image_features.dtype)
        return scale * image_features @ text_features.t()  # [B, C]

    def _losses(self, images: Tensor, labels: Tensor, teacher_image: Tensor,
                fast_prompts: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Logits, CE and the weighted regularisers of one forward pass."""
        image_features, text_features = self._features(images, fast_prompts)
        logits = self._logits(image_features, text_features)
        ce = cross_entropy(logits, labels)
        text_reg = self.text_weight * text_regularizer(text_features, self.teacher_text)
        image_reg = self.image_weight * image_regularizer(image_features, teacher_image)
        return logits, ce, text_reg, image_reg

    # --------------------------------------------------------------------- schemes

    def _plain_step(self, images: Tensor, labels: Tensor) -> dict[str, float]:
        self.prompt_optimizer.zero_grad(set_to_none=True)
        image_features, text_features = self._features(images)
        logits = self._logits(image_features, text_features)
        ce = cross_entropy(logits, labels)
        ce.backward()
        self.prompt_optimizer.step()
        return _metrics(loss=ce.item(), ce=ce.item(), logits=logits, labels=labels, gate_value=0.0,
                        towers=self._present_towers())

    def _regularized_step(self, images: Tensor, labels: Tensor) -> dict[str, float]:
        self.prompt_optimizer.zero_grad(set_to_none=True)
        teacher_image = self._image_teacher(images)
        logits, ce, text_reg, image_reg = self._losses(images, labels, teacher_image)
        total = ce + text_reg + image_reg
        total.backward()
        self.prompt_optimizer.step()
        return _metrics(loss=total.item(), ce=ce.item(), text_reg=text_reg.item(), image_reg=image_reg.item(),
                        logits=logits, labels=labels, gate_value=1.0, towers=self._present_towers())

    def _prometar_step(self, images: Tensor, labels: Tensor, task: VirtualTask | None,
                       trace: dict[str, Any] | None) -> dict[str, float]:
        # ---- phase A: plain step on the full batch, the regulariser gradient modulated.
        teacher_image = self._image_teacher(images)  # [B, E] normalised
        logits, ce, text_reg, image_reg = self._losses(images, labels, teacher_image)
        ce_grads, reg_grads = self._separate_gradients(ce, text_reg, image_reg, create_graph=False)
        with torch.no_grad():
            gates = {name: self._gate_values(name, ce_grads[name], reg_grads[name]) for name in self.prompts}
            modulated = {name: ce_grads[name] + gates[name] * reg_grads[name] for name in self.prompts}
        self.prompt_optimizer.zero_grad(set_to_none=True)
        for name, parameter in self.prompts.items():
            parameter.grad = modulated[name].detach().to(parameter.dtype)
        self.prompt_optimizer.step()
        if trace is not None:
            trace["phase_a/prompts_after_step"] = _detached(self.prompts)

        metrics = _metrics(loss=(ce + text_reg + image_reg).item(), ce=ce.item(), text_reg=text_reg.item(),
                           image_reg=image_reg.item(), logits=logits, labels=labels, gate_value=None,
                           towers=self._present_towers())
        for tower in _TOWERS:
            names = list(self.tower_prompts[tower])
            if not names:
                continue
            values = torch.cat([_as_tensor(gates[name], ce_grads[name]).reshape(-1) for name in names])
            metrics[f"gate_mean/{tower}"] = values.mean().item()
            metrics[f"gate_std/{tower}"] = values.std().item() if values.numel() > 1 else 0.0
            metrics[f"grad_cos/{tower}"] = _cosine(
                torch.cat([ce_grads[name].reshape(-1) for name in names]),
                torch.cat([reg_grads[name].reshape(-1) for name in names]))
        if trace is not None:
            trace["phase_a/losses"] = {"ce": ce.detach(), "text_reg": text_reg.detach(),
                                       "image_reg": image_reg.detach()}
            trace["phase_a/logits"] = logits.detach()
            trace["phase_a/ce_grads"] = _detached(ce_grads)
            trace["phase_a/reg_grads"] = _detached(reg_grads)
            trace["phase_a/gates"] = {name: _as_tensor(gates[name], ce_grads[name]) for name in self.prompts}
            trace["phase_a/modulated_grads"] = _detached(modulated)
        del logits, ce, text_reg, image_reg, ce_grads, reg_grads

        # ---- phase B: meta step on the virtual task.
        if task is None or len(set(labels.tolist())) < 2:
            metrics["meta_skipped"] = 1.0
            return metrics
        metrics["query"] = self._meta_step(images, labels, teacher_image, task, trace)
        return metrics

    # ------------------------------------------------------------------- pieces

    def _present_towers(self) -> tuple[str, ...]:
        return tuple(tower for tower in _TOWERS if self.tower_prompts[tower])

    def _separate_gradients(self, ce: Tensor, text_reg: Tensor, image_reg: Tensor, *,
                            create_graph: bool) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """∇CE of every prompt tensor, and ∇R_text of the text / ∇R_image of the vision tensors."""
        names = list(self.prompts)
        ce_grads = _gradients(ce, [self.prompts[name] for name in names], create_graph=create_graph)
        reg_grads: dict[str, Tensor] = {}
        for tower, reg in (("text", text_reg), ("vision", image_reg)):
            tower_names = list(self.tower_prompts[tower])
            if tower_names:
                grads = _gradients(reg, [self.prompts[name] for name in tower_names], create_graph=create_graph)
                reg_grads.update(zip(tower_names, grads, strict=True))
        return dict(zip(names, ce_grads, strict=True)), reg_grads

    def _gate_values(self, name: str, ce_grad: Tensor, reg_grad: Tensor) -> Tensor | float:
        if self.gate_mode == "off":
            return 1.0
        if self.gate_mode == "constant":
            return CONSTANT_GATE
        assert self.gate is not None  # checked by build_training_step
        return self.gate(name, ce_grad, reg_grad).to(ce_grad.dtype)

    def _meta_step(self, images: Tensor, labels: Tensor, teacher_image: Tensor, task: VirtualTask,
                   trace: dict[str, Any] | None) -> float:
        """Phase B: inner step on the support items, mixup on the query items, meta update."""
        device = labels.device
        support = torch.tensor(task.support, device=device)
        attention = math_attention() if self.second_order else contextlib.nullcontext()
        with attention:
            # Inner step: θ' = θ − inner_lr · (∇CE + gate ⊙ ∇R) on the support items, graph kept.
            _, inner_ce, inner_text_reg, inner_image_reg = self._losses(
                images[support], labels[support], teacher_image[support])
            ce_grads, reg_grads = self._separate_gradients(
                inner_ce, inner_text_reg, inner_image_reg, create_graph=self.second_order)
            gates = {name: self._gate_values(name, ce_grads[name], reg_grads[name]) for name in self.prompts}
            inner_grads = {name: ce_grads[name] + gates[name] * reg_grads[name] for name in self.prompts}
            fast_prompts = {name: parameter - self.inner_lr * inner_grads[name]
                            for name, parameter in self.prompts.items()}

            # Virtual task: mix final image features of query items and their support partners.
            needed = sorted(set(task.query) | set(task.partners))
            row_of = {batch_index: row for row, batch_index in enumerate(needed)}
            image_features, text_features = self._features(
                images[torch.tensor(needed, device=device)], fast_prompts)  # [n_needed, E], [C, E]
            query_rows = torch.tensor([row_of[i] for i in task.query], device=device)
            partner_rows = torch.tensor([row_of[i] for i in task.partners], device=device)
            lam = torch.tensor(task.lam, device=device, dtype=image_features.dtype)  # [Q]
            mixed = (lam[:, None] * image_features[query_rows]
                     + (1.0 - lam[:, None]) * image_features[partner_rows])  # [Q, E]
            logits = self._logits(mixed, text_features)  # [Q, C]
            query_labels = labels[torch.tensor(task.query, device=device)]
            partner_labels = labels[torch.tensor(task.partners, device=device)]
            query_ce = mixed_cross_entropy(logits, query_labels, partner_labels, lam)
            meta_loss = query_ce * self.meta_loss_scale

            self.prompt_optimizer.zero_grad(set_to_none=True)
            if self.gate_optimizer is not None:
                self.gate_optimizer.zero_grad(set_to_none=True)
            meta_loss.backward()
        if trace is not None:
            trace["phase_b/losses"] = {"ce": inner_ce.detach(), "text_reg": inner_text_reg.detach(),
                                       "image_reg": inner_image_reg.detach()}
            trace["phase_b/gates"] = {name: _as_tensor(gates[name], ce_grads[name]).detach()
                                      for name in self.prompts}
            trace["phase_b/inner_grads"] = _detached(inner_grads)
            trace["phase_b/query_ce"] = query_ce.detach()
            trace["phase_b/meta_loss"] = meta_loss.detach()
            trace["phase_b/meta_grads"] = {name: _grad_or_zeros(parameter)
                                           for name, parameter in self.prompts.items()}
            if self.gate is not None and self.gate_mode == "learned":
                trace["phase_b/gate_grads"] = {name: _grad_or_zeros(parameter)
                                               for name, parameter in self.gate.named_parameters()}
        self.prompt_optimizer.step()
        if self.gate_optimizer is not None and self.gate_mode == "learned":
            self.gate_optimizer.step()
        return meta_loss.item()


# ------------------------------------------------------------------------ helpers

def _gradients(loss: Tensor, parameters: list[Tensor], *, create_graph: bool) -> list[Tensor]:
    """∂loss/∂parameters; zeros where the loss does not depend on a parameter."""
    if not loss.requires_grad:
        return [torch.zeros_like(parameter) for parameter in parameters]
    grads = torch.autograd.grad(loss, parameters, retain_graph=True, create_graph=create_graph,
                                allow_unused=True)
    return [torch.zeros_like(parameter) if grad is None else grad for grad, parameter in zip(grads, parameters, strict=True)]


def _full_precision(features: Tensor) -> Tensor:
    return features.float() if features.dtype in (torch.float16, torch.bfloat16) else features


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


def _metrics(*, loss: float, ce: float, logits: Tensor, labels: Tensor, gate_value: float | None,
             towers: tuple[str, ...], text_reg: float = 0.0, image_reg: float = 0.0) -> dict[str, float]:
    accuracy = (logits.detach().argmax(dim=-1) == labels).float().mean().item() * 100.0
    metrics = {"loss": loss, "ce": ce, "text_reg": text_reg, "image_reg": image_reg, "query": 0.0,
               "meta_skipped": 0.0, "train_acc": accuracy}
    for tower in _TOWERS:
        metrics[f"gate_mean/{tower}"] = gate_value if (gate_value is not None and tower in towers) else 0.0
        metrics[f"gate_std/{tower}"] = 0.0
        metrics[f"grad_cos/{tower}"] = 0.0
    return metrics


__all__ = ["SCHEMES", "METRIC_NAMES", "Scheme", "TrainingStep", "build_training_step"]
