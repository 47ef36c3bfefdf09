"""The exact fast path of training and evaluation (docs/benchmarks.md, "Fast path").

Each shortcut the training core takes is checked two ways: it is in place (counted tower passes,
no graph where none is needed, no copy of the frozen CLIP), and it does not change results (the
ProMetaR step against a plain reference computation that takes none of the shortcuts).
"Same result" means equal up to float32 rounding: shorter sequences and smaller batches change
the order of floating-point sums, by ~1e-7 relative per step here.
Also: the GPU backend flags (``configure_backends``), ``benchmarks/gpu_check.sh`` refusing to run
without CUDA, and the class-name lists the benchmarks read.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

from prometar.backbone import load_clip
from prometar.backends import configure_backends
from prometar.config import resolve_config
from prometar.evaluation import Evaluator
from prometar.losses import cross_entropy, image_regularizer, mixed_cross_entropy, text_regularizer
from prometar.meta import GateNetwork, VirtualTask
from prometar.prompts import PromptedCLIP, math_attention
from prometar.steps.prometar import ProMetaRStep
from prometar.teacher import compute_text_teacher, load_templates

# Names of different token lengths, so that truncation cuts a ragged batch.
CLASSNAMES = ["cat", "sea_lion", "golden retriever puppy", "shop bakery", "dog"]
TEXT_WEIGHT, IMAGE_WEIGHT, INNER_LR, META_SCALE = 50.0, 20.0, 5e-4, 5e-4
TASK = VirtualTask(query=(0,), support=(1, 2, 3), lam=(0.3,), partners=(2,))


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return load_clip("tiny-test")


def build(backbone, *, truncate_text: bool = True, sequence_first: bool = True, seed: int = 0):
    """A prompted model, its gate, SGD optimisers as in the official run, a teacher and a batch."""
    torch.manual_seed(seed)
    model = PromptedCLIP(backbone, text_depth=3, vision_depth=3, truncate_text=truncate_text)
    model.sequence_first_blocks = sequence_first
    prompts = {**model.prompt_parameters("text"), **model.prompt_parameters("vision")}
    gate = GateNetwork({name: tuple(t.shape) for name, t in prompts.items()}, reduction=8)
    prompt_optimizer = torch.optim.SGD(list(prompts.values()), lr=0.01, momentum=0.9, weight_decay=5e-4)
    gate_optimizer = torch.optim.SGD(gate.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    teacher = compute_text_teacher(model, CLASSNAMES, load_templates()[:5])
    generator = torch.Generator().manual_seed(seed + 1)
    images = torch.randn(4, 3, 32, 32, generator=generator)  # [B, 3, S, S]
    labels = torch.tensor([0, 1, 2, 4])
    return model, prompts, gate, prompt_optimizer, gate_optimizer, teacher, images, labels


def fast_step(model, gate, prompt_optimizer, gate_optimizer, teacher):
    return ProMetaRStep(
        model,
        prompt_optimizer,
        class_tokens=model.tokenize_classnames(CLASSNAMES),
        teacher_text=teacher,
        text_weight=TEXT_WEIGHT,
        image_weight=IMAGE_WEIGHT,
        gate=gate,
        gate_optimizer=gate_optimizer,
        inner_lr=INNER_LR,
        meta_loss_scale=META_SCALE,
    )


def reference_step(
    model, prompts, gate, prompt_optimizer, gate_optimizer, teacher, images, labels, task
) -> dict[str, float]:
    """ProMetaR's iteration (docs/algorithm.md §4) computed plainly, without any of the shortcuts:

    the image teacher is re-encoded for the support images in phase B, the phase-A gate is
    evaluated with autograd on (its output then detached), every gradient is a separate
    ``torch.autograd.grad`` call, query and partner images are encoded separately, and the model
    given is built with ``truncate_text=False`` and ``sequence_first_blocks=False``.
    """
    tokens = model.tokenize_classnames(CLASSNAMES)
    names = list(prompts)
    text_names = [name for name in names if name.startswith("text")]
    vision_names = [name for name in names if name.startswith("vision")]

    def losses(batch, batch_labels, fast=None):
        if fast is None:
            image, text = model(batch, tokens)
        else:
            image, text = torch.func.functional_call(model, fast, (batch, tokens))
        with torch.no_grad():
            teacher_image = torch.nn.functional.normalize(
                model.encode_image(batch, use_prompts=False), dim=-1
            )
        logits = model.logit_scale * (
            torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).t()
        )
        return (
            logits,
            cross_entropy(logits, batch_labels),
            TEXT_WEIGHT * text_regularizer(text, teacher),
            IMAGE_WEIGHT * image_regularizer(image, teacher_image),
        )

    def grads(loss, wanted, create_graph):
        return dict(
            zip(
                wanted,
                torch.autograd.grad(
                    loss, [prompts[n] for n in wanted], retain_graph=True, create_graph=create_graph
                ),
                strict=True,
            )
        )

    logits, ce, text_reg, image_reg = losses(images, labels)
    ce_grads = grads(ce, names, False)
    reg_grads = {**grads(text_reg, text_names, False), **grads(image_reg, vision_names, False)}
    gates = {name: gate(name, ce_grads[name], reg_grads[name]).detach() for name in names}  # graph built
    prompt_optimizer.zero_grad(set_to_none=True)
    for name in names:
        prompts[name].grad = ce_grads[name] + gates[name] * reg_grads[name]
    prompt_optimizer.step()
    metrics = {
        "loss": (ce + text_reg + image_reg).item(),
        "ce": ce.item(),
        "text_reg": text_reg.item(),
        "image_reg": image_reg.item(),
        "train_acc": (logits.argmax(-1) == labels).float().mean().item() * 100.0,
    }

    support = torch.tensor(task.support)
    with math_attention():
        _, inner_ce, inner_text, inner_image = losses(images[support], labels[support])
        ce_grads = grads(inner_ce, names, True)
        reg_grads = {**grads(inner_text, text_names, True), **grads(inner_image, vision_names, True)}
        fast = {
            name: prompts[name]
            - INNER_LR * (ce_grads[name] + gate(name, ce_grads[name], reg_grads[name]) * reg_grads[name])
            for name in names
        }
        query, partners = torch.tensor(task.query), torch.tensor(task.partners)
        image_q, text = torch.func.functional_call(model, fast, (images[query], tokens))
        image_p, _ = torch.func.functional_call(model, fast, (images[partners], tokens))
        lam = torch.tensor(task.lam)
        mixed = lam[:, None] * image_q + (1 - lam[:, None]) * image_p  # [Q, E]
        logits = model.logit_scale * (
            torch.nn.functional.normalize(mixed, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).t()
        )
        meta_loss = mixed_cross_entropy(logits, labels[query], labels[partners], lam) * META_SCALE
        prompt_optimizer.zero_grad(set_to_none=True)
        gate_optimizer.zero_grad(set_to_none=True)
        meta_loss.backward()
    prompt_optimizer.step()
    gate_optimizer.step()
    metrics["query"] = meta_loss.item()
    return metrics


# ------------------------------------------------------------------------------ exactness


def test_fast_step_equals_the_plain_reference_computation(backbone):
    fast = build(backbone, truncate_text=True)
    reference = build(backbone, truncate_text=False, sequence_first=False)
    step = fast_step(fast[0], fast[2], fast[3], fast[4], fast[5])
    for _ in range(3):  # optimiser momentum carried over: the states must stay equal too
        got = step.step(fast[6], fast[7], TASK)
        want = reference_step(*reference[:6], reference[6], reference[7], TASK)
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
        for name, prompt in fast[1].items():
            torch.testing.assert_close(prompt, reference[1][name], rtol=1e-5, atol=2e-6)
        for weight, other in zip(fast[2].parameters(), reference[2].parameters(), strict=True):
            torch.testing.assert_close(weight, other, rtol=1e-5, atol=1e-9)


def assert_same_training_step(backbone, option: str) -> None:
    """One ProMetaR step with ``build(..., option=True)`` and with ``False``: same metrics and prompts."""
    results = []
    for value in (True, False):
        model, prompts, gate, prompt_optimizer, gate_optimizer, teacher, images, labels = build(
            backbone, **{option: value}
        )
        metrics = fast_step(model, gate, prompt_optimizer, gate_optimizer, teacher).step(images, labels, TASK)
        results.append((metrics, {name: p.detach().clone() for name, p in prompts.items()}))
    (on, on_prompts), (off, off_prompts) = results
    assert on == pytest.approx(off, rel=1e-5, abs=1e-7)
    for name in on_prompts:
        torch.testing.assert_close(on_prompts[name], off_prompts[name], rtol=1e-5, atol=2e-6)


def test_truncation_does_not_change_a_training_step(backbone):
    assert_same_training_step(backbone, "truncate_text")


def test_sequence_first_blocks_give_the_same_features_and_restore_the_attention(backbone):
    model = PromptedCLIP(backbone, text_depth=3, vision_depth=3)
    assert model.sequence_first_blocks
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    tokens = model.tokenize_classnames(CLASSNAMES)
    fast = model(images, tokens)
    model.sequence_first_blocks = False
    plain = model(images, tokens)
    for got, want in zip(fast, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    attentions = [
        block.attn
        for tower in (model.clip.transformer, model.clip.visual.transformer)
        for block in tower.resblocks
    ]
    assert all(attention.batch_first for attention in attentions)
    model.sequence_first_blocks = True
    with pytest.raises(RuntimeError):
        model.encode_image(torch.randn(2, 3, 31, 31))  # wrong size: fails inside the blocks
    assert all(attention.batch_first for attention in attentions)


def test_sequence_first_blocks_do_not_change_a_training_step(backbone):
    assert_same_training_step(backbone, "sequence_first")


def test_truncation_is_on_by_default_and_cuts_the_sequence(backbone):
    assert resolve_config("official", {"data.dataset": "eurosat"}).prompts.truncate_text is True
    model = PromptedCLIP(backbone, text_depth=3, vision_depth=3)
    assert model.truncate_text
    tokens = model.tokenize_classnames(CLASSNAMES)  # [C, 77]
    seen = []
    handle = model.clip.token_embedding.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].shape[1])
    )  # the token ids the tower embeds
    try:
        model.encode_text(tokens)
    finally:
        handle.remove()
    assert seen == [int(model._eos_positions(tokens).max()) + 1] and seen[0] < tokens.shape[1]


# ------------------------------------------------------------------------ shortcuts in place


class PassCounter:
    """Counts the calls of the model's tower encoders, by tower and prompted / unprompted."""

    def __init__(self, model: PromptedCLIP) -> None:
        self.calls: list[tuple[str, bool, int]] = []
        for tower in ("image", "text"):
            original = getattr(model, f"encode_{tower}")

            def counted(inputs, *, use_prompts=True, _tower=tower, _original=original):
                self.calls.append((_tower, use_prompts, inputs.shape[0]))
                return _original(inputs, use_prompts=use_prompts)

            setattr(model, f"encode_{tower}", counted)

    def count(self, tower: str, prompted: bool) -> int:
        return sum(1 for t, p, _ in self.calls if t == tower and p == prompted)


