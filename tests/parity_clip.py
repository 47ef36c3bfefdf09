"""The parity reference's tiny CLIP and fixed inputs (shared/reference/parity/README.md), rebuilt.

Helpers for parity tests: the recipe's OpenAI-layout state dict, its checksum, the fixed prompts
and the fixed batch. The reference numbers live in ``fixtures/parity/tiny_step_reference.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

from prometar.backbone import Backbone, load_clip, read_state_dict
from prometar.prompts import PromptedCLIP

REFERENCE_PATH = Path(__file__).resolve().parent / "fixtures" / "parity" / "tiny_step_reference.json"
TEMPLATES_PATH = Path(__file__).resolve().parents[1] / "prometar" / "resources" / "teacher_templates_60.txt"
PROMPT_DEPTH = 9
PROMPT_TOKENS = 4


def load_reference() -> dict:
    """The recorded step, as stored in the fixture."""
    return json.loads(REFERENCE_PATH.read_text())


def parity_state_dict() -> dict[str, torch.Tensor]:
    """The recipe's weights in OpenAI's key layout, drawn in ``sorted()`` key order from seed 0."""
    shapes = {key: tensor.shape for key, tensor in load_clip("parity-tiny").model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key in sorted(shapes):
        leaf = key.rsplit(".", 1)[-1]
        module = key.rsplit(".", 2)[-2] if key.count(".") >= 1 else ""
        if key == "logit_scale":
            state[key] = torch.full(shapes[key], math.log(100.0))
        elif key.endswith("bias"):
            state[key] = torch.zeros(shapes[key])
        elif leaf == "weight" and module.startswith("ln_"):
            state[key] = torch.ones(shapes[key])
        else:
            state[key] = torch.randn(shapes[key], generator=generator, dtype=torch.float32) * 0.02
    return state


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the little-endian float32 bytes of all tensors, in sorted key order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(state[key].detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes())
    return digest.hexdigest()


def load_parity_backbone(directory: Path) -> Backbone:
    """Write the recipe weights as a plain OpenAI-format checkpoint and load them through load_clip."""
    path = directory / "parity_tiny_openai.pt"
    state = parity_state_dict()
    # OpenAI checkpoints carry these metadata entries; load_clip must ignore them.
    state.update(
        input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408)
    )
    torch.save(state, path)
    assert set(read_state_dict(path)) == set(state) - {"input_resolution", "context_length", "vocab_size"}
    return load_clip("parity-tiny", str(path))


def reference_prompt_order() -> list[tuple[str, int]]:
    """(tower, block) in the recipe's overwrite order: text 0, vision 0, vision 1..8, text 1..8."""
    order = [("text", 0), ("vision", 0)]
    order += [("vision", block) for block in range(1, PROMPT_DEPTH)]
    order += [("text", block) for block in range(1, PROMPT_DEPTH)]
    return order


def reference_prompt_name(tower: str, block: int) -> str:
    """The published code's name of a prompt tensor."""
    if block == 0:
        return "prompt_learner.ctx" if tower == "text" else "image_encoder.VPT"
    encoder = "text_encoder" if tower == "text" else "image_encoder"
    return f"{encoder}.transformer.resblocks.{block}.VPT_shallow"


def build_parity_model(directory: Path) -> PromptedCLIP:
    """The prompted tiny CLIP with every prompt tensor overwritten as the recipe says."""
    model = PromptedCLIP(
        load_parity_backbone(directory),
        text_tokens=PROMPT_TOKENS,
        text_depth=PROMPT_DEPTH,
        vision_tokens=PROMPT_TOKENS,
        vision_depth=PROMPT_DEPTH,
    )
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tower, block in reference_prompt_order():
            prompts = model.text_prompts if tower == "text" else model.vision_prompts
            prompts.blocks[block].copy_(torch.randn(PROMPT_TOKENS, 64, generator=generator) * 0.02)
    return model


def parity_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed images ``[4, 3, 32, 32]`` (fed raw) and labels ``[4]``."""
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, 32, 32, generator=generator)
    return images, torch.tensor([0, 1, 1, 2])


def teacher_templates() -> list[str]:
    """The 60 templates of the frozen text teacher, in the official order."""
    return [line for line in TEMPLATES_PATH.read_text().splitlines() if line.strip()]
