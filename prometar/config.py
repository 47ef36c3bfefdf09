"""The run configuration: one typed, frozen, validated config per training run.

A :class:`RunConfig` composes one frozen dataclass per concern (backbone, prompts, regularisers,
meta-regulariser, the two optimisers, data, evaluation). It is built from plain nested dicts —
presets, YAML files, dotted overrides — by :func:`build_config`, which rejects unknown keys, wrong
types and inconsistent values with a :class:`ConfigError` naming the dotted key, the value, why,
and where the value came from.

Field defaults are the published implementation's values (docs/algorithm.md §5). ProMetaR's two presets:

- ``official``: every value of docs/algorithm.md §5, quirks included (the gate optimiser's scheduler is
  never stepped, so the gate trains at 1e-6 the whole run; the gate repeat factor is the
  hard-coded 8 whatever the reduction).
- ``fixed``: ``official`` with those two quirks fixed (``gate_optim.step_scheduler: true``,
  ``meta.gate_repeat: null`` — the repeat follows ``meta.gate_reduction``).

The baselines' own base-to-new recipes, each value from its published configuration
(docs/recipes.md): ``coop_official`` (CoOp as CoCoOp's base-to-new table trained it),
``coop_official_imagenet`` (the same on ImageNet: 50 epochs), ``ivlp_official`` (IVLP as
PromptSRC's repository trains it) and ``vpt_official`` (VPT as MaPLe's repository trains it). The
protocols' recipes, ProMetaR's method trained as the field trains its transfer and few-shot
models: ``promptsrc_cross_dataset`` (PromptSRC's cross-dataset config: depth 3, 20 epochs; the
ImageNet source model of domain generalisation and cross-dataset transfer) and
``promptsrc_few_shot`` (PromptSRC's few-shot config: 50 epochs for every K).

Every other deviation from the published run is a named field below. Composition order for a run
(:func:`resolve_config`): preset → the method's settings (``prometar.methods``) → explicit
overrides; an explicit override always wins over what the method would set.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from prometar import methods as _methods
from prometar import protocols
from prometar.errors import ConfigError
from prometar.yamlio import MAX_SHOWN, YamlFileError, cap, parse_yaml, read_text_file

__all__ = [
    "BackboneConfig",
    "DataConfig",
    "EvalConfig",
    "GateOptimConfig",
    "MetaConfig",
    "OptimConfig",
    "PromptConfig",
    "RegularizerConfig",
    "RunConfig",
    "apply_overrides",
    "build_config",
    "describe_fields",
    "flatten",
    "list_presets",
    "load_preset",
    "load_yaml",
    "MAX_SEED",
    "parse_override",
    "resolve_config",
]

ProtocolName = Literal[tuple(protocols.list_protocols())]  # type: ignore[valid-type]
"""The run protocols of ``prometar.protocols`` (validated as a Literal)."""

MAX_SEED = 2**32 - 1
"""Largest run seed: seeds are 0 .. 2^32 − 1, the range NumPy's and torch's generators both accept."""

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def _doc(text: str, *, scientific: bool = True) -> dict[str, Any]:
    """Field metadata: a one-line help text, and whether the value changes results."""
    return {"doc": text, "scientific": scientific}


@dataclass(frozen=True)
class BackboneConfig:
    """The frozen CLIP (docs/algorithm.md §1)."""

    name: str = field(
        default="ViT-B-16-quickgelu",
        metadata=_doc("open_clip model name or project model config (tiny-test, toy-clip, ...)"),
    )
    pretrained: str | None = field(
        default="openai",
        metadata=_doc(
            "open_clip pretrained tag, path to a checkpoint (made absolute), or null for random init"
        ),
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        default="auto",
        metadata=_doc(
            "compute precision: auto = bf16 autocast on CUDA, fp32 on CPU; fp16 = fp16 autocast "
            "with a gradient scaler (CUDA only)"
        ),
    )
    device: str = field(
        default="auto",
        metadata=_doc("device: auto (CUDA when available), cpu, cuda or cuda:N", scientific=False),
    )
    cache_dir: str | None = field(
        default=None,
        metadata=_doc(
            "where pretrained weights are cached (open_clip's default when null)", scientific=False
        ),
    )


@dataclass(frozen=True)
class PromptConfig:
    """Deep text and vision prompts (docs/algorithm.md §1); depth 0 leaves a tower unprompted."""

    text_tokens: int = field(default=4, metadata=_doc("prompt tokens per prompted text block"))
    text_depth: int = field(
        default=9,
        metadata=_doc("number of prompted text blocks (block 0 input, then blocks 1..depth-1); 0 = none"),
    )
    vision_tokens: int = field(default=4, metadata=_doc("prompt tokens per prompted vision block"))
    vision_depth: int = field(default=9, metadata=_doc("number of prompted vision blocks; 0 = none"))
    deep_depth: int = field(
        default=9,
        metadata=_doc("depth the methods with deep prompts (ivlp, vpt, prometar) give their prompted towers"),
    )
    text_init: str | None = field(
        default="a photo of a",
        metadata=_doc(
            "text whose token embeddings initialise the block-0 text prompt; null = normal(0, 0.02)"
        ),
    )
    truncate_text: bool = field(
        default=True,
        metadata=_doc(
            "cut text sequences after the last EOS of the batch (exact speed-up, same results)",
            scientific=False,
        ),
    )
    sequence_first_blocks: bool = field(
        default=True,
        metadata=_doc(
            "run residual blocks sequence-first inside (~1.5x faster on CPU; float rounding only)",
            scientific=False,
        ),
    )


@dataclass(frozen=True)
class RegularizerConfig:
    """The frozen-teacher L1 feature regularisers (docs/algorithm.md §2)."""

    enabled: bool = field(
        default=True,
        metadata=_doc("use the text and image regularisers (set by the method's training scheme)"),
    )
    text_weight: float = field(default=50.0, metadata=_doc("weight of R_text (text features vs teacher)"))
    image_weight: float = field(default=20.0, metadata=_doc("weight of R_image (image features vs teacher)"))
    ungated_strength: Literal["prometar", "nominal"] = field(
        default="prometar",
        metadata=_doc(
            "without a learned gate (method ivlp_reg, meta.gate_mode off): prometar = the weights times "
            "ProMetaR's gate at initialisation (sigmoid(0) = 0.5), nominal = the weights alone"
        ),
    )


@dataclass(frozen=True)
class MetaConfig:
    """The meta-regulariser: gate network and the virtual-task step (docs/algorithm.md §3–§4)."""

    enabled: bool = field(
        default=True,
        metadata=_doc("run ProMetaR's gate-modulated, bi-level step (set by the method's training scheme)"),
    )
    inner_lr: float = field(default=5e-4, metadata=_doc("learning rate of the differentiable inner step"))
    loss_scale: float = field(default=5e-4, metadata=_doc("scale of the meta (query) loss (LR_RATIO)"))
    order: Literal["second", "first"] = field(
        default="second", metadata=_doc("second-order meta gradient (official) or first-order approximation")
    )
    beta: tuple[float, float] = field(
        default=(0.5, 0.5), metadata=_doc("Beta(a, b) parameters of the task-augmentation mixing weight")
    )
    gate_reduction: int = field(default=8, metadata=_doc("gate network reduction r: hidden size D/r"))
    gate_repeat: int | None = field(
        default=8,
        metadata=_doc("gate output repeat factor; official hard-codes 8; null = equal to gate_reduction"),
    )
    gate_mode: Literal["learned", "constant", "off"] = field(
        default="learned",
        metadata=_doc("learned gate network, constant 0.5 gate, or off (plain sum of gradients)"),
    )


@dataclass(frozen=True)
class OptimConfig:
    """Prompt optimiser: SGD, constant warm-up then cosine, stepped per epoch (docs/algorithm.md §5)."""

    name: Literal["sgd"] = field(default="sgd", metadata=_doc("optimiser of the prompt tensors"))
    lr: float = field(default=0.0025, metadata=_doc("peak learning rate of the prompts"))
    momentum: float = field(default=0.9, metadata=_doc("SGD momentum"))
    weight_decay: float = field(default=5e-4, metadata=_doc("SGD weight decay"))
    epochs: int = field(default=10, metadata=_doc("training epochs; also the cosine period T"))
    warmup_epochs: int = field(default=1, metadata=_doc("epochs at the constant warm-up learning rate"))
    warmup_lr: float = field(default=1e-5, metadata=_doc("constant learning rate during warm-up"))
    scheduler: Literal["cosine"] = field(
        default="cosine",
        metadata=_doc("schedule after warm-up, restarted at its end: lr·(1+cos(π·(e−W)/T))/2 at epoch e ≥ W"),
    )


@dataclass(frozen=True)
class GateOptimConfig:
    """Gate-network optimiser: SGD with its own warm-up + cosine schedule (docs/algorithm.md §5)."""

    lr: float = field(default=2.5e-4, metadata=_doc("intended peak learning rate of the gate network"))
    momentum: float = field(default=0.9, metadata=_doc("SGD momentum"))
    weight_decay: float = field(default=5e-4, metadata=_doc("SGD weight decay"))
    warmup_epochs: int = field(default=1, metadata=_doc("epochs at the constant warm-up learning rate"))
    warmup_lr: float = field(default=1e-6, metadata=_doc("constant learning rate during warm-up"))
    step_scheduler: bool = field(
        default=False,
        metadata=_doc(
            "step the gate scheduler per epoch; official never does, so the gate stays at warmup_lr"
        ),
    )


@dataclass(frozen=True)
class DataConfig:
    """Dataset, few-shot sampling and loaders (shared/reference/datasets.md)."""

    dataset: str = field(default="", metadata=_doc("dataset key (training source); required"))
    shots: int = field(default=16, metadata=_doc("training images per class (few-shot K)"))
    batch_size: int = field(default=4, metadata=_doc("training batch size"))
    drop_last: bool = field(
        default=True,
        metadata=_doc(
            "drop the last incomplete training batch when the set holds a full one (Dassl); "
            "a smaller set trains one partial batch"
        ),
    )
    test_batch_size: int = field(default=100, metadata=_doc("evaluation batch size"))
    num_workers: int = field(default=4, metadata=_doc("data loader worker processes", scientific=False))
    cache_dir: str | None = field(
        default=None,
        metadata=_doc(
            "cache folder for few-shot splits and text teachers (made absolute); null = few-shot "
            "splits in <dataset>/split_fewshot_prometar/, teachers not cached",
            scientific=False,
        ),
    )


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation (docs/algorithm.md §6)."""

    targets: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "target datasets of the protocols that evaluate on other datasets; "
            "empty = the protocol's standard list"
        ),
    )
    per_class: bool = field(
        default=True, metadata=_doc("write per-class accuracies (per_class.json)", scientific=False)
    )


