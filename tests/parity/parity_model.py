"""Rebuild the inputs of the parity reference (``tests/fixtures/parity/tiny_step_reference.json``)
from the recipe in ``shared/reference/parity/README.md``: the tiny CLIP's weights and their
checksum, the prompts, the gate network, the batch and the fixed virtual task; and map our names
to the published ones.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from prometar.backbone import load_clip, load_model_config, read_state_dict
from prometar.meta import GateNetwork, VirtualTask
from prometar.prompts import PromptedCLIP

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "tiny_step_reference.json"
STATE_DICT_SHA256 = "783ed92472e4c6bec39e46d59f55468c9ef1eb9efdce0253ede16f7d3b400ae2"
CLASSNAMES = ["accordion", "airplane", "anchor", "ant", "barrel"]
LABELS = [0, 1, 1, 2]
DEPTH = 9
TOKENS = 4
# The fixed virtual task: query label 1, λ = [0.3, 0.8], partners batch items 3 and 0.
TASK = VirtualTask(query=(1, 2), support=(0, 3), lam=(0.3, 0.8), partners=(3, 0))
# Entries OpenAI's checkpoints carry besides the weights; load_clip must ignore them.
OPENAI_METADATA = {"input_resolution": 32, "context_length": 77, "vocab_size": 49408}


def load_reference() -> dict:
    """The recorded step, as stored in the fixture."""
    return json.loads(FIXTURE.read_text())


def build_state_dict() -> dict[str, torch.Tensor]:
    """The tiny CLIP's weights in OpenAI's key layout, drawn in sorted-key order from seed 0."""
    template = open_clip.CLIP(**load_model_config("parity-tiny")).state_dict()
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key in sorted(template):
        shape = template[key].shape
        if key == "logit_scale":
            state[key] = torch.tensor(math.log(100.0), dtype=torch.float32).reshape(shape)
        elif key.endswith("bias"):
            state[key] = torch.zeros(shape, dtype=torch.float32)
        elif key.endswith("weight") and key.split(".")[-2].startswith("ln_"):
            state[key] = torch.ones(shape, dtype=torch.float32)
        else:
            state[key] = torch.randn(shape, generator=generator, dtype=torch.float32) * 0.02
    return state


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the little-endian float32 bytes of all tensors, in sorted key order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(state[key].detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes())
    return digest.hexdigest()


def prompt_draw_order() -> list[str]:
    """Our prompt names in the recipe's overwrite order: text 0, vision 0, vision 1..8, text 1..8."""
    return [
        "text_prompts.blocks.0",
        *[f"vision_prompts.blocks.{block}" for block in range(DEPTH)],
        *[f"text_prompts.blocks.{block}" for block in range(1, DEPTH)],
    ]


# Our prompt names -> the published implementation's.
def published_prompt_name(name: str) -> str:
    tower, _, block = name.split(".")
    index = int(block)
    if tower == "text_prompts":
        return (
            "prompt_learner.ctx" if index == 0 else f"text_encoder.transformer.resblocks.{index}.VPT_shallow"
        )
    return "image_encoder.VPT" if index == 0 else f"image_encoder.transformer.resblocks.{index}.VPT_shallow"


def published_gate_name(prompt_name: str, layer: int) -> str:
    """The published name of the first (``layer`` 0) or second (1) linear gating a prompt tensor."""
    tower, _, block = prompt_name.split(".")
    kind = "text" if tower == "text_prompts" else "vision"
    return f"linear_{kind}_gamma.{block}.{layer}.weight"


def build_parity_model(weights_path: Path, *, openai_metadata: bool = False) -> PromptedCLIP:
    """The prompted tiny CLIP (fp32, CPU), loaded through ``load_clip`` from a plain OpenAI-format
    checkpoint written to ``weights_path``, with every prompt tensor overwritten as the recipe says.

    ``openai_metadata`` also writes OpenAI's metadata entries into the checkpoint (and checks that
    ``read_state_dict`` drops them).
    """
    state = build_state_dict()
    if state_dict_sha256(state) != STATE_DICT_SHA256:
        raise AssertionError("the rebuilt parity weights do not match the recorded SHA-256")
    if openai_metadata:
        torch.save(
            {**state, **{key: torch.tensor(value) for key, value in OPENAI_METADATA.items()}}, weights_path
        )
        assert set(read_state_dict(weights_path)) == set(state)
    else:
        torch.save(state, weights_path)
    model = PromptedCLIP(
        load_clip("parity-tiny", str(weights_path)),
        text_tokens=TOKENS,
        text_depth=DEPTH,
        vision_tokens=TOKENS,
        vision_depth=DEPTH,
        text_init="a photo of a",
    )
    prompts = {**model.prompt_parameters("text"), **model.prompt_parameters("vision")}
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in prompt_draw_order():
            prompts[name].copy_(torch.randn(TOKENS, 64, generator=generator) * 0.02)
    return model


def build_parity_gate(model: PromptedCLIP) -> GateNetwork:
    """The gate network over the model's prompts, its weights drawn as the recipe says."""
    text, vision = model.prompt_parameters("text"), model.prompt_parameters("vision")
    shapes = {name: tuple(parameter.shape) for name, parameter in {**text, **vision}.items()}
    gate = GateNetwork(shapes, reduction=8, repeat=8)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name in [*vision, *text]:
            for linear in gate.network(name):
                fan_in = linear.weight.shape[1]
                linear.weight.copy_(
                    (torch.rand(linear.weight.shape, generator=generator) * 2 - 1) / math.sqrt(fan_in)
                )
    return gate


def parity_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed images ``[4, 3, 32, 32]`` (float32, fed raw) and labels ``[4]``."""
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    return images, torch.tensor(LABELS)


@dataclass
class ParityInputs:
    model: PromptedCLIP
    gate: GateNetwork
    images: torch.Tensor
    labels: torch.Tensor
    task: VirtualTask


def build_parity_inputs(weights_path: Path, dtype: torch.dtype = torch.float32) -> ParityInputs:
    """Build model, prompts, gate and batch exactly as the recipe says (CPU).

    Everything is drawn in float32 as recorded, then converted to ``dtype`` (float64 gives an
    exact-arithmetic reference point for the recorded float32 numbers).
    """
    model = build_parity_model(weights_path)
    gate = build_parity_gate(model)
    images, labels = parity_batch()
    model.to(dtype)
    gate.to(dtype)
    return ParityInputs(model=model, gate=gate, images=images.to(dtype), labels=labels, task=TASK)