def test_prometar_step_encodes_each_thing_once(backbone):
    model, _, gate, prompt_optimizer, gate_optimizer, teacher, images, labels = build(backbone)
    step = fast_step(model, gate, prompt_optimizer, gate_optimizer, teacher)
    counter = PassCounter(model)
    step.step(images, labels, TASK)
    # The frozen image teacher: once per step, for the whole batch (phase B reuses its rows).
    assert [c for c in counter.calls if c[:2] == ("image", False)] == [("image", False, 4)]
    # The text teacher is precomputed: the unprompted text tower never runs in a step.
    assert counter.count("text", False) == 0
    # Prompted passes: phase A (θ), the inner step (θ after phase A), the query (fast weights θ').
    # Each pass encodes the class texts once; the query pass encodes query and partners together.
    assert counter.count("text", True) == 3
    assert [n for t, p, n in counter.calls if t == "image" and p] == [4, 3, 2]


def test_no_copy_of_the_frozen_clip_and_only_prompts_are_fast_weights(backbone):
    model, prompts, gate, prompt_optimizer, gate_optimizer, teacher, images, labels = build(backbone)
    step = fast_step(model, gate, prompt_optimizer, gate_optimizer, teacher)
    frozen = {name: (p.data_ptr(), p.detach().clone()) for name, p in model.clip.named_parameters()}
    swapped: list[set[str]] = []
    real_call = torch.func.functional_call

    def spy(module, parameters, *args, **kwargs):
        swapped.append(set(parameters))
        return real_call(module, parameters, *args, **kwargs)

    with (
        mock.patch.object(copy, "deepcopy", side_effect=AssertionError("deepcopy during a step")),
        mock.patch("prometar.steps.base.functional_call", spy),
    ):
        step.step(images, labels, TASK)
    assert swapped == [set(prompts)]
    for name, parameter in model.clip.named_parameters():
        assert parameter.data_ptr() == frozen[name][0] and parameter.grad is None, name
        assert torch.equal(parameter, frozen[name][1]), name