@dataclass(frozen=True)
class RunConfig:
    """One training run: method × dataset × seed × shots × hyper-parameters × protocol."""

    method: str = field(
        default="prometar", metadata=_doc("prompt design × training scheme (see prometar.methods)")
    )
    protocol: ProtocolName = field(
        default=protocols.DEFAULT,
        metadata=_doc(
            "evaluation protocol: " + " | ".join(protocols.list_protocols()) + " (prometar.protocols)"
        ),
    )
    seed: int = field(default=1, metadata=_doc("run seed: few-shot sampling, initialisation, shuffling"))
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    gate_optim: GateOptimConfig = field(default_factory=GateOptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def scheme(self) -> Literal["zeroshot", "plain", "regularized", "prometar"]:
        """The training scheme the config selects."""
        if self.method == "zeroshot":
            return "zeroshot"
        if self.meta.enabled:
            return "prometar"
        if self.regularizer.enabled:
            return "regularized"
        return "plain"

    def to_dict(self) -> dict[str, Any]:
        """Nested, JSON-ready dict; ``build_config(cfg.to_dict()) == cfg``."""
        return _to_plain(dataclasses.asdict(self))

    def scientific_dict(self) -> dict[str, Any]:
        """The subset of :meth:`to_dict` that can change a result (hashed into trial keys).

        Leaves out what only affects speed, placement or bookkeeping (the device, weight and
        few-shot cache folders, loader workers, exact text truncation, per-class output) and the
        keys this run's method never reads (:meth:`ignored_keys`).
        """
        scientific = _to_plain(_scientific(self))
        # prompts.deep_depth only sets the depths of deep designs, which are keys of their own.
        for key in (*self.ignored_keys(), "prompts.deep_depth"):
            section, _, name = key.partition(".")
            if name:
                scientific.get(section, {}).pop(name, None)
            else:
                scientific.pop(section, None)
        return {section: value for section, value in scientific.items() if value != {}}

    def ignored_keys(self) -> tuple[str, ...]:
        """Dotted keys this run never reads, whatever their value, given its scheme and prompts.

        Zero-shot trains nothing: no optimiser, regulariser, meta step, training batches or
        prompt tokens (it evaluates with the dataset's single template). The plain scheme has
        no regulariser and no meta step; the regularised scheme no meta step. A gate that is not
        learned (``meta.gate_mode``: ``constant``, ``off``) has no network, so no gate optimiser
        and no gate sizes; a gate that is there (``learned``, ``constant``) is the regulariser's
        scale, so ``regularizer.ungated_strength`` goes unread. A tower without prompts reads no
        token count. A design without deep prompts (zero-shot, CoOp) never reads
        ``prompts.deep_depth``.
        """
        sections = {
            "zeroshot": ("optim", "gate_optim", "regularizer", "meta"),
            "plain": ("gate_optim", "regularizer", "meta"),
            "regularized": ("gate_optim", "meta"),
            "prometar": (),
        }[self.scheme]
        keys = [f"{section}.{f.name}" for section in sections for f in dataclasses.fields(_SECTIONS[section])]
        if not _methods.get_method(self.method).uses_deep_depth:
            keys.append("prompts.deep_depth")
        if self.scheme == "zeroshot":
            keys += [
                "prompts.text_tokens",
                "prompts.vision_tokens",
                "prompts.text_init",
                "data.batch_size",
                "data.drop_last",
            ]
        else:
            if self.prompts.text_depth == 0:
                keys.append("prompts.text_tokens")
            if self.prompts.vision_depth == 0:
                keys.append("prompts.vision_tokens")
        if self.scheme == "prometar" and self.meta.gate_mode != "learned":
            keys += [f"gate_optim.{f.name}" for f in dataclasses.fields(GateOptimConfig)]
            keys += ["meta.gate_reduction", "meta.gate_repeat"]
        if self.scheme == "prometar" and self.meta.gate_mode != "off":
            keys.append("regularizer.ungated_strength")  # a gate scales the regulariser gradient
        return tuple(dict.fromkeys(keys))

    def to_json(self) -> str:
        """Canonical JSON of :meth:`to_dict` (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)


_SECTIONS: dict[str, type] = {
    "backbone": BackboneConfig,
    "prompts": PromptConfig,
    "regularizer": RegularizerConfig,
    "meta": MetaConfig,
    "optim": OptimConfig,
    "gate_optim": GateOptimConfig,
    "data": DataConfig,
    "eval": EvalConfig,
}


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _scientific(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _scientific(value)
        elif f.metadata.get("scientific", True):
            out[f.name] = value
    return out


def describe_fields() -> dict[str, str]:
    """One-line help text per dotted key (``{"optim.lr": "peak learning rate ..."}``)."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(RunConfig):
        section = _SECTIONS.get(f.name)
        if section is None:
            out[f.name] = f.metadata.get("doc", "")
        else:
            for g in dataclasses.fields(section):
                out[f"{f.name}.{g.name}"] = g.metadata.get("doc", "")
    return out


def load_yaml(text: str, *, source: str = "<yaml>") -> Any:
    """:func:`parse_yaml`, with invalid YAML as a :class:`ConfigError` naming ``source``.

    Raises:
        ConfigError: The text is not valid YAML.
    """
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML: {yaml_problem(exc)}", source=source) from None


def yaml_problem(error: yaml.YAMLError) -> str:
    """One line for a YAML error: ``line L, column C: what`` (value echoes already capped)."""
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error)
    return cap(f"{where}{problem}", 2 * MAX_SHOWN)


