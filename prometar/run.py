"""One run end to end: config → data → backbone → method → trainer → evaluation (docs/algorithm.md §6).

``run`` is the single entry point both the ``prometar-sweep train`` verb and the Ray Tune
trainable call, so a single run and a swept run are the same code path. The config's protocol
(``prometar.protocols``) decides everything protocol-specific: the dataset is few-shot sampled on
all its classes, the protocol cuts the training split and the evaluation sets out of it (each set
classified with its own classifier, same prompts) and names and combines the final metrics. A
protocol that evaluates every epoch (the search) adds its metrics to each epoch's too, so a search
scheduler can stop a weak trial early; its final metrics equal the last epoch's.

The output folder receives ``config.json`` (resolved), ``fewshot_subset.json`` (the images the
seed's few-shot sample holds, ``prometar.data.fewshot.subset_listing``), ``metrics.jsonl`` (one
line per epoch, then the final line), ``prompts.pt``, ``per_class.json`` and
``checkpoints/epoch_<k>/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from prometar import RESULT_REVISION, events
from prometar import metrics as metric_names
from prometar.backbone import load_clip
from prometar.backends import configure_backends
from prometar.config import RunConfig
from prometar.data.fewshot import few_shot, subset_listing
from prometar.data.loaders import ImageDataset, SeededSampler, build_loader, find_missing_files
from prometar.data.readers import DatasetSplits, read_dataset
from prometar.data.transforms import build_test_transform, build_train_transform
from prometar.errors import CheckpointError, ConfigError, DataError
from prometar.evaluation import AccuracyResult, Evaluator
from prometar.files import write_json_atomic, writing
from prometar.meta import GateNetwork
from prometar.prompts import PromptedCLIP
from prometar.protocols import EvaluationSet, get_protocol
from prometar.steps.base import TrainingStep
from prometar.steps.plain import PlainStep
from prometar.steps.prometar import ProMetaRStep
from prometar.steps.regularized import RegularizedStep, ungated_scale
from prometar.teacher import compute_text_teacher, load_templates
from prometar.trainer import LearningRateSchedule, Trainer, derive_seed, seed_everything

logger = logging.getLogger(__name__)

__all__ = ["SUBSET_FILE", "RunResult", "build_schedules", "config_fingerprint", "resolve_device", "run"]

SUBSET_FILE = "fewshot_subset.json"
"""The run's few-shot sample: ``{"train": [[path, label, class name], ...], "val": [...]}``."""


@dataclass(frozen=True)
class RunResult:
    """What a run produced.

    Attributes:
        metrics: Final metrics (see the module docstring per protocol).
        history: Per-epoch training metrics (empty for zero-shot).
        per_class: Evaluation set name → class name → accuracy (%).
        output_dir: Where the artifacts were written.
        config: The resolved config.
    """

    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    output_dir: Path | None = None
    config: RunConfig | None = None


