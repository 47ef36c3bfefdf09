"""Rebuild the inputs of the parity reference (``tests/fixtures/parity/tiny_step_reference.json``)
from the recipe in ``shared/reference/parity/README.md``: the tiny CLIP's weights, the prompts,
the gate network, the batch and the fixed virtual task; and map our names to the published ones.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from prometar.backbone import load_clip, load_model_config
from prometar.meta import GateNetwork, VirtualTask
from prometar.prompts import PromptedCLIP

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "parity" / "tiny_step_reference.json"
STATE_DICT_SHA256 = "783ed92472e4c6bec39e46d59f55468c9ef1eb9efdce0253ede16f7d3b400ae2"
CLASSNAMES = ["accordion", "airplane", "anchor", "ant", "barrel"]
LABELS = [0, 1, 1, 2]
DEPTH = 9
# The fixed virtual task: query label 1, λ = [0.3, 0.8], partners batch items 3 and 0.
TASK = VirtualTask(query=(1, 2), support=(0, 3), lam=(0.3, 0.8), partners=(3, 0))


def load_reference() -> dict:
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
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(state[key].detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes())
    return digest.hexdigest()


# Our prompt names -> the published implementation's.
def published_prompt_name(name: str) -> str:
    tower, _, block = name.split(".")
    index = int(block)
    if tower == "text_prompts":
        return "prompt_learner.ctx" if index == 0 else f"text_encoder.transformer.resblocks.{index}.VPT_shallow"
    return "image_encoder.VPT" if index == 0 else f"image_encoder.transformer.resblocks.{index}.VPT_shallow"


def published_gate_name(prompt_name: str, layer: int) -> str:
    """The published name of the first (``layer`` 0) or second (1) linear gating a prompt tensor."""
    tower, _, block = prompt_name.split(".")
    kind = "text" if tower == "text_prompts" else "vision"
    return f"linear_{kind}_gamma.{block}.{layer}.weight"


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
    state = build_state_dict()
    if state_dict_sha256(state) != STATE_DICT_SHA256:
        raise AssertionError("the rebuilt parity weights do not match the recorded SHA-256")
    torch.save(state, weights_path)
    backbone = load_clip("parity-tiny", str(weights_path))
    model = PromptedCLIP(backbone, text_tokens=4, text_depth=DEPTH, vision_tokens=4, vision_depth=DEPTH,
                         text_init="a photo of a")
    text = model.prompt_parameters("text")
    vision = model.prompt_parameters("vision")
    text_names, vision_names = list(text), list(vision)
    order = [text[text_names[0]], *[vision[name] for name in vision_names],
             *[text[name] for name in text_names[1:]]]
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in order:
            parameter.copy_(torch.randn(4, 64, generator=generator) * 0.02)

    shapes = {name: tuple(parameter.shape) for name, parameter in {**text, **vision}.items()}
    gate = GateNetwork(shapes, reduction=8, repeat=8)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name in [*vision_names, *text_names]:
            for linear in gate.network(name):
                fan_in = linear.weight.shape[1]
                linear.weight.copy_((torch.rand(linear.weight.shape, generator=generator) * 2 - 1)
                                    / math.sqrt(fan_in))

    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    model.to(dtype)
    gate.to(dtype)
    return ParityInputs(model=model, gate=gate, images=images.to(dtype), labels=torch.tensor(LABELS), task=TASK)