# --------------------------------------------------------------------------------------------
# Presets


def _official() -> dict[str, Any]:
    """docs/algorithm.md §5, quirks included: the field defaults are the official values."""
    return RunConfig().to_dict()


def _fixed() -> dict[str, Any]:
    d = _official()
    d["gate_optim"]["step_scheduler"] = True
    d["meta"]["gate_repeat"] = None
    return d


# The baselines' own base-to-new recipes (docs/recipes.md tabulates every value with its source
# and the values that could not be sourced; tests/test_recipes.py checks the two agree). Each
# starts from `official` and sets every value its recipe fixes, even where it equals official's.


def _coop_official() -> dict[str, Any]:
    # CoOp as CoCoOp's base-to-new table trained it (the CoOp row published beside ours):
    # KaiyangZhou/CoOp scripts/cocoop/base2new_train.sh ("CFG=vit_b16_ctxv1 # uncomment this when
    # TRAINER=CoOp") -> configs/trainers/CoOp/vit_b16_ctxv1.yaml; CoOp defaults from its train.py.
    d = _official()
    d["method"] = "coop"
    d["prompts"]["text_tokens"] = 4  # trainers/coop.py: n_ctx = number of words of CTX_INIT
    d["prompts"]["text_init"] = "a photo of a"  # vit_b16_ctxv1.yaml TRAINER.COOP.CTX_INIT
    d["prompts"]["text_depth"] = 1  # trainers/coop.py: context vectors at the text input only
    d["prompts"]["vision_depth"] = 0  # trainers/coop.py: the image encoder is CLIP's, unprompted
    d["regularizer"]["enabled"] = False  # trainers/coop.py forward_backward: cross-entropy only
    d["meta"]["enabled"] = False
    d["optim"]["name"] = "sgd"  # vit_b16_ctxv1.yaml OPTIM.NAME
    d["optim"]["lr"] = 0.002  # vit_b16_ctxv1.yaml OPTIM.LR
    d["optim"]["momentum"] = 0.9  # Dassl config/defaults.py OPTIM.MOMENTUM (not overridden)
    d["optim"]["weight_decay"] = 5e-4  # Dassl config/defaults.py OPTIM.WEIGHT_DECAY
    d["optim"]["epochs"] = 200  # vit_b16_ctxv1.yaml OPTIM.MAX_EPOCH
    d["optim"]["warmup_epochs"] = 1  # vit_b16_ctxv1.yaml OPTIM.WARMUP_EPOCH
    d["optim"]["warmup_lr"] = 1e-5  # vit_b16_ctxv1.yaml OPTIM.WARMUP_CONS_LR (WARMUP_TYPE constant)
    d["optim"]["scheduler"] = "cosine"  # vit_b16_ctxv1.yaml OPTIM.LR_SCHEDULER
    d["data"]["shots"] = 16  # scripts/cocoop/base2new_train.sh SHOTS
    d["data"]["batch_size"] = 32  # vit_b16_ctxv1.yaml DATALOADER.TRAIN_X.BATCH_SIZE
    d["data"]["test_batch_size"] = 100  # vit_b16_ctxv1.yaml DATALOADER.TEST.BATCH_SIZE
    return d