def config_fingerprint(config: RunConfig) -> str:
    """Short hash of the config's scientific part and ``prometar.RESULT_REVISION`` (checks that a
    resumed checkpoint fits: one written by code of another result revision does not)."""
    text = json.dumps({**config.scientific_dict(), "result_revision": RESULT_REVISION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_device(device: str | None) -> torch.device:
    """``auto``/None → CUDA when available, else CPU; anything else as given."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``backbone.precision`` on ``device`` (None: full precision).

    Raises:
        ConfigError: ``fp16`` off CUDA (fp16 autocast on CPU is slow or unsupported; use fp32).
    """
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError(
                "backbone.precision",
                f"fp16 (autocast with a gradient scaler) needs a CUDA device, not {device}; "
                "use fp32 (or bf16) on CPU",
                source="<run config>",
            )
        return torch.float16
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def build_grad_scaler(
    autocast_dtype: torch.dtype | None, device: torch.device
) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 autocast (its gradients underflow unscaled); None otherwise."""
    if autocast_dtype != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def _plan(config: RunConfig, data_root: Path) -> tuple[DatasetSplits, DatasetSplits, list[EvaluationSet]]:
    """The few-shot sample (all classes), the training split and the evaluation sets of the config's
    protocol (``prometar.protocols``)."""
    key = config.data.dataset
    splits = read_dataset(key, data_root)
    sampled = few_shot(
        splits,
        key=key,
        data_root=data_root,
        shots=config.data.shots,
        seed=config.seed,
        cache_dir=config.data.cache_dir,
    )
    train_split, eval_sets = get_protocol(config.protocol).plan(sampled, key, config.eval.targets, data_root)
    return sampled, train_split, eval_sets


def build_schedules(config: RunConfig) -> tuple[LearningRateSchedule, LearningRateSchedule]:
    """Per-epoch learning rates of the prompt and gate optimisers.

    Both: constant warm-up, then the cosine restarted at the end of the warm-up, with period
    ``optim.epochs`` (``LearningRateSchedule``, the published Dassl schedule). With
    ``gate_optim.step_scheduler: false`` (official) the gate's schedule is never stepped and
    keeps its epoch-0 (warm-up) rate for the whole run.
    """
    o, g = config.optim, config.gate_optim
    prompt = LearningRateSchedule(o.lr, o.epochs, o.warmup_epochs, o.warmup_lr)
    gate = LearningRateSchedule(g.lr, o.epochs, g.warmup_epochs, g.warmup_lr, stepped=g.step_scheduler)
    return prompt, gate


def run(
    config: RunConfig,
    *,
    data_root: Path,
    output_dir: Path,
    callback: Callable[[dict[str, Any]], None] | None = None,
    resume_from: Path | None = None,
    device: str | None = None,
    keep_checkpoints: int | None = 1,
    source_prompts: Path | None = None,
) -> RunResult:
    """Train (unless zero-shot) and evaluate one run by its protocol, writing its artifacts.

    With ``source_prompts`` nothing trains: the run evaluates the prompts of a trained source model
    (a transfer protocol's targets, evaluated with the model a ``transfer_source`` run trained).

    Args:
        config: The resolved run config (``prometar.config.resolve_config``).
        data_root: The data root holding the datasets' folders.
        output_dir: Receives ``config.json``, ``fewshot_subset.json``, ``metrics.jsonl``,
            ``prompts.pt``, ``per_class.json`` and ``checkpoints/epoch_<k>/``.
        callback: Receives ``{"event": "epoch", "epoch": k, "checkpoint": path, ...metrics}``
            after each epoch's checkpoint is written (``k`` = completed epochs, from 1; protocol
            ``search`` adds ``val_base``, ``val_new``, ``val_hm``), and
            ``{"event": "final", ...final metrics}`` at the end. Exceptions propagate.
        resume_from: A ``checkpoints/epoch_<k>`` folder of an earlier, interrupted run of the
            same config; the run continues from it and ends as an uninterrupted run would.
        device: Overrides ``config.backbone.device`` (``cpu``, ``cuda``, ``cuda:1``, ``auto``).
        keep_checkpoints: How many of the latest epoch checkpoints to keep (None = all).
        source_prompts: The ``prompts.pt`` of the source model to evaluate instead of training
            (its config: this one's with the protocol and targets of ``protocols.source_config``).

    Returns:
        Final metrics, per-epoch history and per-class accuracies.

    Raises:
        prometar.errors.DataError: Missing or malformed data (names the path).
        prometar.errors.BackboneError: Unknown backbone or unusable weights.
        prometar.errors.CheckpointError: ``resume_from`` or ``source_prompts`` does not fit this
            run (names the file).
        prometar.errors.NonFiniteLossError: Training diverged (names epoch and step).
    """
    data_root = Path(data_root).expanduser().resolve()
    output_dir = Path(output_dir).expanduser().resolve()
    torch_device = resolve_device(device if device is not None else config.backbone.device)
    configure_backends(torch_device)  # TF32 for what stays fp32 outside autocast; nothing on CPU
    autocast_dtype = _autocast_dtype(config.backbone.precision, torch_device)
    scheme = config.scheme
    protocol = get_protocol(config.protocol)

    sampled, train_split, eval_sets = _plan(config, data_root)  # data errors before anything is written
    for eval_set in eval_sets:
        missing = find_missing_files(eval_set.items)
        if missing:
            raise DataError(
                f"image file(s) not found: {', '.join(missing[:3])}"
                f"{f' and {len(missing) - 3} more' if len(missing) > 3 else ''}"
            )
    if scheme != "zeroshot" and source_prompts is None:  # an evaluation of source prompts trains nothing
        missing = find_missing_files(train_split.train)
        if missing:
            raise DataError(f"image file(s) not found: {', '.join(missing[:3])}")

    seed_everything(config.seed)  # weights of a randomly initialised backbone (pretrained=None)
    backbone = load_clip(
        config.backbone.name,
        config.backbone.pretrained,
        device=torch_device,
        precision="fp32",
        cache_dir=config.backbone.cache_dir,
    )

    seed_everything(config.seed)  # prompt and gate initialisation
    p = config.prompts
    try:
        model = PromptedCLIP(
            backbone,
            text_tokens=p.text_tokens,
            text_depth=p.text_depth,
            vision_tokens=p.vision_tokens,
            vision_depth=p.vision_depth,
            text_init=p.text_init,
            truncate_text=p.truncate_text,
            sequence_first_blocks=p.sequence_first_blocks,
        )
    except ValueError as exc:  # a prompt design this backbone cannot take
        field = str(exc).split("=", 1)[0].split(" ", 1)[0]
        key = f"prompts.{field}" if field in {f.name for f in dataclasses.fields(p)} else "prompts"
        raise ConfigError(key, f"{exc} (backbone {config.backbone.name})", source="<run config>") from None
    if scheme == "prometar" and config.meta.gate_mode == "learned" and source_prompts is None:
        _check_gate_sizes(config, model)
    if source_prompts is not None:
        if scheme == "zeroshot":
            raise ConfigError("method", "zero-shot CLIP has no prompts to evaluate", source="<run config>")
        load_source_prompts(model, Path(source_prompts))

    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)  # nothing is written before the inputs check out
    write_json_atomic(output_dir / "config.json", config.to_dict(), indent=2, sort_keys=True)
    write_json_atomic(
        output_dir / SUBSET_FILE,
        subset_listing(sampled, config.data.dataset, data_root),
        indent=2,
        sort_keys=True,
    )
    metrics_path = output_dir / "metrics.jsonl"
    logger.info(
        "run %s / %s / seed %d / %d shots / %s on %s (%s)",
        config.method,
        config.data.dataset,
        config.seed,
        config.data.shots,
        config.protocol,
        torch_device,
        scheme,
    )

    test_transform = build_test_transform(backbone.image_size, backbone.mean, backbone.std)

    def evaluate(evaluator: Evaluator, eval_set: EvaluationSet) -> AccuracyResult:
        loader = build_loader(
            eval_set.items,
            test_transform,
            batch_size=config.data.test_batch_size,
            num_workers=config.data.num_workers,
            pin_memory=torch_device.type == "cuda",
            check_files=False,
        )
        return evaluator.evaluate(loader, eval_set.classnames)

    history: list[dict[str, Any]] = []
    if scheme == "zeroshot" or source_prompts is not None:
        with writing(metrics_path):
            metrics_path.write_text("")  # nothing trains here
    else:
        evaluate_epoch = None
        if protocol.evaluates_every_epoch:  # validation metrics every epoch, for early stopping (ASHA)
            epoch_evaluator = Evaluator(model, autocast_dtype=autocast_dtype)

            def evaluate_epoch() -> dict[str, float]:
                epoch_evaluator.clear()  # the prompts changed: text features once per class list and epoch
                accuracies = {
                    eval_set.metric: evaluate(epoch_evaluator, eval_set).accuracy for eval_set in eval_sets
                }
                return protocol.final_metrics(accuracies)

        try:
            history = _train(
                config,
                model,
                backbone,
                train_split,
                torch_device,
                autocast_dtype,
                output_dir,
                metrics_path,
                callback,
                resume_from,
                keep_checkpoints,
                evaluate_epoch,
            )
        except CheckpointError:  # resume_from does not fit: leave no half-written run behind
            if created:
                shutil.rmtree(output_dir, ignore_errors=True)
            raise

    accuracies: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {}
    evaluators: dict[str | None, Evaluator] = {}
    for eval_set in eval_sets:
        template = eval_set.template if scheme == "zeroshot" else None
        if template not in evaluators:
            evaluators[template] = Evaluator(model, template=template, autocast_dtype=autocast_dtype)
        result = evaluate(evaluators[template], eval_set)
        accuracies[eval_set.metric] = result.accuracy
        per_class[eval_set.metric] = result.per_class
        logger.info("%s = %.2f (%d/%d)", eval_set.metric, result.accuracy, result.correct, result.total)
    final = protocol.final_metrics(accuracies)

    with writing(output_dir / "prompts.pt"):
        torch.save(
            {name: prm.detach().cpu().clone() for name, prm in model.named_parameters() if prm.requires_grad},
            output_dir / "prompts.pt",
        )
    if config.eval.per_class:
        write_json_atomic(output_dir / "per_class.json", per_class, indent=2, sort_keys=True)
    with writing(metrics_path), open(metrics_path, "a") as fh:
        fh.write(json.dumps({events.EVENT: events.FINAL, **final}, sort_keys=True) + "\n")
    if callback is not None:
        callback({events.EVENT: events.FINAL, **final})
    return RunResult(final, history, per_class, output_dir, config)


def load_source_prompts(model: PromptedCLIP, path: Path) -> None:
    """Copy a trained source model's prompt tensors (its ``prompts.pt``) into ``model``.

    The file must hold exactly the model's trainable tensors, by name and shape: tensors only,
    read with ``weights_only`` (nothing in the file runs).

    Raises:
        CheckpointError: Unreadable file, other tensors or shapes (names the file).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same error to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read source prompts (tensors only; {reason[:200]})") from None
    wanted = {name: prm for name, prm in model.named_parameters() if prm.requires_grad}
    if not isinstance(state, dict) or set(state) != set(wanted):
        names = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: holds {names}, not this run's prompt tensors {sorted(wanted)}")
    for name, parameter in wanted.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(parameter.shape):
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise CheckpointError(f"{path}: {name} is {shape}, this run's is {tuple(parameter.shape)}")
        with torch.no_grad():
            parameter.copy_(tensor.to(parameter.device, parameter.dtype))


def drop_last(n_images: int, batch_size: int, requested: bool) -> bool:
    """Whether the training loader drops its last incomplete batch.

    As Dassl's ``build_data_loader`` (``drop_last=is_train and len(data_source) >= batch_size``):
    only when the training set holds at least one full batch; a smaller set trains one partial
    batch per epoch.
    """
    return requested and n_images >= batch_size


def _check_gate_sizes(config: RunConfig, model: PromptedCLIP) -> None:
    reduction = config.meta.gate_reduction
    repeat = config.meta.gate_repeat if config.meta.gate_repeat is not None else reduction
    for tower in ("text", "vision"):
        for name, tensor in model.prompt_parameters(tower).items():
            size = tensor.numel()
            if size % reduction or (size // reduction) * repeat != size:
                key = "meta.gate_reduction" if size % reduction else "meta.gate_repeat"
                raise ConfigError(
                    key,
                    f"prompt {name} has {size} values: the gate needs them divisible "
                    f"by meta.gate_reduction={reduction} and (size/r)·repeat={repeat} to "
                    "cover them",
                    source="<run config>",
                )


def _train(
    config: RunConfig,
    model: PromptedCLIP,
    backbone: Any,
    train_split: DatasetSplits,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    output_dir: Path,
    metrics_path: Path,
    callback: Callable[[dict[str, Any]], None] | None,
    resume_from: Path | None,
    keep_checkpoints: int | None,
    evaluate: Callable[[], dict[str, float]] | None,
) -> list[dict[str, Any]]:
    classnames = train_split.classnames
    prompts = {**model.prompt_parameters("text"), **model.prompt_parameters("vision")}
    o = config.optim
    prompt_schedule, gate_schedule_config = build_schedules(config)
    prompt_optimizer = torch.optim.SGD(
        list(prompts.values()), lr=prompt_schedule.at(0), momentum=o.momentum, weight_decay=o.weight_decay
    )

    scheme = config.scheme
    teacher_text = None
    if scheme != "plain":
        cache_dir = Path(config.data.cache_dir) / "text_teacher" if config.data.cache_dir else None
        teacher_text = compute_text_teacher(
            model,
            classnames,
            load_templates(),
            cache_dir=cache_dir,
            cache_key=f"{config.backbone.name}|{config.backbone.pretrained}",
        )

    gate = gate_optimizer = gate_schedule = None
    m = config.meta
    if scheme == "prometar" and m.gate_mode == "learned":
        gate = GateNetwork(
            {name: tuple(t.shape) for name, t in prompts.items()},
            reduction=m.gate_reduction,
            repeat=m.gate_repeat,
        ).to(device)
        g = config.gate_optim
        gate_schedule = gate_schedule_config
        gate_optimizer = torch.optim.SGD(
            gate.parameters(), lr=gate_schedule.at(0), momentum=g.momentum, weight_decay=g.weight_decay
        )
        if not g.step_scheduler:
            logger.info(
                "gate_optim.step_scheduler is false (official): the gate trains at %g all run",
                gate_schedule.at(0),
            )

    class_tokens = model.tokenize_classnames(classnames)
    grad_scaler = build_grad_scaler(autocast_dtype, device)
    r = config.regularizer
    scale = ungated_scale(r.ungated_strength)  # without a gate network: ProMetaR's gate strength
    step: TrainingStep
    if scheme == "plain":
        step = PlainStep(
            model,
            prompt_optimizer,
            class_tokens=class_tokens,
            autocast_dtype=autocast_dtype,
            grad_scaler=grad_scaler,
        )
    elif scheme == "regularized":
        step = RegularizedStep(
            model,
            prompt_optimizer,
            class_tokens=class_tokens,
            teacher_text=teacher_text,
            text_weight=r.text_weight,
            image_weight=r.image_weight,
            ungated_scale=scale,
            autocast_dtype=autocast_dtype,
            grad_scaler=grad_scaler,
        )
    else:
        step = ProMetaRStep(
            model,
            prompt_optimizer,
            class_tokens=class_tokens,
            teacher_text=teacher_text,
            text_weight=r.text_weight,
            image_weight=r.image_weight,
            ungated_scale=scale,
            gate=gate,
            gate_optimizer=gate_optimizer,
            gate_mode=m.gate_mode,
            inner_lr=m.inner_lr,
            meta_loss_scale=m.loss_scale,
            second_order=m.order == "second",
            beta=m.beta,
            autocast_dtype=autocast_dtype,
            grad_scaler=grad_scaler,
        )

    train_transform = build_train_transform(backbone.image_size, backbone.mean, backbone.std)
    dataset = ImageDataset(train_split.train, train_transform)
    d = config.data

    sampler = SeededSampler(len(dataset), torch.Generator())
    # One loader per run: each epoch its sampler draws the order and one augmentation seed per image
    # from the trainer's generator (reseeded per epoch), so the batches do not depend on the worker
    # count and the workers live across epochs (persistent) without changing what a resume sees.
    # Its own generator only seeds the workers' RNGs, which no longer decide any augmentation.
    loader = DataLoader(
        dataset,
        batch_size=d.batch_size,
        sampler=sampler,
        drop_last=drop_last(len(dataset), d.batch_size, d.drop_last),
        num_workers=d.num_workers,
        persistent_workers=d.num_workers > 0,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(derive_seed(config.seed, "workers")),
    )

    def make_loader(generator: torch.Generator) -> DataLoader:
        sampler.generator = generator
        return loader

    def on_epoch(event: dict[str, Any]) -> None:
        line = {
            k: v for k, v in event.items() if k != events.CHECKPOINT and k not in metric_names.MEASUREMENTS
        }
        with writing(metrics_path), open(metrics_path, "a") as fh:
            fh.write(json.dumps(_jsonable(line), sort_keys=True) + "\n")
        if callback is not None:
            callback(event)

    modules: dict[str, torch.nn.Module] = {"model": model}
    if gate is not None:
        modules["gate"] = gate
    trainer = Trainer(
        step,
        make_loader,
        modules=modules,
        prompt_optimizer=prompt_optimizer,
        prompt_schedule=prompt_schedule,
        gate_optimizer=gate_optimizer,
        gate_schedule=gate_schedule,
        epochs=o.epochs,
        seed=config.seed,
        device=device,
        checkpoint_dir=output_dir / "checkpoints",
        keep_checkpoints=keep_checkpoints,
        callback=on_epoch,
        fingerprint=config_fingerprint(config),
        evaluate=evaluate,
    )
    if resume_from is not None:
        trainer.load_checkpoint(Path(resume_from))
    # metrics.jsonl restarts from the epochs the (restored) history holds.
    with writing(metrics_path):
        metrics_path.write_text(
            "".join(
                json.dumps(_jsonable({events.EVENT: events.EPOCH, **record}), sort_keys=True) + "\n"
                for record in trainer.history
            )
        )
    try:
        return trainer.fit()
    finally:
        _stop_loader_workers(loader)


def _stop_loader_workers(loader: DataLoader) -> None:
    """End a loader's persistent worker processes now (training ended, normally or not).

    They would otherwise live as long as the loader object, which an exception's traceback can keep
    alive until a garbage collection — or until interpreter shutdown. Uses the DataLoader's own
    shutdown (``_iterator._shutdown_workers``), which torch also calls when the iterator is deleted.
    """
    iterator = getattr(loader, "_iterator", None)
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    loader._iterator = None


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out