def test_phase_a_gate_runs_without_autograd_and_phase_b_with_it(backbone):
    model, prompts, gate, prompt_optimizer, gate_optimizer, teacher, images, labels = build(backbone)
    step = fast_step(model, gate, prompt_optimizer, gate_optimizer, teacher)
    grad_enabled: list[bool] = []
    handles = [
        gate.network(name).register_forward_hook(
            lambda module, args, output: grad_enabled.append(output.requires_grad)
        )
        for name in prompts
    ]
    try:
        step.step(images, labels, TASK)
    finally:
        for handle in handles:
            handle.remove()
    n = len(prompts)
    assert grad_enabled == [False] * n + [True] * n  # phase A: no graph; phase B: second order


def test_evaluator_encodes_each_class_list_once(backbone):
    model = PromptedCLIP(backbone, text_depth=3, vision_depth=3)
    evaluator = Evaluator(model)
    counter = PassCounter(model)
    batches = [(torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])) for _ in range(4)]
    first = evaluator.evaluate(batches, CLASSNAMES)
    second = evaluator.evaluate(batches, CLASSNAMES)
    assert counter.count("text", True) == 1 and counter.count("image", True) == 8
    assert first == second
    evaluator.evaluate(batches, CLASSNAMES[:3])  # another class list: its own features
    assert counter.count("text", True) == 2


