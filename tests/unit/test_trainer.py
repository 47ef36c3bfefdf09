"""The trainer: learning-rate schedules, metrics, non-finite losses, checkpoints and exact resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prometar.config import resolve_config
from prometar.run import build_schedules
from prometar.trainer import (
    CheckpointError,
    LearningRateSchedule,
    NonFiniteLossError,
    Trainer,
    seed_everything,
)

# ------------------------------------------------------------------------------------------
# A toy problem: a linear "prompt" trained by a step that, like the real one, steps its own
# optimisers and draws from both the task generator and the global RNG.


class ToyStep:
    def __init__(
        self,
        model: nn.Linear,
        optimizer,
        gate: nn.Linear | None = None,
        gate_optimizer=None,
        nan_at: int | None = None,
    ):
        self.model, self.optimizer = model, optimizer
        self.gate, self.gate_optimizer = gate, gate_optimizer
        self.calls = 0
        self.nan_at = nan_at
        self.seen_lrs: list[tuple[float, float | None]] = []

    def __call__(self, images, labels, *, generator):
        self.calls += 1
        self.seen_lrs.append(
            (
                self.optimizer.param_groups[0]["lr"],
                self.gate_optimizer.param_groups[0]["lr"] if self.gate_optimizer else None,
            )
        )
        noise = torch.rand((), generator=generator) + 0.1 * torch.randn(())  # task RNG + global RNG
        self.optimizer.zero_grad()
        loss = nn.functional.cross_entropy(self.model(images) * (1 + noise), labels)
        if self.gate is not None:
            loss = loss + self.gate(images).pow(2).mean()
            self.gate_optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.gate is not None:
            self.gate_optimizer.step()
        value = float("nan") if self.calls == self.nan_at else loss.item()
        return {"loss": value, "ce": loss.item(), "meta_skipped": float(len(set(labels.tolist())) == 1)}


def toy_trainer(
    tmp_path=None, *, epochs=4, seed=0, callback=None, nan_at=None, keep=1, schedule=None, gate_schedule=None
):
    seed_everything(seed)
    model = nn.Linear(6, 3)
    gate = nn.Linear(6, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gate_optimizer = torch.optim.SGD(gate.parameters(), lr=0.1, momentum=0.9)
    data = TensorDataset(torch.randn(20, 6, generator=torch.Generator().manual_seed(1)), torch.arange(20) % 3)
    step = ToyStep(model, optimizer, gate, gate_optimizer, nan_at=nan_at)

    def make_loader(generator):
        return DataLoader(data, batch_size=4, shuffle=True, drop_last=True, generator=generator)

    trainer = Trainer(
        step,
        make_loader,
        modules={"model": model, "gate": gate},
        prompt_optimizer=optimizer,
        prompt_schedule=schedule or LearningRateSchedule(0.1, epochs, 1, 1e-3),
        gate_optimizer=gate_optimizer,
        gate_schedule=gate_schedule or LearningRateSchedule(0.05, epochs, 1, 1e-4, stepped=False),
        epochs=epochs,
        seed=seed,
        checkpoint_dir=tmp_path / "checkpoints" if tmp_path else None,
        keep_checkpoints=keep,
        callback=callback,
        fingerprint="toy",
    )
    return trainer, step, model, gate


# The published per-epoch rates of the official run (lr 0.0025, T = 10, one warm-up epoch at 1e-5),
# as docs/algorithm.md §5 and issue 13 give them, to the digits shown there.
PUBLISHED_RATES = [1e-5, 2.5e-3, 2.439e-3, 2.261e-3, 1.985e-3, 1.636e-3, 1.25e-3, 8.64e-4, 5.15e-4, 2.387e-4]


def same_to_shown_digits(value: float, shown: float) -> bool:
    """``value`` rounds to ``shown`` at the significant digits ``shown`` is written with."""
    mantissa = f"{shown:e}".split("e")[0].rstrip("0").rstrip(".")
    digits = len(mantissa.replace(".", "").lstrip("0")) if "." in mantissa else 1
    return float(f"{value:.{digits - 1}e}") == shown


def dassl_rates(lr: float, epochs: int, warmup_epochs: int, warmup_lr: float) -> list[float]:
    """Per-epoch rates of Dassl's schedule, re-derived from its logic (not its code).

    Dassl builds ``CosineAnnealingLR(T_max=epochs)`` and, with a warm-up, wraps it in a constant
    warm-up scheduler whose construction takes one step (epoch 0 runs at ``warmup_lr``). The trainer
    steps the wrapper once after every epoch. While the wrapper's own epoch count is below the
    warm-up length it advances that count and sets ``warmup_lr`` — or, once the count reaches the
    warm-up length, the cosine's current rate (its peak: the cosine has not moved yet). After that
    every step is the cosine's step. With ``WARMUP_RECOUNT=True`` the cosine's count is not
    advanced over the warm-up, so it restarts at epoch W.
    """
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=float(epochs))

    def set_rate(value: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = value

    wrapper_epoch = 0
    if warmup_epochs > 0:
        set_rate(warmup_lr)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # (no gradient: nothing moves) keeps torch's step-order check quiet
        if wrapper_epoch >= warmup_epochs:
            cosine.step()
        else:
            wrapper_epoch += 1
            set_rate(warmup_lr if wrapper_epoch < warmup_epochs else cosine.get_last_lr()[0])
    return rates


def test_official_learning_rate_schedule_is_the_published_one():
    cfg = resolve_config("official", {"data.dataset": "eurosat"})
    prompt, gate = build_schedules(cfg)
    rates = [prompt.at(e) for e in range(10)]
    assert all(same_to_shown_digits(r, p) for r, p in zip(rates, PUBLISHED_RATES, strict=True)), rates
    assert rates[1] == 0.0025  # the cosine restarts at its peak right after the warm-up
    assert rates == pytest.approx(dassl_rates(0.0025, 10, 1, 1e-5), rel=1e-12)
    assert [gate.at(e) for e in range(10)] == [1e-6] * 10  # official: never stepped


def test_shown_digits_check_can_fail():
    assert same_to_shown_digits(2.4387e-3, 2.439e-3) and same_to_shown_digits(0.00125, 1.25e-3)
    assert not same_to_shown_digits(2.4332e-3, 2.439e-3) and not same_to_shown_digits(6.1e-5, 2.387e-4)


def test_two_epoch_warm_up_restarts_the_cosine_after_it():
    schedule = LearningRateSchedule(0.01, 8, warmup_epochs=2, warmup_lr=1e-4)
    expected = [1e-4, 1e-4] + [0.01 * (1 + math.cos(math.pi * (e - 2) / 8)) / 2 for e in range(2, 8)]
    rates = [schedule.at(e) for e in range(8)]
    assert rates == pytest.approx(expected, rel=1e-12)
    assert rates[2] == 0.01 and rates[-1] == pytest.approx(0.01 * (1 + math.cos(math.pi * 5 / 8)) / 2)
    assert rates == pytest.approx(dassl_rates(0.01, 8, 2, 1e-4), rel=1e-12)


@pytest.mark.parametrize("lr,epochs,warmup", [(0.0025, 10, 0), (0.0025, 10, 1), (0.1, 5, 3), (0.02, 20, 2)])
def test_schedule_matches_dassl_for_any_warm_up_length(lr, epochs, warmup):
    schedule = LearningRateSchedule(lr, epochs, warmup, 1e-5)
    assert [schedule.at(e) for e in range(epochs)] == pytest.approx(
        dassl_rates(lr, epochs, warmup, 1e-5), rel=1e-12
    )


def test_fixed_gate_schedule_is_stepped():
    cfg = resolve_config("fixed", {"data.dataset": "eurosat"})
    _, gate = build_schedules(cfg)
    expected = [1e-6] + [2.5e-4 * (1 + math.cos(math.pi * (e - 1) / 10)) / 2 for e in range(1, 10)]
    assert [gate.at(e) for e in range(10)] == pytest.approx(expected, rel=1e-12)
    assert [gate.at(e) for e in range(10)] == pytest.approx(dassl_rates(2.5e-4, 10, 1, 1e-6), rel=1e-12)


def test_trainer_sets_both_learning_rates_each_epoch_and_reports_them():
    trainer, step, _, _ = toy_trainer(epochs=4)
    history = trainer.fit()
    per_epoch = [step.seen_lrs[i * 5] for i in range(4)]  # 20 items / batch 4 = 5 steps per epoch
    prompt = [1e-3] + [0.1 * (1 + math.cos(math.pi * (e - 1) / 4)) / 2 for e in range(1, 4)]
    assert [lr for lr, _ in per_epoch] == pytest.approx(prompt)
    assert [g for _, g in per_epoch] == [1e-4] * 4  # never stepped: the warm-up value all run
    assert [r["lr"] for r in history] == pytest.approx(prompt)
    assert [r["gate_lr"] for r in history] == [1e-4] * 4
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert all(r["steps"] == 5 for r in history)


def test_epoch_metrics_are_means_of_step_metrics():
    trainer, _, _, _ = toy_trainer(epochs=1)
    recorded = []
    original = trainer.step

    def spy(images, labels, *, generator):
        out = original(images, labels, generator=generator)
        recorded.append(out["ce"])
        return out

    trainer.step = spy
    (record,) = trainer.fit()
    assert record["ce"] == pytest.approx(sum(recorded) / len(recorded))


def test_non_finite_loss_names_epoch_and_step():
    trainer, _, _, _ = toy_trainer(epochs=3, nan_at=7)  # 5 steps per epoch: epoch 2, step 2
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at epoch 2, step 2"):
        trainer.fit()


def test_same_seed_gives_identical_history_and_weights():
    a, _, model_a, _ = toy_trainer(epochs=3, seed=5)
    b, _, model_b, _ = toy_trainer(epochs=3, seed=5)
    assert a.fit() == b.fit()
    assert torch.equal(model_a.weight, model_b.weight)
    c, _, _, _ = toy_trainer(epochs=3, seed=6)
    assert c.fit() != a.history


class Stop(Exception):
    pass


def test_stop_after_epoch_one_and_resume_is_exact(tmp_path):
    full, _, model_full, gate_full = toy_trainer(tmp_path / "full", epochs=4)
    expected = full.fit()

    def stop_after_first(event):
        if event["epoch"] == 1:
            raise Stop

    events = []
    interrupted, _, _, _ = toy_trainer(tmp_path / "part", epochs=4, callback=stop_after_first)
    with pytest.raises(Stop):
        interrupted.fit()
    checkpoint = tmp_path / "part" / "checkpoints" / "epoch_1"
    assert (checkpoint / "state.pt").is_file()

    torch.manual_seed(12345)  # whatever the global RNG holds now, resume restores it
    resumed, step, model, gate = toy_trainer(tmp_path / "part", epochs=4, callback=events.append)
    history = resumed.fit(resume_from=checkpoint)
    assert history == expected
    assert step.calls == 15  # only epochs 2..4 ran
    assert [e["epoch"] for e in events] == [2, 3, 4]
    assert torch.equal(model.weight, model_full.weight) and torch.equal(model.bias, model_full.bias)
    assert torch.equal(gate.weight, gate_full.weight)


def test_checkpoints_are_pruned_and_leave_no_temporary_files(tmp_path):
    events = []
    trainer, _, _, _ = toy_trainer(tmp_path, epochs=3, callback=events.append, keep=1)
    trainer.fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_3"]
    assert [e["checkpoint"] for e in events] == [
        str(tmp_path / "checkpoints" / f"epoch_{k}") for k in (1, 2, 3)
    ]
    keep_all, _, _, _ = toy_trainer(tmp_path / "all", epochs=3, keep=None)
    keep_all.fit()
    assert sorted(p.name for p in (tmp_path / "all" / "checkpoints").iterdir()) == [
        "epoch_1",
        "epoch_2",
        "epoch_3",
    ]


def test_resume_rejects_another_runs_checkpoint(tmp_path):
    trainer, _, _, _ = toy_trainer(tmp_path, epochs=1)
    trainer.fit()
    other, _, _, _ = toy_trainer(epochs=1)
    other.fingerprint = "something else"
    with pytest.raises(CheckpointError, match="another run configuration"):
        other.load_checkpoint(tmp_path / "checkpoints" / "epoch_1")
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        other.load_checkpoint(tmp_path / "nowhere")


def test_an_epoch_without_batches_is_an_error():
    trainer, _, _, _ = toy_trainer(epochs=1)
    trainer.make_loader = lambda generator: []
    with pytest.raises(ValueError, match="no training batches"):
        trainer.fit()


# ------------------------------------------------------------------------------------------
# The real method on a tiny CLIP.


@pytest.fixture(scope="module")
def tiny_backbone():
    from prometar.backbone import load_clip

    seed_everything(0)  # random CLIP weights
    return load_clip("tiny-test", None)


CLASSES = ["red square", "green circle", "blue star", "yellow ring"]


def coloured_images(per_class: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    colours = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]])
    labels = torch.arange(len(CLASSES)).repeat_interleave(per_class)
    noise = torch.randn(len(labels), 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return colours[labels][:, :, None, None] + 0.5 * noise, labels  # [N, 3, 32, 32], [N]


def prometar_trainer(backbone, images, labels, *, epochs, lr, text_weight, image_weight, shuffle=True):
    from prometar.meta import GateNetwork
    from prometar.prompts import PromptedCLIP
    from prometar.steps.prometar import ProMetaRStep
    from prometar.teacher import compute_text_teacher, load_templates

    seed_everything(0)
    model = PromptedCLIP(backbone, text_depth=2, vision_depth=2)
    prompts = {**model.prompt_parameters("text"), **model.prompt_parameters("vision")}
    optimizer = torch.optim.SGD(list(prompts.values()), lr=lr, momentum=0.9, weight_decay=5e-4)
    gate = GateNetwork({name: tuple(p.shape) for name, p in prompts.items()}, reduction=8, repeat=8)
    gate_optimizer = torch.optim.SGD(gate.parameters(), lr=1e-6, momentum=0.9, weight_decay=5e-4)
    teacher = compute_text_teacher(model, CLASSES, load_templates()[:4])
    step = ProMetaRStep(
        model,
        optimizer,
        class_tokens=model.tokenize_classnames(CLASSES),
        teacher_text=teacher,
        text_weight=text_weight,
        image_weight=image_weight,
        gate=gate,
        gate_optimizer=gate_optimizer,
    )
    data = TensorDataset(images, labels)
    trainer = Trainer(
        step,
        lambda g: DataLoader(data, batch_size=4, shuffle=shuffle, drop_last=True, generator=g),
        modules={"model": model, "gate": gate},
        prompt_optimizer=optimizer,
        prompt_schedule=LearningRateSchedule(lr, epochs),
        gate_optimizer=gate_optimizer,
        gate_schedule=LearningRateSchedule(2.5e-4, epochs, 1, 1e-6, stepped=False),
        epochs=epochs,
        seed=0,
    )
    return trainer, model


def test_single_label_batches_skip_phase_b_and_say_so(tiny_backbone):
    images, labels = coloured_images(per_class=4)  # sorted by label: unshuffled batches hold one label
    trainer, _ = prometar_trainer(
        tiny_backbone, images, labels, epochs=1, lr=1e-3, text_weight=50, image_weight=20, shuffle=False
    )
    (record,) = trainer.fit()
    assert record["meta_skipped"] == 1.0 and record["query"] == 0.0
    mixed = torch.tensor([0, 1, 2, 3]).repeat(4)  # every batch holds four labels
    trainer, _ = prometar_trainer(
        tiny_backbone, images, mixed, epochs=1, lr=1e-3, text_weight=50, image_weight=20, shuffle=False
    )
    (record,) = trainer.fit()
    assert record["meta_skipped"] == 0.0 and record["query"] > 0.0


def test_prometar_training_improves_training_accuracy_over_zero_shot(tiny_backbone):
    from prometar.evaluation import Evaluator

    images, labels = coloured_images(per_class=4)
    # A random tiny CLIP's teacher is meaningless, so the regularisers are weakened here.
    trainer, model = prometar_trainer(
        tiny_backbone, images, labels, epochs=8, lr=0.1, text_weight=0.5, image_weight=0.2
    )
    before = Evaluator(model).evaluate([(images, labels)], CLASSES).accuracy
    history = trainer.fit()
    after = Evaluator(model).evaluate([(images, labels)], CLASSES).accuracy
    assert after >= before + 25.0, (before, after)
    assert history[-1]["ce"] < history[0]["ce"]
    assert history[-1]["train_acc"] > history[0]["train_acc"]


def test_a_checkpoint_that_finds_the_disk_full_names_its_file_and_leaves_the_last_one(tmp_path, monkeypatch):
    """The second epoch's checkpoint write finds no space: one error naming that checkpoint file;
    the first epoch's checkpoint stays and no temporary folder is left."""
    import errno

    from prometar.errors import DiskFullError

    saved = []
    real = torch.save

    def save(obj, target, *args, **kwargs):
        saved.append(target)
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")  # a failed write names no file
        return real(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    trainer, _, _, _ = toy_trainer(tmp_path, epochs=3, keep=None)
    with pytest.raises(DiskFullError) as err:
        trainer.fit()
    checkpoint = tmp_path / "checkpoints" / "epoch_2" / "state.pt"
    assert str(err.value) == f"cannot write {checkpoint}: no space left on device"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_1"]
