"""Evaluation: accuracy, HM, per-class accuracy, class features once per class list."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prometar.evaluation import Evaluator, accuracy
from prometar.protocols import harmonic_mean


class StubModel(nn.Module):
    """Text feature of class c = one-hot(c); image feature = one-hot of the first pixel's value.

    Stands in for ``PromptedCLIP`` with the calls the evaluator makes, and counts text encodings.
    """

    def __init__(self, embed_dim: int = 8) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.scale = nn.Parameter(torch.tensor(1.0), requires_grad=False)
        self.text_calls = 0
        self.plain_texts: list[str] = []
        self.use_prompts_seen: set[bool] = set()
        self.vocab: dict[str, int] = {}

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.scale

    def _index(self, name: str) -> int:
        return self.vocab.setdefault(name, len(self.vocab))

    def tokenize_classnames(self, classnames):
        return torch.tensor([self._index(n) for n in classnames])

    def encode_text(self, tokens, *, use_prompts=True):
        self.text_calls += 1
        return 3.0 * nn.functional.one_hot(tokens, self.embed_dim).float()  # [C, E], unnormalised

    def encode_plain_text(self, texts):
        self.text_calls += 1
        self.plain_texts.extend(texts)
        return nn.functional.one_hot(torch.tensor([self._index(t) for t in texts]), self.embed_dim).float()

    def encode_image(self, images, *, use_prompts=True):
        self.use_prompts_seen.add(use_prompts)
        return 2.0 * nn.functional.one_hot(images[:, 0].long(), self.embed_dim).float()  # [B, E]


def batches(predicted_vocab_ids, labels, size=2):
    images = torch.tensor(predicted_vocab_ids, dtype=torch.float32)[:, None]
    labels = torch.tensor(labels)
    return [(images[i : i + size], labels[i : i + size]) for i in range(0, len(labels), size)]


def test_accuracy_and_harmonic_mean_formulas():
    assert accuracy(3, 4) == 75.0
    assert accuracy(0, 0) == 0.0
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_overall_and_per_class_accuracy():
    model = StubModel()
    evaluator = Evaluator(model)
    classes = ["cat", "dog", "owl"]  # vocab ids 0, 1, 2
    # images predict: 0, 0, 1, 2, 2, 2 ; labels: 0, 1, 1, 2, 2, 0
    result = evaluator.evaluate(batches([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0]), classes)
    assert (result.correct, result.total) == (4, 6)
    assert result.accuracy == pytest.approx(100 * 4 / 6)
    assert result.per_class == {"cat": 50.0, "dog": 50.0, "owl": 100.0}
    assert model.use_prompts_seen == {True}


def test_class_features_are_computed_once_per_class_list():
    model = StubModel()
    evaluator = Evaluator(model)
    base, new = ["cat", "dog"], ["owl", "fox"]
    for _ in range(3):
        evaluator.evaluate(batches([0, 1], [0, 1]), base)
    assert model.text_calls == 1
    evaluator.evaluate(batches([2, 3], [0, 1]), new)
    assert model.text_calls == 2
    features = evaluator.class_features(base)
    assert torch.allclose(features.norm(dim=-1), torch.ones(2))
    evaluator.clear()
    evaluator.class_features(base)
    assert model.text_calls == 3


def test_base_and_new_use_their_own_classifiers():
    model = StubModel()
    evaluator = Evaluator(model)
    base, new = ["cat", "dog"], ["owl", "fox"]  # vocab ids 0, 1 / 2, 3
    # New images (ids 2, 3) labelled 0, 1 within the new class list: all correct with the new-only
    # classifier, whatever the base classes are.
    assert evaluator.evaluate(batches([0, 1], [0, 1]), base).accuracy == 100.0
    assert evaluator.evaluate(batches([2, 3], [0, 1]), new).accuracy == 100.0


def test_zero_shot_uses_the_single_template_and_no_prompts():
    model = StubModel()
    evaluator = Evaluator(model, template="a photo of a {}, a type of pet.")
    evaluator.evaluate(batches([0, 1], [0, 1]), ["basset_hound", "beagle"])
    assert model.plain_texts == [
        "a photo of a basset hound, a type of pet.",
        "a photo of a beagle, a type of pet.",
    ]
    assert model.use_prompts_seen == {False}


def test_out_of_range_labels_are_an_error():
    with pytest.raises(ValueError, match="out of range"):
        Evaluator(StubModel()).evaluate(batches([0, 1], [0, 5]), ["cat", "dog"])


def test_prompted_tiny_clip_end_to_end():
    from prometar.backbone import load_clip
    from prometar.prompts import PromptedCLIP

    torch.manual_seed(0)
    model = PromptedCLIP(load_clip("tiny-test", None), text_depth=1, vision_depth=1)
    images = torch.randn(6, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    result = Evaluator(model).evaluate([(images[:4], labels[:4]), (images[4:], labels[4:])], ["a", "b", "c"])
    text = torch.nn.functional.normalize(
        model.encode_text(model.tokenize_classnames(["a", "b", "c"])), dim=-1
    )
    image = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    expected = int(((image @ text.t()).argmax(-1) == labels).sum())
    assert result.correct == expected and result.total == 6