def _coop_official_imagenet() -> dict[str, Any]:
    # CoOp on ImageNet: scripts/cocoop/base2new_train.sh ("CFG=vit_b16_ep50_ctxv1 # uncomment this
    # when TRAINER=CoOp and DATASET=imagenet") -> configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml,
    # which differs from vit_b16_ctxv1.yaml in OPTIM.MAX_EPOCH only.
    d = _coop_official()
    d["optim"]["epochs"] = 50  # vit_b16_ep50_ctxv1.yaml OPTIM.MAX_EPOCH
    return d


def _ivlp_official() -> dict[str, Any]:
    # IVLP as PromptSRC's repository trains it for base-to-new (the prompt design ProMetaR builds
    # on): muzairkhattak/PromptSRC scripts/independent-vlp/base2new_train_ivlp.sh ->
    # configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml.
    d = _official()
    d["method"] = "ivlp"
    d["prompts"]["text_tokens"] = 4  # TRAINER.IVLP.N_CTX_TEXT
    d["prompts"]["vision_tokens"] = 4  # TRAINER.IVLP.N_CTX_VISION
    d["prompts"]["text_depth"] = 9  # TRAINER.IVLP.PROMPT_DEPTH_TEXT
    d["prompts"]["vision_depth"] = 9  # TRAINER.IVLP.PROMPT_DEPTH_VISION
    d["prompts"]["deep_depth"] = 9  # the depth the ivlp method gives both towers (same 9)
    d["prompts"]["text_init"] = "a photo of a"  # TRAINER.IVLP.CTX_INIT
    d["regularizer"]["enabled"] = False  # plain IVLP: cross-entropy only
    d["meta"]["enabled"] = False
    d["optim"]["name"] = "sgd"  # OPTIM.NAME
    d["optim"]["lr"] = 0.0025  # OPTIM.LR
    d["optim"]["momentum"] = 0.9  # Dassl config/defaults.py OPTIM.MOMENTUM (not overridden)
    d["optim"]["weight_decay"] = 5e-4  # Dassl config/defaults.py OPTIM.WEIGHT_DECAY
    d["optim"]["epochs"] = 20  # OPTIM.MAX_EPOCH; base2new_test_ivlp.sh LOADEP=20 (the last epoch)
    d["optim"]["warmup_epochs"] = 1  # OPTIM.WARMUP_EPOCH
    d["optim"]["warmup_lr"] = 1e-5  # OPTIM.WARMUP_CONS_LR (WARMUP_TYPE constant)
    d["optim"]["scheduler"] = "cosine"  # OPTIM.LR_SCHEDULER
    d["data"]["shots"] = 16  # base2new_train_ivlp.sh SHOTS
    d["data"]["batch_size"] = 4  # DATALOADER.TRAIN_X.BATCH_SIZE
    d["data"]["test_batch_size"] = 100  # DATALOADER.TEST.BATCH_SIZE
    return d


