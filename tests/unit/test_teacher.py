"""The frozen teacher (docs/algorithm.md §2): 60-template text ensemble, its disk cache, the image
teacher, and the single-template zero-shot classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from prometar.backbone import load_clip
from prometar.prompts import PromptedCLIP
from prometar.teacher import (
    compute_image_teacher,
    compute_text_teacher,
    compute_zero_shot_weights,
    load_templates,
    teacher_cache_path,
)

SHARED_TEMPLATES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "teacher_templates_60.txt"


@pytest.fixture(scope="module")
def model() -> PromptedCLIP:
    torch.manual_seed(0)
    return PromptedCLIP(load_clip("tiny-test"), text_depth=2, vision_depth=2, text_init=None)


def test_packaged_templates_are_the_official_60_in_order():
    templates = load_templates()
    assert len(templates) == 60
    assert templates[:3] == ["a photo of a {}.", "a bad photo of a {}.", "a photo of many {}."]
    assert all(template.count("{}") == 1 for template in templates)
    if SHARED_TEMPLATES.exists():
        assert templates == load_templates(SHARED_TEMPLATES)


def test_templates_without_a_slot_are_rejected(tmp_path):
    path = tmp_path / "templates.txt"
    path.write_text("a photo of a {}.\na photo.\n")
    with pytest.raises(ValueError, match="template 2"):
        load_templates(path)


def test_text_teacher_is_the_raw_template_mean(model):
    templates = ["a photo of a {}.", "a drawing of the {}.", "itap of a {}."]
    teacher = compute_text_teacher(model, ["golden_retriever", "cat"], templates, classes_per_batch=1)
    assert teacher.shape == (2, model.clip.text_projection.shape[1])
    with torch.no_grad():
        dog = model.encode_plain_text([t.format("golden retriever") for t in templates]).mean(0)
        cat = model.encode_plain_text([t.format("cat") for t in templates]).mean(0)
    assert torch.allclose(teacher, torch.stack([dog, cat]), atol=1e-6)
    assert not teacher.requires_grad
    # Not normalised: a mean of unit-free features keeps its own norm.
    assert not torch.allclose(teacher.norm(dim=-1), torch.ones(2))


def test_text_teacher_ignores_the_prompts(model):
    templates = ["a photo of a {}."]
    before = compute_text_teacher(model, ["cat"], templates)
    with torch.no_grad():
        for parameter in model.prompt_parameters("text").values():
            parameter.add_(1.0)
    try:
        assert torch.equal(before, compute_text_teacher(model, ["cat"], templates))
    finally:
        with torch.no_grad():
            for parameter in model.prompt_parameters("text").values():
                parameter.sub_(1.0)


def test_text_teacher_cache_is_written_once_and_read_back(model, tmp_path, monkeypatch):
    templates = ["a photo of a {}.", "a bad photo of a {}."]
    first = compute_text_teacher(model, ["cat", "dog"], templates, cache_dir=tmp_path, cache_key="tiny|seed0")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [teacher_cache_path(tmp_path, "tiny|seed0", ["cat", "dog"], templates).name]

    def refuse(texts):
        raise AssertionError("the cached teacher should not be recomputed")

    monkeypatch.setattr(model, "encode_plain_text", refuse)
    second = compute_text_teacher(
        model, ["cat", "dog"], templates, cache_dir=tmp_path, cache_key="tiny|seed0"
    )
    assert torch.equal(first, second)
    # Another class list or another backbone is another file.
    assert teacher_cache_path(tmp_path, "tiny|seed0", ["dog", "cat"], templates) != teacher_cache_path(
        tmp_path, "tiny|seed0", ["cat", "dog"], templates
    )
    assert teacher_cache_path(tmp_path, "other", ["cat", "dog"], templates) != teacher_cache_path(
        tmp_path, "tiny|seed0", ["cat", "dog"], templates
    )


def test_cache_needs_a_backbone_key(model, tmp_path):
    with pytest.raises(ValueError, match="cache_key"):
        compute_text_teacher(model, ["cat"], ["a {}."], cache_dir=tmp_path)


def test_image_teacher_is_normalised_unprompted_and_without_gradient(model):
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    teacher = compute_image_teacher(model, images)
    assert not teacher.requires_grad
    assert torch.allclose(teacher.norm(dim=-1), torch.ones(3), atol=1e-6)
    with torch.no_grad():
        plain = F.normalize(model.encode_image(images, use_prompts=False), dim=-1)
        prompted = F.normalize(model.encode_image(images), dim=-1)
    assert torch.allclose(teacher, plain, atol=1e-6)
    assert not torch.allclose(teacher, prompted, atol=1e-4)


def test_zero_shot_weights_use_the_given_template(model):
    weights = compute_zero_shot_weights(model, ["sea_lion", "cat"], "a photo of a {}, a type of animal.")
    with torch.no_grad():
        expected = F.normalize(
            model.encode_plain_text(
                ["a photo of a sea lion, a type of animal.", "a photo of a cat, a type of animal."]
            ),
            dim=-1,
        )
    assert torch.allclose(weights, expected, atol=1e-6)
    with pytest.raises(ValueError):
        compute_zero_shot_weights(model, ["cat"], "a photo")