def test_text_teacher_is_cached_per_class_list_and_backbone(backbone, tmp_path):
    model = PromptedCLIP(backbone, text_depth=3, vision_depth=3)
    templates = load_templates()[:3]
    first = compute_text_teacher(model, CLASSNAMES, templates, cache_dir=tmp_path, cache_key="tiny|a")
    with mock.patch.object(model, "encode_plain_text", side_effect=AssertionError("re-encoded")):
        again = compute_text_teacher(model, CLASSNAMES, templates, cache_dir=tmp_path, cache_key="tiny|a")
    assert torch.equal(first, again)
    calls = []
    real = model.encode_plain_text
    with mock.patch.object(
        model, "encode_plain_text", side_effect=lambda texts: calls.append(1) or real(texts)
    ):
        compute_text_teacher(model, CLASSNAMES, templates, cache_dir=tmp_path, cache_key="tiny|b")
        compute_text_teacher(model, CLASSNAMES[:2], templates, cache_dir=tmp_path, cache_key="tiny|a")
    assert len(calls) == 2  # another backbone key, another class list: computed, not read


# --------------------------------------------------------------------------------- backends


def test_configure_backends_sets_tf32_on_cuda_only():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        assert configure_backends("cpu") == {}
        assert torch.backends.cuda.matmul.allow_tf32 == before[0]
        assert configure_backends(torch.device("cuda")) == {"matmul": "tf32", "conv": "tf32"}
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert configure_backends("cuda:0", tf32=False) == {"matmul": "ieee", "conv": "ieee"}
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.set_float32_matmul_precision("high" if before[0] else "highest")
        torch.backends.cudnn.allow_tf32 = before[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a CUDA device")
def test_gpu_check_refuses_clearly_without_cuda():
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(
        [str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr and "--device cpu" in done.stderr


def test_benchmark_class_name_lists_are_complete():
    folder = Path(__file__).resolve().parents[2] / "benchmarks" / "classnames"
    food = (folder / "food101.txt").read_text().split()
    sun = [line for line in (folder / "sun397.txt").read_text().splitlines() if line.strip()]
    assert len(food) == len(set(food)) == 101 and food == sorted(food) and "apple_pie" in food
    assert len(sun) == len(set(sun)) == 397 and "shop bakery" in sun and "outdoor cathedral" in sun
