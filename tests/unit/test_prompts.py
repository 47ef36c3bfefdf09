"""Deep prompts and the prompted encoders on a tiny CLIP (4 blocks per tower, width 32, embed 24)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from prometar.backbone import Backbone, load_clip
from prometar.prompts import (
    DeepPrompts,
    PromptedCLIP,
    freeze_except_prompts,
    math_attention,
    trainable_parameter_names,
)

CLASSNAMES = ["red_star", "blue circle", "green", "a very long class name with many words"]


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    torch.manual_seed(0)
    return load_clip("tiny-test")


@pytest.fixture()
def model(backbone: Backbone) -> PromptedCLIP:
    torch.manual_seed(1)
    return PromptedCLIP(backbone, text_depth=3, vision_depth=2)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def _perturb(parameter: torch.nn.Parameter) -> None:
    with torch.no_grad():
        parameter.add_(torch.randn_like(parameter))


# ---------------------------------------------------------------- DeepPrompts


def test_deep_prompts_shapes_and_initialisation():
    torch.manual_seed(0)
    init = torch.arange(12.0).reshape(3, 4)
    prompts = DeepPrompts(n_tokens=3, width=4, depth=5, block0_init=init, std=0.02)
    assert len(prompts.blocks) == 5
    assert all(block.shape == (3, 4) and block.requires_grad for block in prompts.blocks)
    assert torch.equal(prompts.blocks[0].detach(), init)
    init.zero_()  # the prompt owns a copy
    assert prompts.blocks[0].detach().abs().sum() > 0
    wide = DeepPrompts(n_tokens=64, width=512, depth=2, std=0.02)
    assert wide.blocks[1].std().item() == pytest.approx(0.02, rel=0.05)
    assert abs(wide.blocks[1].mean().item()) < 0.002
    assert not torch.equal(wide.blocks[0], wide.blocks[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_tokens": 0, "width": 4, "depth": 1}, "n_tokens=0"),
        ({"n_tokens": 2, "width": 4, "depth": 0}, "depth=0"),
        ({"n_tokens": 2, "width": 4, "depth": 1, "std": 0.0}, "std=0.0"),
        (
            {"n_tokens": 2, "width": 4, "depth": 1, "block0_init": torch.zeros(3, 4)},
            r"shape \(3, 4\), expected \(2, 4\)",
        ),
    ],
)
def test_deep_prompts_reject_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepPrompts(**kwargs)


# ------------------------------------------------------------- construction


def test_exactly_the_prompts_are_trainable(model: PromptedCLIP):
    expected = [f"text_prompts.blocks.{i}" for i in range(3)] + [
        f"vision_prompts.blocks.{i}" for i in range(2)
    ]
    assert trainable_parameter_names(model) == expected
    assert list(model.prompt_parameters("text")) == expected[:3]
    assert list(model.prompt_parameters("vision")) == expected[3:]
    named = dict(model.named_parameters())
    assert all(named[name] is p for name, p in model.prompt_parameters("text").items())
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    freeze_except_prompts(model)
    assert trainable_parameter_names(model) == expected


def test_prompt_designs_coop_and_vpt(backbone: Backbone):
    coop = PromptedCLIP(backbone, text_depth=1, vision_depth=0)
    assert trainable_parameter_names(coop) == ["text_prompts.blocks.0"]
    assert coop.vision_prompts is None and coop.prompt_parameters("vision") == {}
    vpt = PromptedCLIP(backbone, text_depth=0, vision_depth=4, vision_tokens=2)
    assert trainable_parameter_names(vpt) == [f"vision_prompts.blocks.{i}" for i in range(4)]
    assert vpt.vision_prompts.blocks[0].shape == (2, 32)
    with pytest.raises(ValueError, match="tower 'audio'"):
        vpt.prompt_parameters("audio")


def test_design_errors_name_the_argument(backbone: Backbone):
    with pytest.raises(ValueError, match=r"text_depth=9: expected an integer in 0..4"):
        PromptedCLIP(backbone)  # the default depth 9 needs 9 blocks
    with pytest.raises(ValueError, match=r"vision_tokens=0"):
        PromptedCLIP(backbone, text_depth=1, vision_depth=1, vision_tokens=0)
    with pytest.raises(ValueError, match=r"text_init 'a photo' is 2 tokens long but text_tokens=4"):
        PromptedCLIP(backbone, text_depth=1, vision_depth=0, text_init="a photo")


def test_text_block0_starts_from_the_phrase_embedding(backbone: Backbone, model: PromptedCLIP):
    tokens = backbone.tokenizer(["a photo of a"])[0, 1:5]
    assert torch.equal(model.text_prompts.blocks[0].detach(), backbone.model.token_embedding.weight[tokens])
    random_start = PromptedCLIP(backbone, text_depth=1, vision_depth=0, text_init=None)
    assert not torch.equal(
        random_start.text_prompts.blocks[0].detach(), model.text_prompts.blocks[0].detach()
    )


def test_logit_scale_is_exp_and_frozen(model: PromptedCLIP):
    assert model.logit_scale.item() == pytest.approx(model.clip.logit_scale.exp().item())
    assert not model.logit_scale.requires_grad and model.logit_scale.ndim == 0


def test_training_mode_never_reaches_the_frozen_clip(model: PromptedCLIP):
    model.train()
    assert model.training and not model.clip.training
    assert not any(module.training for module in model.clip.modules())


# ----------------------------------------------------------------- tokens


def test_class_names_become_prompt_slots_name_and_period(backbone: Backbone, model: PromptedCLIP):
    tokens = model.tokenize_classnames(["red_star"])
    expected = backbone.tokenizer(["a photo of a red star."])
    assert torch.equal(tokens, expected)
    placeholder = PromptedCLIP(backbone, text_depth=1, vision_depth=0, text_init=None)
    assert torch.equal(
        placeholder.tokenize_classnames(["red_star"]), backbone.tokenizer(["X X X X red star."])
    )
    with pytest.raises(ValueError, match="empty class list"):
        model.tokenize_classnames([])


# ---------------------------------------------------------------- encoders


def test_without_prompts_the_encoders_are_plain_clip(backbone: Backbone, model: PromptedCLIP, images):
    tokens = model.tokenize_classnames(CLASSNAMES)
    with torch.no_grad():
        image_features, text_features = model(images, tokens, use_prompts=False)
        torch.testing.assert_close(image_features, backbone.model.encode_image(images), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(text_features, backbone.model.encode_text(tokens), rtol=1e-5, atol=1e-5)
        plain = model.encode_plain_text(["a photo of a cat.", "a dog."])
        reference = backbone.model.encode_text(backbone.tokenizer(["a photo of a cat.", "a dog."]))
        torch.testing.assert_close(plain, reference, rtol=1e-5, atol=1e-5)


def test_forward_shapes_and_missing_inputs(model: PromptedCLIP, images):
    tokens = model.tokenize_classnames(CLASSNAMES)
    image_features, text_features = model(images, tokens)
    assert image_features.shape == (3, 24) and text_features.shape == (4, 24)
    assert model(images)[1] is None and model(text_tokens=tokens)[0] is None


def test_prompts_change_only_their_own_tower(model: PromptedCLIP, images):
    tokens = model.tokenize_classnames(CLASSNAMES)
    with torch.no_grad():
        image_before, text_before = model(images, tokens)
        _perturb(model.vision_prompts.blocks[1])
        image_after, text_after = model(images, tokens)
    assert torch.equal(text_before, text_after)
    assert (image_before - image_after).abs().max() > 1e-3
    with torch.no_grad():
        _perturb(model.text_prompts.blocks[2])
        image_again, text_again = model(images, tokens)
    assert torch.equal(image_after, image_again)
    assert (text_after - text_again).abs().max() > 1e-3


def test_every_prompt_block_receives_gradient(model: PromptedCLIP, images):
    tokens = model.tokenize_classnames(CLASSNAMES)
    image_features, text_features = model(images, tokens)
    logits = F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    F.cross_entropy(logits * model.logit_scale, torch.tensor([0, 1, 2])).backward()
    for name, parameter in [
        *model.prompt_parameters("text").items(),
        *model.prompt_parameters("vision").items(),
    ]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.clip.parameters())


def test_text_prompts_replace_the_slot_tokens(backbone: Backbone, model: PromptedCLIP):
    # The tokens in the prompt slots are overwritten, not shifted: their content cannot matter.
    slots = model.tokenize_classnames(["red star"])
    other = backbone.tokenizer(["one two three four red star."])
    assert slots.argmax(-1) == other.argmax(-1)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(slots), model.encode_text(other), rtol=0, atol=0)
        assert not torch.equal(
            model.encode_text(slots, use_prompts=False), model.encode_text(other, use_prompts=False)
        )


def test_deep_prompts_are_replaced_before_their_block(model: PromptedCLIP, images):
    # Block i's prompt sits in the sequence entering block i: capture the inputs and look.
    vision_inputs, text_inputs = [], []
    hooks = [
        model.clip.visual.transformer.resblocks[1].register_forward_pre_hook(
            lambda module, args: vision_inputs.append(args[0])
        ),
        model.clip.transformer.resblocks[2].register_forward_pre_hook(
            lambda module, args, kwargs: text_inputs.append(args[0]), with_kwargs=True
        ),
    ]
    try:
        with torch.no_grad():
            model(images, model.tokenize_classnames(CLASSNAMES))
    finally:
        for hook in hooks:
            hook.remove()
    if model.sequence_first_blocks:  # blocks take [L, N, width] (PromptedCLIP._run_block)
        vision_inputs, text_inputs = (
            [x.transpose(0, 1) for x in vision_inputs],
            [x.transpose(0, 1) for x in text_inputs],
        )
    vision_prompt = model.vision_prompts.blocks[1].detach()
    assert vision_inputs[0].shape == (3, 1 + 16 + 4, 32)  # CLS + 4x4 patches + 4 prompts
    assert torch.equal(vision_inputs[0][:, -4:], vision_prompt.expand(3, -1, -1))
    text_prompt = model.text_prompts.blocks[2].detach()
    assert torch.equal(text_inputs[0][:, 1:5], text_prompt.expand(4, -1, -1))


def test_truncated_text_is_exact_and_shorter(backbone: Backbone, model: PromptedCLIP):
    tokens = model.tokenize_classnames(CLASSNAMES)
    lengths = []
    hook = model.clip.transformer.resblocks[0].register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(args[0].shape[0 if model.sequence_first_blocks else 1]),
        with_kwargs=True,
    )  # blocks take [L, N, width] when run sequence-first (PromptedCLIP._run_block)
    full = PromptedCLIP(backbone, text_depth=3, vision_depth=2, truncate_text=False)
    full.load_state_dict(model.state_dict())
    try:
        with torch.no_grad():
            short_features = model.encode_text(tokens)
            full_features = full.encode_text(tokens)
    finally:
        hook.remove()
    assert lengths == [int(tokens.argmax(-1).max()) + 1, 77]
    torch.testing.assert_close(short_features, full_features, rtol=1e-5, atol=1e-6)


def test_functional_call_swaps_prompts_for_fast_weights(model: PromptedCLIP, images):
    tokens = model.tokenize_classnames(CLASSNAMES)
    params = {**model.prompt_parameters("text"), **model.prompt_parameters("vision")}
    fast = {name: (p * 0.5).detach().requires_grad_(True) for name, p in params.items()}
    image_fast, text_fast = functional_call(model, fast, (images, tokens))
    (image_fast.sum() + text_fast.sum()).backward()
    assert all(fast[name].grad is not None and fast[name].grad.abs().sum() > 0 for name in fast)
    assert all(p.grad is None for p in params.values())
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(fast[name])
    image_copy, text_copy = model(images, tokens)  # with autograd on, as the fast-weight call ran
    torch.testing.assert_close(image_fast, image_copy, rtol=0, atol=0)
    torch.testing.assert_close(text_fast, text_copy, rtol=0, atol=0)


def test_second_order_gradients_flow_through_math_attention(model: PromptedCLIP, images):
    tokens = model.tokenize_classnames(CLASSNAMES)
    params = {**model.prompt_parameters("text"), **model.prompt_parameters("vision")}
    labels = torch.tensor([0, 1, 3])
    with math_attention():
        image_features, text_features = model(images, tokens)
        logits = (
            model.logit_scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
        )
        grads = torch.autograd.grad(F.cross_entropy(logits, labels), list(params.values()), create_graph=True)
        fast = {name: p - 0.1 * g for (name, p), g in zip(params.items(), grads, strict=True)}
        image_fast, text_fast = functional_call(model, fast, (images, tokens))
        query = model.logit_scale * F.normalize(image_fast, dim=-1) @ F.normalize(text_fast, dim=-1).T
        F.cross_entropy(query, labels).backward()
    first_order = {name: g for name, g in zip(params, grads, strict=True)}
    for name, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert any(not torch.allclose(params[n].grad, first_order[n]) for n in params)


def test_bf16_autocast_runs_and_stays_close(model: PromptedCLIP, images):
    tokens = model.tokenize_classnames(CLASSNAMES)
    with torch.no_grad():
        image_fp32, text_fp32 = model(images, tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            image_bf16, text_bf16 = model(images, tokens)
    assert F.cosine_similarity(image_bf16.float(), image_fp32).min() > 0.99
    assert F.cosine_similarity(text_bf16.float(), text_fp32).min() > 0.99
