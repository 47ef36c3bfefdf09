"""The frozen CLIP backbone (docs/algorithm.md §1): loading open_clip models and weights, and the tokenizer.

Every CLIP weight in ProMetaR is frozen; only prompt tensors (``prometar.prompts``) and the gate
network train. This module is the one place that talks to open_clip's factory: it resolves a model
name (an open_clip config such as ``ViT-B-16-quickgelu``, or a project config from
``prometar/model_configs/``), builds the model in fp32, loads weights from an open_clip pretrained
tag or a local checkpoint (open_clip format, or OpenAI's: a plain state dict or a TorchScript
archive), and freezes it.

OpenAI-format weights are copied into fp32 parameters. open_clip's own builder for OpenAI state
dicts converts the model to fp16 first, which rounds fp32 checkpoints; it is never used here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import open_clip
import torch

from prometar.errors import BackboneError
from prometar.torchscript import is_torchscript_archive, read_torchscript_state_dict

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
"""Folder of the project's own model configs (open_clip JSON format), one ``<name>.json`` each."""

_PRECISION_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
# Entries of OpenAI checkpoints that are metadata, not tensors of the model.
_OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


@dataclass(frozen=True)
class Backbone:
    """A loaded, frozen CLIP and what is needed to feed it.

    Attributes:
        model: The open_clip CLIP, in eval mode, with ``requires_grad`` False on every parameter.
            Parameters are fp32 unless ``load_clip`` was asked for another precision.
        tokenizer: Callable mapping a list of strings to a LongTensor ``[N, context_length]``.
        name: The model config name.
        pretrained: The hub tag, checkpoint path, or None (random init).
        image_size: Side of the square input image, in pixels.
        mean: Per-channel image mean for normalisation.
        std: Per-channel image standard deviation for normalisation.
        context_length: Length of the token sequences the tokenizer produces.
    """

    model: open_clip.CLIP
    tokenizer: Callable[[list[str]], torch.Tensor]
    name: str
    pretrained: str | None
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    context_length: int


def _project_configs() -> dict[str, Path]:
    return {path.stem: path for path in sorted(MODEL_CONFIG_DIR.glob("*.json"))}


def list_backbones() -> list[str]:
    """Names ``load_clip`` accepts: the project's configs first, then open_clip's.

    Returns:
        Model config names. Only plain ViT CLIP configs can be prompted (``prometar.prompts``);
        ``load_clip`` rejects the others with a message saying why.
    """
    project = list(_project_configs())
    return project + [name for name in open_clip.list_models() if name not in project]


def load_model_config(name: str) -> dict[str, Any]:
    """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...) of a name.

    Args:
        name: A project config name (``tiny-test``, ``parity-tiny``, ...) or an open_clip one.

    Returns:
        A fresh dict the caller may modify.

    Raises:
        BackboneError: The name is unknown, or the project config file is unreadable.
    """
    project = _project_configs()
    if name in project:
        path = project[name]
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise BackboneError(f"model config {path}: cannot be read ({error})") from error
        missing = [key for key in ("embed_dim", "vision_cfg", "text_cfg") if key not in config]
        if missing:
            raise BackboneError(f"model config {path}: missing key(s) {missing}")
        return config
    config = open_clip.get_model_config(name)
    if config is None:
        raise BackboneError(
            f"unknown backbone {name!r}; project configs: {sorted(project)}; "
            f"or one of open_clip's {len(open_clip.list_models())} configs (see list_backbones())"
        )
    return config