def _vpt_official() -> dict[str, Any]:
    # VPT (deep vision prompts) as MaPLe's repository trains it for base-to-new, the row MaPLe's
    # README publishes: muzairkhattak/multimodal-prompt-learning scripts/vpt/base2new_train_vpt.sh
    # -> configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml; the text side is trainers/vpt.py.
    d = _official()
    d["method"] = "vpt"
    d["prompts"]["vision_tokens"] = 8  # TRAINER.VPT.N_CTX_VISION
    d["prompts"]["vision_depth"] = 12  # TRAINER.VPT.PROMPT_DEPTH_VISION
    d["prompts"]["deep_depth"] = 12  # the depth the vpt method gives the vision tower (same 12)
    d["prompts"]["text_depth"] = 0  # trainers/vpt.py: fixed hand-crafted text features
    d["prompts"]["text_init"] = "a photo of a"  # trainers/vpt.py FixedEmbeddings: "a photo of a {}."
    d["regularizer"]["enabled"] = False  # trainers/vpt.py forward_backward: cross-entropy only
    d["meta"]["enabled"] = False
    d["optim"]["name"] = "sgd"  # OPTIM.NAME
    d["optim"]["lr"] = 0.0025  # OPTIM.LR
    d["optim"]["momentum"] = 0.9  # Dassl config/defaults.py OPTIM.MOMENTUM (not overridden)
    d["optim"]["weight_decay"] = 5e-4  # Dassl config/defaults.py OPTIM.WEIGHT_DECAY
    d["optim"]["epochs"] = 5  # OPTIM.MAX_EPOCH; base2new_test_vpt.sh LOADEP=5 (the last epoch)
    d["optim"]["warmup_epochs"] = 1  # OPTIM.WARMUP_EPOCH
    d["optim"]["warmup_lr"] = 1e-5  # OPTIM.WARMUP_CONS_LR (WARMUP_TYPE constant)
    d["optim"]["scheduler"] = "cosine"  # OPTIM.LR_SCHEDULER
    d["data"]["shots"] = 16  # base2new_train_vpt.sh SHOTS
    d["data"]["batch_size"] = 4  # DATALOADER.TRAIN_X.BATCH_SIZE
    d["data"]["test_batch_size"] = 100  # DATALOADER.TEST.BATCH_SIZE
    return d


def _promptsrc(depth: int, epochs: int) -> dict[str, Any]:
    # ProMetaR's method (its regularisers, gate and meta step keep the official values) trained
    # with a PromptSRC recipe: muzairkhattak/PromptSRC configs/trainers/PromptSRC/<config>.yaml.
    d = _official()
    d["prompts"]["text_tokens"] = 4  # TRAINER.PROMPTSRC.N_CTX_TEXT
    d["prompts"]["vision_tokens"] = 4  # TRAINER.PROMPTSRC.N_CTX_VISION
    d["prompts"]["text_depth"] = depth  # TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT
    d["prompts"]["vision_depth"] = depth  # TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION
    d["prompts"]["deep_depth"] = depth  # the depth deep designs give their towers (the two above)
    d["prompts"]["text_init"] = "a photo of a"  # TRAINER.PROMPTSRC.CTX_INIT
    d["optim"]["lr"] = 0.0025  # OPTIM.LR
    d["optim"]["epochs"] = epochs  # OPTIM.MAX_EPOCH
    d["optim"]["warmup_epochs"] = 1  # OPTIM.WARMUP_EPOCH
    d["optim"]["warmup_lr"] = 1e-5  # OPTIM.WARMUP_CONS_LR (WARMUP_TYPE constant)
    d["data"]["batch_size"] = 4  # DATALOADER.TRAIN_X.BATCH_SIZE
    d["data"]["test_batch_size"] = 100  # DATALOADER.TEST.BATCH_SIZE
    return d


def _promptsrc_cross_dataset() -> dict[str, Any]:
    # The field's recipe for the ImageNet source model of cross-dataset transfer and domain
    # generalisation (one model serves both: PromptSRC docs/TRAIN.md, "(3) Domain Generalization
    # setting"): vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml, depth 3, 20 epochs
    # (scripts/promptsrc/xd_test.sh --load-epoch 20).
    d = _promptsrc(depth=3, epochs=20)
    d["data"]["shots"] = 16  # scripts/promptsrc/xd_train.sh SHOTS=16
    return d


