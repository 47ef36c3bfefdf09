"""The loss terms of docs/algorithm.md §2 and §4: CE, mixed CE, and the two L1 regularisers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prometar.losses import cross_entropy, image_regularizer, mixed_cross_entropy, text_regularizer


def test_cross_entropy_is_the_batch_mean():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, 2])
    expected = (-torch.log_softmax(logits, -1)[0, 0] - torch.log_softmax(logits, -1)[1, 2]) / 2
    assert torch.allclose(cross_entropy(logits, labels), expected)


def test_mixed_cross_entropy_mixes_per_item_then_averages():
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    labels_a, labels_b = torch.tensor([0, 1]), torch.tensor([1, 2])
    lam = torch.tensor([0.3, 0.8])
    per_a = F.cross_entropy(logits, labels_a, reduction="none")
    per_b = F.cross_entropy(logits, labels_b, reduction="none")
    expected = (lam * per_a + (1 - lam) * per_b).mean()
    assert torch.allclose(mixed_cross_entropy(logits, labels_a, labels_b, lam), expected)
    # Mixing the batch means with the mean λ would give a different number here.
    wrong = lam.mean() * per_a.mean() + (1 - lam.mean()) * per_b.mean()
    assert not torch.allclose(expected, wrong)


def test_mixed_cross_entropy_limits_are_plain_cross_entropy():
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    labels_a, labels_b = torch.tensor([0, 1, 2]), torch.tensor([4, 3, 2])
    assert torch.allclose(
        mixed_cross_entropy(logits, labels_a, labels_b, torch.ones(3)), cross_entropy(logits, labels_a)
    )
    assert torch.allclose(
        mixed_cross_entropy(logits, labels_a, labels_b, torch.zeros(3)), cross_entropy(logits, labels_b)
    )


def test_regularizers_are_mean_l1_of_normalised_features():
    student = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[0.0, 5.0], [0.0, 0.5]])
    # Row 0: |(1, 0) - (0, 1)| = (1, 1); row 1: identical directions -> 0. Mean over 4 values.
    assert text_regularizer(student, teacher).item() == pytest.approx(0.5)
    assert image_regularizer(student, teacher).item() == pytest.approx(0.5)


def test_regularizers_ignore_feature_scale_and_pass_gradient_to_the_student_only():
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(4, 8, generator=generator, requires_grad=True)
    teacher = torch.randn(4, 8, generator=generator, requires_grad=True)
    value = text_regularizer(student, teacher)
    assert torch.allclose(value, text_regularizer(student * 7.0, teacher * 0.1))
    value.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_regularizer_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        image_regularizer(torch.randn(4, 8), torch.randn(3, 8))


def test_low_precision_inputs_give_float32_losses():
    logits = torch.randn(2, 3).to(torch.bfloat16)
    assert cross_entropy(logits, torch.tensor([0, 1])).dtype == torch.float32
    features = torch.randn(2, 4).to(torch.bfloat16)
    assert text_regularizer(features, torch.randn(2, 4)).dtype == torch.float32