def _check_promptable(name: str, config: Mapping[str, Any]) -> None:
    """Reject configs whose towers are not the plain ViT / causal-text CLIP that prompts enter."""
    vision = config["vision_cfg"]
    text = config["text_cfg"]
    problems = []
    if config.get("custom_text") or text.get("hf_model_name"):
        problems.append("its text tower is not open_clip's built-in transformer")
    if vision.get("timm_model_name"):
        problems.append("its image tower is a timm model, not open_clip's VisionTransformer")
    if isinstance(vision.get("layers"), (list, tuple)):
        problems.append("its image tower is a ResNet")
    if vision.get("attentional_pool") or vision.get("pool_type", "tok") != "tok":
        problems.append("its image feature is not the class token")
    if vision.get("final_ln_after_pool") or text.get("final_ln_after_pool"):
        problems.append("it normalises after pooling")
    if text.get("pool_type", "argmax") not in ("argmax", "eos") or text.get("embed_cls"):
        problems.append("its text feature is not the end-of-text token")
    if problems:
        raise BackboneError(f"backbone {name!r} cannot carry deep prompts: " + "; ".join(problems))


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith(_CHECKPOINT_SUFFIXES)


def _resolve_weights(
    name: str, pretrained: str, config: Mapping[str, Any], cache_dir: str | os.PathLike | None
) -> tuple[Path, dict[str, Any]]:
    """Turn ``pretrained`` into a local checkpoint file and open_clip's metadata for the tag."""
    path = Path(pretrained).expanduser()
    try:
        is_file = path.is_file()
    except OSError as error:  # a folder on the way that may not be searched, a stale mount
        raise BackboneError(
            f"checkpoint for backbone {name!r}: {pretrained} cannot be read ({error.strerror or error})"
        ) from None
    if is_file:
        return path, {}
    if _looks_like_path(pretrained):
        raise BackboneError(f"checkpoint for backbone {name!r} not found: {pretrained}")
    tag_config = open_clip.get_pretrained_cfg(name, pretrained)
    if not tag_config:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise BackboneError(
            f"pretrained {pretrained!r} for backbone {name!r} is neither a file nor a known tag; "
            f"tags for {name!r}: {tags}"
        )
    if bool(tag_config.get("quick_gelu", False)) != bool(config.get("quick_gelu", False)):
        hint = f"{name}-quickgelu" if tag_config.get("quick_gelu") else name.removesuffix("-quickgelu")
        raise BackboneError(
            f"pretrained tag {pretrained!r} was trained with "
            f"quick_gelu={tag_config.get('quick_gelu', False)} "
            f"but backbone {name!r} uses quick_gelu={config.get('quick_gelu', False)}; use {hint!r}"
        )
    try:
        local = open_clip.download_pretrained(
            tag_config, cache_dir=None if cache_dir is None else str(cache_dir)
        )
    except Exception as error:  # noqa: BLE001 - hub and network errors come in many types
        raise BackboneError(
            f"weights for backbone {name!r} tag {pretrained!r} are not available locally and could not be "
            f"fetched ({type(error).__name__}: {error}); pass a checkpoint path instead"
        ) from error
    if not local:
        raise BackboneError(f"open_clip has no download location for backbone {name!r} tag {pretrained!r}")
    return Path(local), tag_config


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read CLIP weights from a checkpoint file, whatever its container.

    Accepts a plain state dict, a dict holding one under ``state_dict``, keys prefixed by
    ``module.`` (DataParallel), a TorchScript archive (OpenAI's release format) and safetensors.
    OpenAI's metadata entries (``input_resolution``, ``context_length``, ``vocab_size``) are dropped.

    Args:
        path: The checkpoint file.

    Returns:
        Tensor name -> tensor, on CPU, in the dtype stored.

    Raises:
        BackboneError: The file cannot be read or holds no state dict.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        elif is_torchscript_archive(path):
            # OpenAI's release format; read as data, never compiled or run (prometar.torchscript).
            loaded = read_torchscript_state_dict(path)
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        raise BackboneError(f"checkpoint {path}: cannot be read ({type(error).__name__}: {error})") from error
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not loaded:
        raise BackboneError(f"checkpoint {path}: holds no state dict (found {type(loaded).__name__})")
    state = {}
    for key, value in loaded.items():
        key = key.removeprefix("module.")
        if key in _OPENAI_METADATA_KEYS:
            continue
        if not isinstance(value, torch.Tensor):
            raise BackboneError(f"checkpoint {path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key] = value
    return state


def _load_weights(model: open_clip.CLIP, state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy ``state`` into the model's existing (fp32) tensors; every key must match exactly."""
    expected = model.state_dict()
    # Non-persistent buffers (the causal text mask) are rebuilt by the model, never loaded; a
    # scripted model's state dict carries them anyway.
    transient = {name for name, _ in model.named_buffers()} - set(expected)
    state = {key: value for key, value in state.items() if key not in transient}
    if "logit_scale" in state and state["logit_scale"].shape != expected["logit_scale"].shape:
        state["logit_scale"] = state["logit_scale"].reshape(expected["logit_scale"].shape)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or mismatched:
        details = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                details.append(f"{label}: {keys[:5]}{' ...' if len(keys) > 5 else ''} ({len(keys)})")
        raise BackboneError(f"checkpoint {source} does not fit the model: " + "; ".join(details))
    with torch.no_grad():
        for key, tensor in expected.items():
            tensor.copy_(state[key])  # casts to the parameter's dtype (fp32): no fp16 round trip


def _build_tokenizer(name: str, config: Mapping[str, Any]) -> Callable[[list[str]], torch.Tensor]:
    text = config["text_cfg"]
    if name in _project_configs():
        return open_clip.SimpleTokenizer(
            context_length=text.get("context_length", 77), **(text.get("tokenizer_kwargs") or {})
        )
    return open_clip.get_tokenizer(name)


def load_clip(
    name: str,
    pretrained: str | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: Precision = "fp32",
    cache_dir: str | os.PathLike | None = None,
) -> Backbone:
    """Build a frozen CLIP and load its weights.

    Args:
        name: An open_clip model config (``ViT-B-16-quickgelu`` for the paper's backbone) or a
            project config from ``prometar/model_configs/`` (``tiny-test``, ``parity-tiny``, ...).
        pretrained: An open_clip tag (``openai``), a checkpoint path (open_clip or OpenAI format,
            including TorchScript archives), or None for random weights.
        device: Where the model lives.
        precision: Parameter dtype. ``fp32`` (default) for training; on GPU use bf16 autocast
            around fp32 parameters rather than ``bf16`` parameters.
        cache_dir: Where open_clip keeps downloaded weights.

    Returns:
        The loaded backbone: eval mode, every parameter frozen.

    Raises:
        BackboneError: Unknown name, tag or precision; a missing or mismatched checkpoint; a
            tag whose activation (QuickGELU) differs from the config's; a model prompts cannot enter.
    """
    if precision not in _PRECISION_DTYPES:
        raise BackboneError(
            f"precision {precision!r} for backbone {name!r}: expected one of {list(_PRECISION_DTYPES)}"
        )
    config = load_model_config(name)
    _check_promptable(name, config)

    checkpoint: Path | None = None
    tag_config: dict[str, Any] = {}
    if pretrained is not None:
        checkpoint, tag_config = _resolve_weights(name, pretrained, config, cache_dir)

    model_kwargs = {key: value for key, value in config.items() if key != "custom_text"}
    try:
        model = open_clip.CLIP(**model_kwargs)
    except TypeError as error:
        raise BackboneError(f"model config {name!r}: {error}") from error
    if not model.transformer.batch_first or not model.visual.transformer.batch_first:
        raise BackboneError(f"backbone {name!r}: prompts need batch-first transformers")

    if checkpoint is not None:
        logger.info("loading %s weights from %s", name, checkpoint)
        _load_weights(model, read_state_dict(checkpoint), checkpoint)
    else:
        logger.info("backbone %s: random weights", name)

    if precision != "fp32":
        model = model.to(dtype=_PRECISION_DTYPES[precision])
    model = model.to(device=torch.device(device))
    model.eval()
    model.requires_grad_(False)

    height, width = model.visual.image_size
    if height != width:
        raise BackboneError(f"backbone {name!r}: image size {height}x{width} is not square")
    return Backbone(
        model=model,
        tokenizer=_build_tokenizer(name, config),
        name=name,
        pretrained=pretrained,
        image_size=int(height),
        mean=tuple(tag_config.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(tag_config.get("std", open_clip.OPENAI_DATASET_STD)),
        context_length=int(model.context_length),
    )
