"""Parity of the backbone and prompted encoders with the published implementation's recorded step.

The reference (``fixtures/parity/tiny_step_reference.json``) was produced by the published code
on a tiny random CLIP with fixed prompts and batch. Phase A's logits and losses depend only on the
backbone, the prompted encoders and the teacher's text features, so they pin this part of the
method: weights loading, prompt placement in both towers, class-name tokens, EOS pooling.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from parity_model import (
    build_parity_model,
    build_state_dict,
    load_reference,
    parity_batch,
    prompt_draw_order,
    published_prompt_name,
    state_dict_sha256,
)

from prometar.prompts import PromptedCLIP
from prometar.teacher import load_templates

pytestmark = pytest.mark.parity

RTOL = 1e-5


@pytest.fixture(scope="module")
def reference() -> dict:
    return load_reference()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> PromptedCLIP:
    return build_parity_model(
        Path(tmp_path_factory.mktemp("parity")) / "parity_tiny_openai.pt", openai_metadata=True
    )


def test_recipe_weights_match_the_reference_checksum(reference, model: PromptedCLIP):
    expected = reference["runs"]["official_lr"]["state_dict_sha256"]
    assert state_dict_sha256(build_state_dict()) == expected
    # ... and they arrive in the model unchanged (fp32, no fp16 round trip on loading).
    assert state_dict_sha256(model.clip.state_dict()) == expected


def test_prompts_and_batch_are_the_reference_inputs(reference, model: PromptedCLIP):
    run = reference["runs"]["official_lr"]
    prompts = {**model.prompt_parameters("text"), **model.prompt_parameters("vision")}
    assert len(prompts) == len(run["prompt_names"])
    for name in prompt_draw_order():
        published = published_prompt_name(name)
        assert list(prompts[name].shape) == run["prompt_shapes"][published]
        torch.testing.assert_close(
            prompts[name].detach().flatten()[:5],
            torch.tensor(run["init_prompt_first5"][published]),
            rtol=0,
            atol=0,
        )
    images, labels = parity_batch()
    torch.testing.assert_close(images.flatten()[:5], torch.tensor(run["image_first5"]), rtol=0, atol=0)
    assert labels.tolist() == reference["config"]["labels"]


@pytest.fixture(scope="module")
def phase_a(reference, model: PromptedCLIP) -> dict[str, torch.Tensor]:
    images, labels = parity_batch()
    classnames = reference["config"]["classnames"]
    with torch.no_grad():
        image_features, text_features = model(images, model.tokenize_classnames(classnames))
        teacher = torch.stack(
            [
                model.encode_plain_text([t.format(name) for t in load_templates()]).mean(dim=0)
                for name in classnames
            ]
        )  # [C, E] raw mean over the 60 templates
        plain_image = model.encode_image(images, use_prompts=False)
    image_n, text_n = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    logits = model.logit_scale * image_n @ text_n.T
    return {
        "logits": logits,
        "ce": F.cross_entropy(logits, labels),
        "text_reg": 50 * (text_n - F.normalize(teacher, dim=-1)).abs().mean(),
        "image_reg": 20 * (image_n - F.normalize(plain_image, dim=-1)).abs().mean(),
        "teacher": teacher,
    }


@pytest.mark.parametrize("run", ["official_lr", "forced_lr_prompts_0.0025_gate_0.00025"])
def test_prompted_logits_match_the_published_implementation(reference, phase_a, run):
    expected = torch.tensor(reference["runs"][run]["phaseA_logits"])
    torch.testing.assert_close(phase_a["logits"], expected, rtol=RTOL, atol=1e-5)


def test_teacher_text_features_match(reference, phase_a):
    run = reference["runs"]["official_lr"]
    teacher = phase_a["teacher"]
    torch.testing.assert_close(
        teacher[0, :5], torch.tensor(run["fixed_embeddings_first5"]), rtol=RTOL, atol=1e-6
    )
    torch.testing.assert_close(
        teacher.norm(dim=-1),
        torch.tensor(run["fixed_embeddings_row_norms"], dtype=torch.float32),
        rtol=RTOL,
        atol=0,
    )


def test_phase_a_losses_match(reference, phase_a):
    losses = reference["runs"]["official_lr"]["phaseA_losses"]
    for key in ("ce", "text_reg", "image_reg"):
        assert phase_a[key].item() == pytest.approx(losses[key], rel=RTOL), key