def _promptsrc_few_shot() -> dict[str, Any]:
    # The field's few-shot recipe: scripts/promptsrc/few_shot.sh trains every K with one config,
    # vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml: depth 9, 50 epochs (reproduce_few_shot.sh
    # LOADEP=50); the shots come from the sweep (few_shot.sh SHOTS=$2).
    return _promptsrc(depth=9, epochs=50)


_PRESETS: dict[str, Any] = {
    "official": _official,
    "fixed": _fixed,
    "coop_official": _coop_official,
    "coop_official_imagenet": _coop_official_imagenet,
    "ivlp_official": _ivlp_official,
    "vpt_official": _vpt_official,
    "promptsrc_cross_dataset": _promptsrc_cross_dataset,
    "promptsrc_few_shot": _promptsrc_few_shot,
}


def list_presets() -> list[str]:
    """Names of the built-in presets."""
    return list(_PRESETS)


def load_preset(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """A preset as a nested dict: a built-in name, or a path to a run-config YAML file.

    A YAML file may hold any subset of the run config; missing values take the field defaults
    (the official values) when the config is built.

    Raises:
        ConfigError: Unknown name (the message lists the presets), unreadable file or bad YAML.
    """
    key = str(name_or_path)
    if key in _PRESETS:
        return _PRESETS[key]()
    path = Path(key)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        try:
            text = read_text_file(path)
        except YamlFileError as exc:
            raise ConfigError(
                "", f"cannot read preset file {path.absolute()}: {exc.reason}", source=key
            ) from None
        data = load_yaml(text, source=key)
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError("", f"a run config must be a mapping, got {type(data).__name__}", source=key)
        return data
    raise ConfigError(
        "preset",
        f"unknown preset {key!r}; valid presets: {', '.join(_PRESETS)} (or a path to a run-config YAML file)",
        source="<preset>",
    )


# --------------------------------------------------------------------------------------------
# Overrides


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``"a.b=value"`` into ``("a.b", value)`` with the value read as YAML.

    ``optim.lr=1e-3`` gives a float, ``meta.gate_repeat=null`` None, ``meta.beta=[0.3,0.3]`` a list.

    Raises:
        ConfigError: No ``=``, or an empty key.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(key, f"override {text!r} must look like KEY=VALUE", source="<overrides>")
    value = load_yaml(raw, source=f"<override {key}>") if raw.strip() else ""
    return key, value


def apply_overrides(
    d: Mapping[str, Any], overrides: Mapping[str, Any], *, source: str = "<overrides>"
) -> dict[str, Any]:
    """Return a deep copy of ``d`` with dotted-key values set.

    Keys are checked against the run-config schema here, so a typo fails before anything runs.

    Raises:
        ConfigError: Unknown dotted key (the message lists the valid keys of that level).
    """
    out = copy.deepcopy(dict(d))
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if len(parts) == 1 and parts[0] in _SECTIONS and isinstance(value, Mapping):
            # A whole section given as a mapping merges into it, key by key.
            out = apply_overrides(out, {f"{dotted}.{k}": v for k, v in value.items()}, source=source)
            continue
        _check_key(parts, source)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return out


def _check_key(parts: list[str], source: str) -> None:
    dotted = ".".join(parts)
    top = {f.name for f in dataclasses.fields(RunConfig)}
    if parts[0] not in top:
        raise ConfigError(dotted, f"unknown key; valid keys: {', '.join(sorted(top))}", source=source)
    section = _SECTIONS.get(parts[0])
    if section is None:
        if len(parts) > 1:
            raise ConfigError(dotted, f"{parts[0]!r} is not a section", source=source)
        return
    if len(parts) == 1:
        return  # a non-mapping value for a section: build_config names the problem
    if len(parts) != 2:
        raise ConfigError(dotted, f"expected {parts[0]}.<field>", source=source)
    names = {f.name for f in dataclasses.fields(section)}
    if parts[1] not in names:
        raise ConfigError(
            dotted, f"unknown key; valid keys of {parts[0]!r}: {', '.join(sorted(names))}", source=source
        )


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested dict into dotted keys (``{"optim.lr": 0.0025, ...}``), e.g. MLflow params."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{dotted}."))
        else:
            out[dotted] = value
    return out


