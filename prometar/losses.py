"""The method's loss terms (docs/algorithm.md §2 and §4): cross-entropy, mixed cross-entropy of the
virtual tasks, and the two L1 regularisers towards the frozen teacher.

Every function returns the *unweighted* term; the regulariser weights (50 and 20 in the official
run) are applied by the caller from the run config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of class logits.

    Args:
        logits: ``[B, C]`` class logits.
        labels: ``[B]`` integer labels in ``[0, C)``.

    Returns:
        Scalar mean over the batch, computed in float32 (or the logits' wider dtype).
    """
    return F.cross_entropy(_at_least_float32(logits), labels)


def mixed_cross_entropy(logits: Tensor, labels_a: Tensor, labels_b: Tensor, lam: Tensor) -> Tensor:
    """Cross-entropy of mixed samples: per item ``λ·CE(y_a) + (1 − λ)·CE(y_b)``, then the mean.

    Args:
        logits: ``[Q, C]`` logits of the mixed items.
        labels_a: ``[Q]`` labels of the first mixed component (the query items).
        labels_b: ``[Q]`` labels of the second component (the support partners).
        lam: ``[Q]`` mixing coefficients, the weight of component a.

    Returns:
        Scalar mean over the ``Q`` items.
    """
    logits = _at_least_float32(logits)
    lam = lam.to(logits.dtype)
    loss_a = F.cross_entropy(logits, labels_a, reduction="none")  # [Q]
    loss_b = F.cross_entropy(logits, labels_b, reduction="none")  # [Q]
    return (lam * loss_a + (1.0 - lam) * loss_b).mean()


def text_regularizer(student_text: Tensor, teacher_text: Tensor) -> Tensor:
    """R_text: mean absolute difference of the L2-normalised class text features.

    Args:
        student_text: ``[C, E]`` prompted text features (normalised here).
        teacher_text: ``[C, E]`` teacher text features, e.g. the raw 60-template mean (normalised
            here; normalising already-normalised features changes nothing).

    Returns:
        Scalar mean over ``C × E`` values.
    """
    return _normalised_l1(student_text, teacher_text)


def image_regularizer(student_image: Tensor, teacher_image: Tensor) -> Tensor:
    """R_image: mean absolute difference of the L2-normalised image features.

    Args:
        student_image: ``[B, E]`` prompted image features (normalised here).
        teacher_image: ``[B, E]`` unprompted CLIP features of the same images (normalised here).

    Returns:
        Scalar mean over ``B × E`` values.
    """
    return _normalised_l1(student_image, teacher_image)


def _normalised_l1(student: Tensor, teacher: Tensor) -> Tensor:
    if student.shape != teacher.shape:
        raise ValueError(
            f"student features {tuple(student.shape)} and teacher features "
            f"{tuple(teacher.shape)} differ in shape"
        )
    student = F.normalize(_at_least_float32(student), dim=-1)
    teacher = F.normalize(teacher.to(student.dtype), dim=-1)
    return (student - teacher.detach()).abs().mean()


def _at_least_float32(tensor: Tensor) -> Tensor:
    """Low-precision (bf16/fp16) inputs are promoted so that losses are computed in float32."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor
