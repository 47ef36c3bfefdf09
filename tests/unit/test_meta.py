"""The meta-regulariser and the training steps (docs/algorithm.md §3–§4): gate network, virtual tasks,
gradient modulation, the phase-B meta gradient against finite differences, and the schemes."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from prometar.backbone import load_clip
from prometar.config import resolve_config
from prometar.losses import cross_entropy, image_regularizer, text_regularizer
from prometar.meta import INITIAL_GATE, GateNetwork, VirtualTask, sample_virtual_task
from prometar.metrics import STEP_METRICS as METRIC_NAMES
from prometar.prompts import PromptedCLIP
from prometar.steps.plain import PlainStep
from prometar.steps.prometar import ProMetaRStep
from prometar.steps.regularized import RegularizedStep, ungated_scale
from prometar.teacher import compute_image_teacher, compute_text_teacher

CLASSNAMES = ["cat", "dog", "sea_lion"]
TEXT_WEIGHT, IMAGE_WEIGHT = 50.0, 20.0


# --------------------------------------------------------------------------- gate network


def test_gate_sizes_follow_r_for_vit_b16_shapes():
    shapes = {f"vision.{i}": (4, 768) for i in range(9)} | {f"text.{i}": (4, 512) for i in range(9)}
    gate = GateNetwork(shapes, reduction=8)
    assert [tuple(linear.weight.shape) for linear in gate.network("vision.0")] == [(384, 6144), (384, 384)]
    assert [tuple(linear.weight.shape) for linear in gate.network("text.3")] == [(256, 4096), (256, 256)]
    assert all(linear.bias is None for name in shapes for linear in gate.network(name))
    assert sum(p.numel() for p in gate.parameters()) == 32_587_776  # ≈ 32.6 M (docs/algorithm.md §3)
    assert gate.repeat == 8
    smaller = GateNetwork({"text.0": (4, 512)}, reduction=4)
    assert [tuple(linear.weight.shape) for linear in smaller.network("text.0")] == [(512, 4096), (512, 512)]
    assert smaller.repeat == 4


def test_repeat_must_cover_the_tensor():
    GateNetwork({"p": (4, 64)}, reduction=8, repeat=8)
    with pytest.raises(ValueError, match="repeated"):
        GateNetwork({"p": (4, 64)}, reduction=4, repeat=8)
    with pytest.raises(ValueError, match="divisible"):
        GateNetwork({"p": (3, 5)}, reduction=4)
    with pytest.raises(KeyError, match="no gate"):
        GateNetwork({"p": (4, 64)}).network("q")


def test_gate_reads_ce_gradient_first_and_repeats_values_consecutively():
    gate = GateNetwork({"p": (2, 4)}, reduction=4)  # D = 8: 16 -> 2 -> 2, each value repeated 4 times
    first, second = gate.network("p")
    with torch.no_grad():
        first.weight.zero_()
        first.weight[0, 0] = 1.0  # hidden 0 reads the CE gradient's first value
        first.weight[1, 8] = 1.0  # hidden 1 reads the regulariser gradient's first value
        second.weight.copy_(torch.eye(2))
    ce_grad = torch.zeros(2, 4)
    ce_grad[0, 0] = 2.0
    reg_grad = torch.zeros(2, 4)
    reg_grad[0, 0] = -3.0
    out = gate("p", ce_grad, reg_grad)
    expected = torch.sigmoid(torch.tensor([2.0, -3.0])).repeat_interleave(4).reshape(2, 4)
    assert torch.allclose(out, expected)


# --------------------------------------------------------------------------- virtual tasks


def test_single_label_batches_have_no_virtual_task():
    assert sample_virtual_task(torch.tensor([2, 2, 2, 2]), torch.Generator().manual_seed(0)) is None


def test_virtual_task_structure_and_determinism():
    labels = torch.tensor([0, 1, 1, 2])
    seen_labels = set()
    for seed in range(40):
        task = sample_virtual_task(labels, torch.Generator().manual_seed(seed))
        again = sample_virtual_task(labels, torch.Generator().manual_seed(seed))
        assert task == again
        chosen = {int(labels[i]) for i in task.query}
        assert len(chosen) == 1
        seen_labels |= chosen
        assert set(task.query) | set(task.support) == {0, 1, 2, 3}
        assert all(int(labels[i]) not in chosen for i in task.support)
        assert set(task.partners) <= set(task.support)
        assert all(0.0 < lam < 1.0 for lam in task.lam)
    assert seen_labels == {0, 1, 2}


def test_virtual_task_validates_itself():
    with pytest.raises(ValueError):
        VirtualTask(query=(0,), support=(0, 1), lam=(0.5,), partners=(1,))
    with pytest.raises(ValueError):
        VirtualTask(query=(0,), support=(1,), lam=(0.5,), partners=(2,))


# --------------------------------------------------------------------------- training steps


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return load_clip("tiny-test")


def build(backbone, dtype=torch.float32, seed=0):
    """A tiny prompted CLIP, its gate and a batch; same values for the same seed."""
    torch.manual_seed(seed)
    model = PromptedCLIP(
        backbone, text_tokens=2, text_depth=2, vision_tokens=2, vision_depth=2, text_init=None
    )
    model.clip.to(dtype)
    model.to(dtype)
    prompts = {**model.prompt_parameters("text"), **model.prompt_parameters("vision")}
    with torch.no_grad():
        for parameter in prompts.values():
            parameter.copy_(torch.randn_like(parameter) * 0.3)  # large enough to matter in a tiny model
    gate = GateNetwork({name: tuple(p.shape) for name, p in prompts.items()}, reduction=4).to(dtype)
    with torch.no_grad():
        for parameter in gate.parameters():
            parameter.mul_(20.0)  # spread the gates away from 0.5
    generator = torch.Generator().manual_seed(seed + 1)
    images = torch.randn(4, 3, 32, 32, generator=generator).to(dtype)
    labels = torch.tensor([0, 1, 1, 2])
    teacher = compute_text_teacher(model, CLASSNAMES, ["a photo of a {}.", "a drawing of a {}."]).to(dtype)
    return model, gate, prompts, images, labels, teacher


def make_step(
    model, gate, prompts, teacher, *, scheme="prometar", lr=0.0, gate_lr=0.0, momentum=0.0, **kwargs
):
    """The step of ``scheme``; the ProMetaR-only arguments (gate mode, inner step) go to it alone."""
    prompt_optimizer = torch.optim.SGD(list(prompts.values()), lr=lr, momentum=momentum)
    gate_optimizer = torch.optim.SGD(gate.parameters(), lr=gate_lr, momentum=momentum)
    common = {
        "class_tokens": model.tokenize_classnames(CLASSNAMES),
        "autocast_dtype": kwargs.pop("autocast_dtype", None),
        "grad_scaler": kwargs.pop("grad_scaler", None),
    }
    if scheme == "plain":
        return PlainStep(model, prompt_optimizer, **common)
    regularized = {"teacher_text": teacher, "text_weight": TEXT_WEIGHT, "image_weight": IMAGE_WEIGHT}
    if "ungated_scale" in kwargs:
        regularized["ungated_scale"] = kwargs.pop("ungated_scale")
    if scheme == "regularized":
        return RegularizedStep(model, prompt_optimizer, **common, **regularized)
    return ProMetaRStep(
        model, prompt_optimizer, **common, **regularized, gate=gate, gate_optimizer=gate_optimizer, **kwargs
    )


def reference_losses(model, images, labels, teacher):
    """CE and the weighted regularisers, computed here independently of steps.py."""
    image_features, text_features = model(images, model.tokenize_classnames(CLASSNAMES))
    image_n = image_features / image_features.norm(dim=-1, keepdim=True)
    text_n = text_features / text_features.norm(dim=-1, keepdim=True)
    logits = model.logit_scale * image_n @ text_n.t()
    ce = cross_entropy(logits, labels)
    text_reg = TEXT_WEIGHT * text_regularizer(text_features, teacher)
    image_reg = IMAGE_WEIGHT * image_regularizer(image_features, compute_image_teacher(model, images))
    return ce, text_reg, image_reg


def test_modulated_gradient_is_ce_plus_gate_times_the_towers_regulariser(backbone):
    model, gate, prompts, images, labels, teacher = build(backbone)
    ce, text_reg, image_reg = reference_losses(model, images, labels, teacher)
    names = list(prompts)
    ce_grads = torch.autograd.grad(ce, list(prompts.values()), retain_graph=True)
    text_grads = torch.autograd.grad(text_reg, list(prompts.values()), retain_graph=True, allow_unused=True)
    image_grads = torch.autograd.grad(image_reg, list(prompts.values()), allow_unused=True)

    trace = {}
    make_step(model, gate, prompts, teacher).step(images, labels, None, trace=trace)
    for index, name in enumerate(names):
        tower = name.split("_")[0]
        own, other = (text_grads, image_grads) if tower == "text" else (image_grads, text_grads)
        assert other[index] is None  # the other tower's regulariser never reaches this tensor
        assert torch.allclose(trace["phase_a/reg_grads"][name], own[index], atol=1e-6)
        gate_values = gate(name, ce_grads[index], own[index])
        assert gate_values.std() > 0.01  # a real, non-constant gate
        expected = ce_grads[index] + gate_values * own[index]
        assert torch.allclose(trace["phase_a/modulated_grads"][name], expected, atol=1e-6)


def test_phase_a_update_is_the_modulated_gradient_and_the_gate_is_not_updated(backbone):
    model, gate, prompts, images, labels, teacher = build(backbone)
    before = {name: p.detach().clone() for name, p in prompts.items()}
    gate_before = [p.detach().clone() for p in gate.parameters()]
    trace = {}
    metrics = make_step(model, gate, prompts, teacher, lr=0.1, gate_lr=0.1).step(
        images, labels, None, trace=trace
    )
    for name, parameter in prompts.items():
        assert torch.allclose(
            parameter - before[name], -0.1 * trace["phase_a/modulated_grads"][name], atol=1e-6
        )
    assert all(torch.equal(p, q) for p, q in zip(gate.parameters(), gate_before, strict=True))
    assert metrics["meta_skipped"] == 1.0  # no task given


def test_constant_gate_equals_ce_plus_half_the_weighted_regularisers(backbone):
    model, gate, prompts, images, labels, teacher = build(backbone)
    ce, text_reg, image_reg = reference_losses(model, images, labels, teacher)
    expected = torch.autograd.grad(ce + 0.5 * (text_reg + image_reg), list(prompts.values()))
    before = [p.detach().clone() for p in prompts.values()]
    metrics = make_step(model, gate, prompts, teacher, lr=1.0, gate_mode="constant").step(
        images, labels, None
    )
    for parameter, old, grad in zip(prompts.values(), before, expected, strict=True):
        assert torch.allclose(old - parameter, grad, atol=1e-5)
    assert metrics["gate_mean/text"] == 0.5 and metrics["gate_std/vision"] == 0.0


@pytest.mark.parametrize("scale", [1.0, INITIAL_GATE])
def test_gate_off_equals_the_regularized_scheme(backbone, scale):
    results = []
    for scheme, mode in (("prometar", "off"), ("regularized", "learned")):
        model, gate, prompts, images, labels, teacher = build(backbone)
        make_step(
            model, gate, prompts, teacher, scheme=scheme, lr=1.0, gate_mode=mode, ungated_scale=scale
        ).step(images, labels, None)
        results.append([p.detach().clone() for p in prompts.values()])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*results, strict=True))


def test_the_regularized_scheme_scales_the_weighted_regularisers(backbone):
    model, gate, prompts, images, labels, teacher = build(backbone)
    ce, text_reg, image_reg = reference_losses(model, images, labels, teacher)
    expected = torch.autograd.grad(ce + 0.25 * (text_reg + image_reg), list(prompts.values()))
    before = [p.detach().clone() for p in prompts.values()]
    metrics = make_step(model, gate, prompts, teacher, scheme="regularized", lr=1.0, ungated_scale=0.25).step(
        images, labels, None
    )
    for parameter, old, grad in zip(prompts.values(), before, expected, strict=True):
        assert torch.allclose(old - parameter, grad, atol=1e-5)
    assert metrics["gate_mean/text"] == metrics["gate_mean/vision"] == 0.25
    with pytest.raises(ValueError, match="ungated_scale"):
        make_step(model, gate, prompts, teacher, scheme="regularized", ungated_scale=2.0)


def test_ivlp_reg_applies_the_regularisers_at_prometars_gate_strength(backbone):
    """ivlp_reg's effective weights are ProMetaR's gate at initialisation times 50 / 20.

    The gate reads the gradients of phase A of a ProMetaR step (prompts as initialised, the 50 / 20
    weights); its output is averaged over every gate value of 32 freshly initialised networks of
    the official sizes (r = 8, repeat 8): the strength the regulariser gradient gets, known to
    within three standard errors of that mean.
    """
    torch.manual_seed(0)
    model = PromptedCLIP(backbone, text_tokens=4, text_depth=3, vision_tokens=4, vision_depth=3)
    prompts = {**model.prompt_parameters("text"), **model.prompt_parameters("vision")}
    shapes = {name: tuple(p.shape) for name, p in prompts.items()}
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    teacher = compute_text_teacher(model, CLASSNAMES, ["a photo of a {}.", "a drawing of a {}."])
    trace: dict = {}
    make_step(model, GateNetwork(shapes, reduction=8, repeat=8), prompts, teacher).step(
        images, torch.tensor([0, 1, 1, 2]), None, trace=trace
    )
    ce_grads, reg_grads = trace["phase_a/ce_grads"], trace["phase_a/reg_grads"]
    values = []
    for seed in range(32):
        torch.manual_seed(100 + seed)
        gate = GateNetwork(shapes, reduction=8, repeat=8)
        with torch.no_grad():
            values += [gate(name, ce_grads[name], reg_grads[name])[:, ::8].reshape(-1) for name in prompts]
    gates = torch.cat(values)  # one entry per gate unit (the repeats dropped)
    initial, precision = gates.mean().item(), 3 * gates.std().item() / math.sqrt(gates.numel())
    assert 0 < precision < 0.02

    config = resolve_config("official", {"method": "ivlp_reg", "data.dataset": "dtd"})
    assert config.scheme == "regularized"
    scale = ungated_scale(config.regularizer.ungated_strength)
    text, image = config.regularizer.text_weight * scale, config.regularizer.image_weight * scale
    assert text == pytest.approx(50 * initial, abs=50 * precision)
    assert image == pytest.approx(20 * initial, abs=20 * precision)
    # ... and the pre-revision weighting stays a named switch
    nominal = resolve_config(
        "official",
        {"method": "ivlp_reg", "data.dataset": "dtd", "regularizer.ungated_strength": "nominal"},
    )
    assert nominal.regularizer.text_weight * ungated_scale(nominal.regularizer.ungated_strength) == 50


def test_plain_scheme_follows_cross_entropy_only(backbone):
    model, gate, prompts, images, labels, teacher = build(backbone)
    ce, _, _ = reference_losses(model, images, labels, teacher)
    expected = torch.autograd.grad(ce, list(prompts.values()))
    before = [p.detach().clone() for p in prompts.values()]
    metrics = make_step(model, gate, prompts, None, scheme="plain", lr=1.0).step(images, labels, None)
    for parameter, old, grad in zip(prompts.values(), before, expected, strict=True):
        assert torch.allclose(old - parameter, grad, atol=1e-5)
    assert metrics["text_reg"] == 0.0 and metrics["ce"] == pytest.approx(ce.item(), rel=1e-5)


def test_single_label_batch_skips_phase_b_and_says_so(backbone):
    model, gate, prompts, images, _, teacher = build(backbone)
    labels = torch.tensor([1, 1, 1, 1])
    gate_before = [p.detach().clone() for p in gate.parameters()]
    step = make_step(model, gate, prompts, teacher, lr=0.1, gate_lr=0.1)
    metrics = step(images, labels, generator=torch.Generator().manual_seed(0))
    assert metrics["meta_skipped"] == 1.0 and metrics["query"] == 0.0
    assert all(torch.equal(p, q) for p, q in zip(gate.parameters(), gate_before, strict=True))
    two_labels = step(images, torch.tensor([0, 1, 1, 1]), generator=torch.Generator().manual_seed(0))
    assert two_labels["meta_skipped"] == 0.0 and two_labels["query"] > 0.0
    assert any(not torch.equal(p, q) for p, q in zip(gate.parameters(), gate_before, strict=True))


def test_metrics_are_named_finite_and_the_same_in_every_scheme(backbone):
    for scheme in ("plain", "regularized", "prometar"):
        model, gate, prompts, images, labels, teacher = build(backbone)
        step = make_step(model, gate, prompts, teacher, scheme=scheme, lr=1e-3, gate_lr=1e-3)
        metrics = step(images, labels, generator=torch.Generator().manual_seed(0))
        assert tuple(metrics) == METRIC_NAMES
        assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_gradient_cosine_metric(backbone):
    model, gate, prompts, images, labels, teacher = build(backbone)
    trace = {}
    metrics = make_step(model, gate, prompts, teacher).step(images, labels, None, trace=trace)
    for tower in ("text", "vision"):
        names = [name for name in prompts if name.startswith(tower)]
        ce = torch.cat([trace["phase_a/ce_grads"][n].reshape(-1) for n in names])
        reg = torch.cat([trace["phase_a/reg_grads"][n].reshape(-1) for n in names])
        assert metrics[f"grad_cos/{tower}"] == pytest.approx(
            torch.cosine_similarity(ce, reg, dim=0).item(), abs=1e-5
        )
        gates = torch.cat([trace["phase_a/gates"][n].reshape(-1) for n in names])
        assert metrics[f"gate_mean/{tower}"] == pytest.approx(gates.mean().item(), abs=1e-6)


def test_step_is_deterministic_given_the_task(backbone):
    task = VirtualTask(query=(1, 2), support=(0, 3), lam=(0.3, 0.8), partners=(3, 0))
    results = []
    for _ in range(2):
        model, gate, prompts, images, labels, teacher = build(backbone)
        metrics = make_step(model, gate, prompts, teacher, lr=1e-2, gate_lr=1e-2, momentum=0.9).step(
            images, labels, task
        )
        results.append((metrics, [p.detach().clone() for p in [*prompts.values(), *gate.parameters()]]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))


# ------------------------------------------------------------- phase B vs finite differences

TASK = VirtualTask(query=(1, 2), support=(0, 3), lam=(0.3, 0.8), partners=(3, 0))
INNER_LR, META_SCALE = 0.05, 1.0


def meta_loss_and_grads(backbone, *, second_order=True, prompt_shift=None, gate_shift=None):
    """Phase B at fixed prompts/gate (all optimiser learning rates 0), float64."""
    model, gate, prompts, images, labels, teacher = build(backbone, dtype=torch.float64)
    with torch.no_grad():
        for shifts, parameters in (
            (prompt_shift, list(prompts.values())),
            (gate_shift, list(gate.parameters())),
        ):
            if shifts is not None:
                for parameter, shift in zip(parameters, shifts, strict=True):
                    parameter.add_(shift)
    trace = {}
    make_step(
        model,
        gate,
        prompts,
        teacher,
        inner_lr=INNER_LR,
        meta_loss_scale=META_SCALE,
        second_order=second_order,
    ).step(images, labels, TASK, trace=trace)
    return (
        trace["phase_b/meta_loss"].item(),
        list(trace["phase_b/meta_grads"].values()),
        list(trace["phase_b/gate_grads"].values()),
    )


def directional_difference(backbone, directions, *, which: str, step: float) -> float:
    plus = meta_loss_and_grads(backbone, **{which: [step * d for d in directions]})[0]
    minus = meta_loss_and_grads(backbone, **{which: [-step * d for d in directions]})[0]
    return (plus - minus) / (2 * step)


@pytest.fixture(scope="module")
def second_order_result(backbone):
    return meta_loss_and_grads(backbone)


def random_directions(tensors, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=generator, dtype=torch.float64) for t in tensors]


@pytest.mark.parametrize("seed", [0, 1])
def test_meta_gradient_of_prompts_matches_finite_differences(backbone, second_order_result, seed):
    _, prompt_grads, _ = second_order_result
    directions = random_directions(prompt_grads, seed)
    analytic = sum((g * d).sum() for g, d in zip(prompt_grads, directions, strict=True)).item()
    numeric = directional_difference(backbone, directions, which="prompt_shift", step=1e-6)
    assert numeric == pytest.approx(analytic, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_meta_gradient_of_gate_matches_finite_differences(backbone, second_order_result, seed):
    _, _, gate_grads = second_order_result
    assert sum(g.norm() for g in gate_grads) > 0
    directions = random_directions(gate_grads, seed)
    analytic = sum((g * d).sum() for g, d in zip(gate_grads, directions, strict=True)).item()
    numeric = directional_difference(backbone, directions, which="gate_shift", step=1e-6)
    assert numeric == pytest.approx(analytic, rel=1e-6)


def test_first_order_differs_from_second_order(backbone, second_order_result):
    _, second_prompt, second_gate = second_order_result
    _, first_prompt, first_gate = meta_loss_and_grads(backbone, second_order=False)
    second = torch.cat([g.reshape(-1) for g in second_prompt])
    first = torch.cat([g.reshape(-1) for g in first_prompt])
    assert (first - second).norm() > 1e-3 * second.norm()
    # The gate still learns in first order (its direct effect on the inner update).
    assert sum(g.norm() for g in first_gate) > 0


def test_bf16_autocast_step_keeps_fp32_prompts_and_finite_metrics(backbone):
    model, gate, prompts, images, labels, teacher = build(backbone)
    step = make_step(model, gate, prompts, teacher, lr=1e-3, gate_lr=1e-3, autocast_dtype=torch.bfloat16)
    metrics = step.step(images, labels, TASK)
    assert all(math.isfinite(v) for v in metrics.values()) and metrics["query"] > 0
    assert all(p.dtype == torch.float32 for p in [*prompts.values(), *gate.parameters()])


def test_steps_reject_bad_arguments(backbone):
    model, gate, prompts, _, _, teacher = build(backbone)
    with pytest.raises(ValueError, match="unknown gate mode"):
        make_step(model, gate, prompts, teacher, gate_mode="sometimes")
    with pytest.raises(ValueError, match="teacher_text"):
        make_step(model, gate, prompts, None, scheme="regularized")
    with pytest.raises(ValueError, match="no gate for prompt"):
        make_step(model, GateNetwork({"text_prompts.blocks.0": (2, 32)}, reduction=4), prompts, teacher)


@pytest.mark.parametrize("text_depth, vision_depth", [(1, 0), (0, 2)])
def test_prometar_on_a_single_prompted_tower(backbone, text_depth, vision_depth):
    """ProMetaR on CoOp-like (text only) and VPT-like (vision only) prompt designs."""
    torch.manual_seed(0)
    model = PromptedCLIP(
        backbone,
        text_tokens=2,
        text_depth=text_depth,
        vision_tokens=2,
        vision_depth=vision_depth,
        text_init=None,
    )
    prompts = {**model.prompt_parameters("text"), **model.prompt_parameters("vision")}
    gate = GateNetwork({name: tuple(p.shape) for name, p in prompts.items()}, reduction=4)
    teacher = compute_text_teacher(model, CLASSNAMES, ["a photo of a {}."])
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = {name: p.detach().clone() for name, p in prompts.items()}
    metrics = make_step(model, gate, prompts, teacher, lr=1e-2, gate_lr=1e-2).step(
        images, torch.tensor([0, 1, 1, 2]), TASK
    )
    present = "text" if text_depth else "vision"
    absent = "vision" if text_depth else "text"
    assert metrics["gate_mean/" + present] > 0 and metrics["gate_mean/" + absent] == 0.0
    assert metrics["query"] > 0 and all(math.isfinite(v) for v in metrics.values())
    assert all(not torch.equal(p, before[name]) for name, p in prompts.items())


# --------------------------------------------------------------------------- fp16 loss scaling


class CountingScaler(torch.amp.GradScaler):
    """A CPU gradient scaler that counts its optimiser steps and scale updates."""

    def __init__(self) -> None:
        super().__init__("cpu", init_scale=2.0**12)
        self.steps = self.updates = 0

    def step(self, optimizer, *args, **kwargs):
        self.steps += 1
        return super().step(optimizer, *args, **kwargs)

    def update(self, new_scale=None):
        self.updates += 1
        return super().update(new_scale)


@pytest.mark.parametrize(
    "scheme, steps, updates", [("plain", 1, 1), ("regularized", 1, 1), ("prometar", 3, 2)]
)
def test_a_gradient_scaler_scales_the_losses_and_unscales_the_update(backbone, scheme, steps, updates):
    """With a scaler (fp16 autocast) each scheme updates the prompts as without one: the losses
    are scaled by 4096 and the gradients unscaled before the optimiser steps (phase A and the
    meta step of ProMetaR each step and update the scale once)."""
    task = VirtualTask(query=(0,), support=(1, 2, 3), lam=(0.3,), partners=(2,))
    results = []
    for scaler in (None, CountingScaler()):
        model, gate, prompts, images, labels, teacher = build(backbone)
        step = make_step(
            model, gate, prompts, teacher, scheme=scheme, lr=0.1, gate_lr=0.1, grad_scaler=scaler
        )
        step.step(images, labels, task if scheme == "prometar" else None)
        results.append([p.detach().clone() for p in [*prompts.values(), *gate.parameters()]])
        if scaler is not None:
            assert (scaler.steps, scaler.updates) == (steps, updates)
            assert scaler.get_scale() == 2.0**12  # finite gradients: the scale is kept
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*results, strict=True))


def test_fp16_runs_autocast_with_a_gradient_scaler_on_cuda_and_is_refused_on_cpu():
    from prometar.errors import ConfigError
    from prometar.run import _autocast_dtype, build_grad_scaler

    config = resolve_config("official", {"data.dataset": "dtd", "backbone.precision": "fp16"})
    assert config.backbone.precision == "fp16"
    cuda = torch.device("cuda")
    assert _autocast_dtype("fp16", cuda) is torch.float16
    with warnings.catch_warnings():  # a CUDA scaler built on a machine without CUDA disables itself
        warnings.simplefilter("ignore")
        scaler = build_grad_scaler(torch.float16, cuda)
    assert isinstance(scaler, torch.amp.GradScaler) and scaler._device == "cuda"
    assert build_grad_scaler(torch.bfloat16, cuda) is None and build_grad_scaler(None, cuda) is None
    with pytest.raises(ConfigError, match="backbone.precision") as refused:
        _autocast_dtype("fp16", torch.device("cpu"))
    assert "CUDA" in str(refused.value)
    assert _autocast_dtype("auto", torch.device("cpu")) is None