# --------------------------------------------------------------------------------------------
# Building and validating


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} {_type_name(args[0])}"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """Check ``value`` against a field type; return the canonical value or raise _Mismatch."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp) and isinstance(value, str | type(None)):
            return value
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Mismatch
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"unsupported config field type {tp!r}")  # programming error


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a config section (resolved once: a sweep builds thousands)."""
    return typing.get_type_hints(cls)


def _build_section(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(prefix, f"must be a mapping, got {data!r}", source=source)
    hints = _type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"{prefix}.{unknown[0]}" if prefix else str(unknown[0]),
            f"unknown key; valid keys{f' of {prefix!r}' if prefix else ''}: {', '.join(names)}",
            source=source,
        )
    kwargs: dict[str, Any] = {}
    for name in names:
        if name not in data:
            continue
        key = f"{prefix}.{name}" if prefix else name
        if name in _SECTIONS and not prefix:
            kwargs[name] = _build_section(_SECTIONS[name], data[name], name, source)
            continue
        try:
            kwargs[name] = _coerce(data[name], hints[name])
        except _Mismatch:
            raise ConfigError(
                key, f"got {data[name]!r}, expected {_type_name(hints[name])}", source=source
            ) from None
    return cls(**kwargs)


def _is_path_like(value: str) -> bool:
    return (
        "/" in value
        or os.sep in value
        or value.startswith(("~", "."))
        or value.lower().endswith(_CHECKPOINT_SUFFIXES)
    )


def _absolute(value: str) -> str:
    return str(Path(value).expanduser().resolve())


def build_config(d: Mapping[str, Any], *, source: str = "<dict>") -> RunConfig:
    """Validate a nested dict into a :class:`RunConfig`.

    Missing values take the field defaults (the official values); ``data.dataset`` is required.
    A relative checkpoint path in ``backbone.pretrained`` and the cache folders are made absolute
    against the current directory now (trials change directories). An empty ``eval.targets`` of a
    generalisation protocol becomes that protocol's standard target list.

    Args:
        d: Nested dict, e.g. from :func:`load_preset` and :func:`apply_overrides`.
        source: Where ``d`` came from, for error messages.

    Raises:
        ConfigError: Unknown key, wrong type or inconsistent values; names the dotted key.
    """
    cfg = _build_section(RunConfig, d, "", source)
    cfg = _normalise(cfg)
    _validate(cfg, source)
    return cfg


def _normalise(cfg: RunConfig) -> RunConfig:
    backbone = cfg.backbone
    if backbone.pretrained is not None and _is_path_like(backbone.pretrained):
        backbone = dataclasses.replace(backbone, pretrained=_absolute(backbone.pretrained))
    if backbone.cache_dir is not None:
        backbone = dataclasses.replace(backbone, cache_dir=_absolute(backbone.cache_dir))
    data = cfg.data
    if data.cache_dir is not None:
        data = dataclasses.replace(data, cache_dir=_absolute(data.cache_dir))
    evaluation = cfg.eval
    if not evaluation.targets:
        evaluation = dataclasses.replace(
            evaluation, targets=protocols.get_protocol(cfg.protocol).default_targets
        )
    return dataclasses.replace(cfg, backbone=backbone, data=data, eval=evaluation)


def _validate(cfg: RunConfig, source: str) -> None:
    def fail(key: str, value: Any, why: str) -> None:
        raise ConfigError(key, f"{value!r} {why}", source=source)

    try:
        _methods.get_method(cfg.method)
    except KeyError as exc:
        raise ConfigError("method", exc.args[0], source=source) from None

    from prometar.data import catalog

    datasets = catalog.list_datasets()
    if not cfg.data.dataset:
        raise ConfigError(
            "data.dataset", f"is required; valid datasets: {', '.join(datasets)}", source=source
        )
    if cfg.data.dataset not in datasets:
        fail("data.dataset", cfg.data.dataset, f"is not a dataset; valid datasets: {', '.join(datasets)}")
    protocol = protocols.get_protocol(cfg.protocol)
    if not catalog.get_dataset(cfg.data.dataset).base_to_new:  # every protocol trains on data.dataset
        fail("data.dataset", cfg.data.dataset, "is test-only and cannot be trained on")
    if protocol.sources and cfg.data.dataset not in protocol.sources:
        fail(
            "data.dataset",
            cfg.data.dataset,
            f"cannot be the source of protocol {cfg.protocol!r}: it trains on "
            f"{' / '.join(protocol.sources)} (its targets share that label space)",
        )
    for i, target in enumerate(cfg.eval.targets):
        if target not in datasets:
            fail(f"eval.targets[{i}]", target, f"is not a dataset; valid datasets: {', '.join(datasets)}")
    if cfg.eval.targets and not protocol.takes_targets:
        with_targets = [
            name for name in protocols.list_protocols() if protocols.get_protocol(name).takes_targets
        ]
        fail(
            "eval.targets",
            list(cfg.eval.targets),
            f"only apply to {' / '.join(with_targets)}, not protocol {cfg.protocol!r}",
        )

    if not 0 <= cfg.seed <= MAX_SEED:
        fail("seed", cfg.seed, f"must be in 0..{MAX_SEED} (2^32 - 1)")

    positive_ints = {
        "prompts.text_tokens": cfg.prompts.text_tokens,
        "prompts.vision_tokens": cfg.prompts.vision_tokens,
        "meta.gate_reduction": cfg.meta.gate_reduction,
        "data.shots": cfg.data.shots,
        "data.batch_size": cfg.data.batch_size,
        "data.test_batch_size": cfg.data.test_batch_size,
    }
    if cfg.meta.gate_repeat is not None:
        positive_ints["meta.gate_repeat"] = cfg.meta.gate_repeat
    for key, value in positive_ints.items():
        if value < 1:
            fail(key, value, "must be >= 1")
    non_negative = {
        "prompts.text_depth": cfg.prompts.text_depth,
        "prompts.vision_depth": cfg.prompts.vision_depth,
        "optim.epochs": cfg.optim.epochs,
        "optim.warmup_epochs": cfg.optim.warmup_epochs,
        "gate_optim.warmup_epochs": cfg.gate_optim.warmup_epochs,
        "data.num_workers": cfg.data.num_workers,
        "regularizer.text_weight": cfg.regularizer.text_weight,
        "regularizer.image_weight": cfg.regularizer.image_weight,
        "optim.momentum": cfg.optim.momentum,
        "optim.weight_decay": cfg.optim.weight_decay,
        "gate_optim.momentum": cfg.gate_optim.momentum,
        "gate_optim.weight_decay": cfg.gate_optim.weight_decay,
        "meta.inner_lr": cfg.meta.inner_lr,
        "meta.loss_scale": cfg.meta.loss_scale,
    }
    for key, value in non_negative.items():
        if not math.isfinite(value) or value < 0:
            fail(key, value, "must be a finite number >= 0")
    positive_floats = {
        "optim.lr": cfg.optim.lr,
        "optim.warmup_lr": cfg.optim.warmup_lr,
        "gate_optim.lr": cfg.gate_optim.lr,
        "gate_optim.warmup_lr": cfg.gate_optim.warmup_lr,
    }
    for key, value in positive_floats.items():
        if not math.isfinite(value) or value <= 0:
            fail(key, value, "must be a finite number > 0")
    for i, b in enumerate(cfg.meta.beta):
        if not math.isfinite(b) or b <= 0:
            fail(f"meta.beta[{i}]", b, "must be > 0")
    if cfg.optim.momentum >= 1 or cfg.gate_optim.momentum >= 1:
        key = "optim.momentum" if cfg.optim.momentum >= 1 else "gate_optim.momentum"
        fail(key, getattr(cfg, key.split(".")[0]).momentum, "must be < 1")
    if cfg.optim.warmup_epochs > cfg.optim.epochs:
        fail("optim.warmup_epochs", cfg.optim.warmup_epochs, f"exceeds optim.epochs ({cfg.optim.epochs})")
    if cfg.backbone.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", cfg.backbone.device):
        fail("backbone.device", cfg.backbone.device, "must be auto, cpu, cuda, cuda:N or mps")

    zeroshot = cfg.method == "zeroshot"
    prompted = cfg.prompts.text_depth > 0 or cfg.prompts.vision_depth > 0
    if zeroshot and prompted:
        fail(
            "prompts.text_depth" if cfg.prompts.text_depth else "prompts.vision_depth",
            cfg.prompts.text_depth or cfg.prompts.vision_depth,
            "must be 0 for method 'zeroshot' (unprompted CLIP)",
        )
    if not zeroshot and not prompted:
        fail(
            "prompts.text_depth",
            0,
            f"and prompts.vision_depth 0 leave method {cfg.method!r} nothing to train",
        )
    if not zeroshot and cfg.optim.epochs < 1:
        fail("optim.epochs", cfg.optim.epochs, f"must be >= 1 for method {cfg.method!r}")
    if cfg.meta.enabled and not cfg.regularizer.enabled:
        fail(
            "meta.enabled",
            True,
            "requires regularizer.enabled (the gate modulates the regulariser gradients)",
        )
    if zeroshot and (cfg.meta.enabled or cfg.regularizer.enabled):
        key = "meta.enabled" if cfg.meta.enabled else "regularizer.enabled"
        fail(key, True, "must be false for method 'zeroshot' (no training)")
    if protocol.takes_targets and not cfg.eval.targets:
        fail("eval.targets", [], f"protocol {cfg.protocol!r} needs at least one target")


def resolve_config(
    preset: str | os.PathLike = "official",
    overrides: Mapping[str, Any] | None = None,
    *,
    source: str | None = None,
) -> RunConfig:
    """Compose and validate a run config: preset → method settings → explicit overrides.

    The method is ``overrides["method"]`` if given, else the preset's. Its settings
    (``prometar.methods.get_method(name).settings(prompts.deep_depth)``: prompt depths and
    training scheme) are
    written over the preset; then every explicit override is applied, so an explicit override of
    a key the method also sets wins.

    Args:
        preset: Built-in preset name or path to a run-config YAML file.
        overrides: Dotted keys to values (``{"data.dataset": "eurosat", "optim.lr": 1e-3}``).
        source: Name used in error messages; default: the preset name or path.

    Raises:
        ConfigError: Anything invalid, naming the dotted key.
    """
    overrides = dict(overrides or {})
    src = source or str(preset)
    d = load_preset(preset)
    method = overrides.get("method", d.get("method", "prometar"))
    if not isinstance(method, str):
        raise ConfigError("method", f"got {method!r}, expected a method name", source="<overrides>")
    deep_depth = overrides.get("prompts.deep_depth", (d.get("prompts") or {}).get("deep_depth", 9))
    if isinstance(deep_depth, bool) or not isinstance(deep_depth, int) or deep_depth < 1:
        raise ConfigError("prompts.deep_depth", f"got {deep_depth!r}, expected an integer >= 1", source=src)
    try:
        settings = _methods.get_method(method).settings(deep_depth)
    except KeyError as exc:
        raise ConfigError("method", exc.args[0], source="<overrides>") from None
    d = apply_overrides(d, {"method": method, **settings}, source=f"<method {method}>")
    d = apply_overrides(d, overrides)
    origins = {**{key: f"<method {method}>" for key in settings}, **{key: "<overrides>" for key in overrides}}
    try:
        return build_config(d, source=src)
    except ConfigError as exc:
        # Name where the offending value came from: an override, the method, or the preset.
        base = exc.key.split("[")[0]
        origin = origins.get(base)
        if origin is None or origin == exc.source:
            raise
        raise ConfigError(exc.key, exc.reason, source=origin) from None
