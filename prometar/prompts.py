"""Deep text and vision prompts and the prompted CLIP encoders (IVLP, docs/algorithm.md §1).

Each tower gets a ``DeepPrompts``: ``depth`` learnable tensors of ``n_tokens x width``. Block 0's
prompt enters with the input sequence; before each block ``i`` in ``1..depth-1`` the prompt tokens
are replaced by block ``i``'s prompt; later blocks let them flow on.

- Text: sequence = SOS, prompt tokens, tokens of ``"<class name>."``, EOS, padding. The prompt
  sits in the positions right after SOS. Feature: EOS token -> ln_final -> text projection.
- Vision: [CLS + patches] + positional embedding, then the prompt tokens are appended (then
  ln_pre); deeper prompts replace the last tokens. Feature: CLS -> ln_post -> proj.

``PromptedCLIP`` is an adapter over open_clip's towers, not a fork: it calls open_clip's own
embedding layers, residual blocks and norms in order and only inserts the prompt tokens between
them. CoOp (text block-0 prompt only) and VPT (vision prompts only) are the same class with other
depths. The prompt tensors are read through ``self.<tower>_prompts.blocks[i]`` on every call, so
``torch.func.functional_call(model, {name: fast_weight}, ...)`` swaps them for fast weights.

With a causal text mask, tokens after the last EOS of a batch never reach an EOS feature, so the
text sequence is cut to (max EOS position + 1) tokens (``truncate_text``): same result, ~4x less work.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal

import open_clip
import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from prometar.backbone import Backbone

logger = logging.getLogger(__name__)

Tower = Literal["text", "vision"]
_TOWERS: tuple[str, ...] = ("text", "vision")


class DeepPrompts(nn.Module):
    """One tower's deep prompts: one ``[n_tokens, width]`` tensor per prompted block.

    Args:
        n_tokens: Prompt tokens per prompted block.
        width: The tower's transformer width.
        depth: Number of prompted blocks (the input of block 0, then blocks 1..depth-1).
        block0_init: Initial value of block 0's prompt ``[n_tokens, width]`` (copied); None draws
            it like the others.
        std: Standard deviation of the normal(0, std) initialisation.
    """

    def __init__(
        self,
        n_tokens: int,
        width: int,
        depth: int,
        block0_init: Tensor | None = None,
        std: float = 0.02,
    ) -> None:
        super().__init__()
        for label, value in (("n_tokens", n_tokens), ("width", width), ("depth", depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DeepPrompts {label}={value!r}: expected a positive integer")
        if not std > 0:
            raise ValueError(f"DeepPrompts std={std!r}: expected a positive number")
        if block0_init is not None and tuple(block0_init.shape) != (n_tokens, width):
            raise ValueError(
                f"DeepPrompts block0_init has shape {tuple(block0_init.shape)}, expected {(n_tokens, width)}"
            )
        self.n_tokens = n_tokens
        self.width = width
        self.depth = depth
        self.std = std
        tensors = []
        for block in range(depth):
            tensor = torch.empty(n_tokens, width)
            if block == 0 and block0_init is not None:
                tensor.copy_(block0_init.detach())
            else:
                nn.init.normal_(tensor, std=std)
            tensors.append(nn.Parameter(tensor))
        self.blocks = nn.ParameterList(tensors)

    def extra_repr(self) -> str:
        return f"n_tokens={self.n_tokens}, width={self.width}, depth={self.depth}"


def freeze_except_prompts(model: PromptedCLIP) -> None:
    """Leave exactly the prompt tensors of ``model`` trainable; every CLIP weight frozen."""
    prompt_ids = {id(p) for tower in _TOWERS for p in model.prompt_parameters(tower).values()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in prompt_ids)


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the parameters that require gradients."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Compute attention the plain (math) way inside the block.

    The fused attention kernels (flash / memory-efficient, on CPU and CUDA) have no double
    backward; the second-order meta step differentiates through a gradient and needs this path.
    """
    with sdpa_kernel([SDPBackend.MATH]):
        yield


class PromptedCLIP(nn.Module):
    """Frozen open_clip CLIP with independent deep text and vision prompts.

    Args:
        backbone: The loaded CLIP (``prometar.backbone.load_clip``).
        text_tokens: Prompt tokens per prompted text block.
        text_depth: Prompted text blocks; 0 = no text prompts (then text is ``"<init> <name>."``).
        vision_tokens: Prompt tokens per prompted vision block.
        vision_depth: Prompted vision blocks; 0 = no vision prompts.
        text_init: Phrase whose token embeddings initialise the text block-0 prompt (it must be
            exactly ``text_tokens`` tokens long), and that fills the prompt positions of the
            tokenized class names; None = random block-0 prompt, placeholder ``"X"`` tokens.
        truncate_text: Cut text sequences after the batch's last EOS (exact with a causal mask).
        sequence_first_blocks: Run each residual block sequence-first inside (``_run_block``);
            same results up to float rounding, faster on CPU. False = open_clip's batch-first path.

    Attributes:
        sequence_first_blocks: As the argument; may be changed after construction.
        clip: The frozen open_clip CLIP (kept in eval mode).
        text_prompts: The text tower's ``DeepPrompts``, or None.
        vision_prompts: The vision tower's ``DeepPrompts``, or None.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        text_tokens: int = 4,
        text_depth: int = 9,
        vision_tokens: int = 4,
        vision_depth: int = 9,
        text_init: str | None = "a photo of a",
        truncate_text: bool = True,
        sequence_first_blocks: bool = True,
    ) -> None:
        super().__init__()
        clip = backbone.model
        if not isinstance(clip, open_clip.CLIP):
            raise TypeError(f"PromptedCLIP needs an open_clip.CLIP, got {type(clip).__name__}")
        self.clip = clip
        self.tokenizer = backbone.tokenizer
        self.text_init = text_init
        self._eos_token_id = getattr(backbone.tokenizer, "eot_token_id", None)
        self._pool_type = clip.text_pool_type
        if self._pool_type == "eos":
            self._eos_token_id = clip.text_eos_id
        self.truncate_text = bool(truncate_text) and clip.attn_mask is not None
        self.sequence_first_blocks = bool(sequence_first_blocks)
        if truncate_text and clip.attn_mask is None:
            logger.info("text tower has no causal mask: text sequences are not truncated")

        text_layers = len(clip.transformer.resblocks)
        vision_layers = len(clip.visual.transformer.resblocks)
        self._check_design("text", text_tokens, text_depth, text_layers)
        self._check_design("vision", vision_tokens, vision_depth, vision_layers)
        parameter = next(clip.parameters())

        self.text_prompts: DeepPrompts | None = None
        if text_depth > 0:
            block0 = self._phrase_embedding(text_init, text_tokens) if text_init is not None else None
            self.text_prompts = DeepPrompts(text_tokens, clip.transformer.width, text_depth, block0)
        self.vision_prompts: DeepPrompts | None = None
        if vision_depth > 0:
            self.vision_prompts = DeepPrompts(vision_tokens, clip.visual.transformer.width, vision_depth)
        for prompts in (self.text_prompts, self.vision_prompts):
            if prompts is not None:
                prompts.to(device=parameter.device)
        freeze_except_prompts(self)
        self.clip.eval()

    @staticmethod
    def _check_design(tower: str, n_tokens: int, depth: int, layers: int) -> None:
        if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= layers:
            raise ValueError(
                f"{tower}_depth={depth!r}: expected an integer in 0..{layers} (the tower's blocks)"
            )
        if depth > 0 and (not isinstance(n_tokens, int) or isinstance(n_tokens, bool) or n_tokens < 1):
            raise ValueError(f"{tower}_tokens={n_tokens!r}: expected a positive integer")

    def train(self, mode: bool = True) -> PromptedCLIP:
        """Set training mode on the prompts; the frozen CLIP always stays in eval mode."""
        super().train(mode)
        self.clip.eval()
        return self

    # ------------------------------------------------------------------ tokens

    def _eos_positions(self, tokens: Tensor) -> Tensor:
        if self._pool_type == "eos":
            return (tokens == self._eos_token_id).int().argmax(dim=-1)
        return tokens.argmax(dim=-1)  # EOT has the highest id in CLIP's vocabulary

    @torch.no_grad()
    def _phrase_embedding(self, phrase: str, n_tokens: int) -> Tensor:
        tokens = self.tokenizer([phrase]).to(self.clip.token_embedding.weight.device)
        length = int(self._eos_positions(tokens)[0]) - 1
        if length != n_tokens:
            raise ValueError(
                f"text_init {phrase!r} is {length} tokens long but text_tokens={n_tokens}; they must match"
            )
        return self.clip.token_embedding(tokens[0, 1 : 1 + n_tokens]).float()  # [n_tokens, width]

    def _class_prefix(self) -> str:
        if self.text_init is not None:
            return self.text_init + " "
        if self.text_prompts is not None:
            return "X " * self.text_prompts.n_tokens
        return ""

    def tokenize_classnames(self, classnames: list[str]) -> Tensor:
        """Tokenize class names as ``"<prompt slots> <name>."`` (``_`` in names becomes a space).

        Args:
            classnames: Class names in label order.

        Returns:
            LongTensor ``[C, context_length]`` on the model's device. With text prompts, the
            positions right after SOS are the prompt slots ``encode_text`` fills.
        """
        if not classnames:
            raise ValueError("tokenize_classnames: empty class list")
        prefix = self._class_prefix()
        texts = [f"{prefix}{name.replace('_', ' ')}." for name in classnames]
        return self.tokenizer(texts).to(self.clip.token_embedding.weight.device)

    # ---------------------------------------------------------------- encoders

    def _prompt_blocks(self, prompts: DeepPrompts | None, use_prompts: bool) -> list[Tensor]:
        if prompts is None or not use_prompts:
            return []
        return [prompts.blocks[i] for i in range(prompts.depth)]

    def encode_text(self, text_tokens: Tensor, *, use_prompts: bool = True) -> Tensor:
        """Text features of token sequences.

        Args:
            text_tokens: ``[C, L]`` from ``tokenize_classnames`` (prompted) or the tokenizer.
            use_prompts: False runs the plain, unprompted CLIP text tower.

        Returns:
            ``[C, embed_dim]`` projected features, not normalised.
        """
        clip = self.clip
        prompts = self._prompt_blocks(self.text_prompts, use_prompts)
        n_tokens = self.text_prompts.n_tokens if prompts else 0
        eos = self._eos_positions(text_tokens)
        length = text_tokens.shape[1]
        if self.truncate_text:
            length = max(int(eos.max()) + 1, 1 + n_tokens)
            text_tokens = text_tokens[:, :length]
        count = text_tokens.shape[0]
        cast_dtype = clip.transformer.get_cast_dtype()

        x = clip.token_embedding(text_tokens).to(cast_dtype)  # [C, L, width]
        if prompts:
            x = self._replace_text_prompt(x, prompts[0], n_tokens)
        x = x + clip.positional_embedding[:length].to(cast_dtype)
        mask = None if clip.attn_mask is None else clip.attn_mask[:length, :length]
        for index, block in enumerate(clip.transformer.resblocks):
            if 1 <= index < len(prompts):
                x = self._replace_text_prompt(x, prompts[index], n_tokens)
            x = self._run_block(block, x, mask)
        x = clip.ln_final(x)
        pooled = x[torch.arange(count, device=x.device), eos]  # [C, width]
        projection = clip.text_projection
        if projection is None:
            return pooled
        if isinstance(projection, nn.Linear):
            return projection(pooled)
        return pooled @ projection  # [C, embed_dim]

    def _run_block(self, block: nn.Module, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """One residual block on batch-first ``x`` ``[N, L, width]``, run sequence-first inside.

        With batch-first input, ``nn.MultiheadAttention`` transposes to ``[L, N, width]`` itself and
        its input projection then multiplies a non-contiguous tensor, which torch computes as L small
        products against the broadcast weight (~5x slower on CPU, also in the second-order meta
        step). Handing the block ``[L, N, width]`` with the attention's ``batch_first`` off for the
        call (open_clip's own ``batch_first=False`` layout) computes the same thing with plain
        matrix products; results differ by float rounding only (``tests/test_fast_path.py``).
        ``sequence_first_blocks = False`` runs the blocks as open_clip's batch-first forward does.
        """
        attention = getattr(block, "attn", None)
        if not (
            self.sequence_first_blocks
            and isinstance(attention, nn.MultiheadAttention)
            and attention.batch_first
        ):
            return block(x, attn_mask=attn_mask)
        attention.batch_first = False
        try:
            return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(
                0, 1
            )  # [L, N, w] in, [N, L, w] out
        finally:
            attention.batch_first = True

    @staticmethod
    def _replace_text_prompt(x: Tensor, prompt: Tensor, n_tokens: int) -> Tensor:
        """Put ``prompt`` in the ``n_tokens`` positions after SOS of every sequence."""
        count = x.shape[0]
        prompt = prompt.to(x.dtype).unsqueeze(0).expand(count, -1, -1)  # [C, n_tokens, width]
        return torch.cat([x[:, :1], prompt, x[:, 1 + n_tokens :]], dim=1)  # [C, L, width]

    def encode_image(self, images: Tensor, *, use_prompts: bool = True) -> Tensor:
        """Image features.

        Args:
            images: ``[B, 3, H, W]`` normalised images.
            use_prompts: False runs the plain, unprompted CLIP image tower.

        Returns:
            ``[B, embed_dim]`` projected features (CLS token), not normalised.
        """
        visual = self.clip.visual
        prompts = self._prompt_blocks(self.vision_prompts, use_prompts)
        n_tokens = self.vision_prompts.n_tokens if prompts else 0
        batch = images.shape[0]

        x = visual.conv1(images.to(visual.conv1.weight.dtype))  # [B, width, grid, grid]
        x = x.reshape(batch, x.shape[1], -1).permute(0, 2, 1)  # [B, grid*grid, width]
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(batch, -1, -1)  # [B, 1, width]
        x = torch.cat([cls, x], dim=1)  # [B, 1 + grid*grid, width]
        x = x + visual.positional_embedding.to(x.dtype)
        x = visual.patch_dropout(x)
        if prompts:
            first = prompts[0].to(x.dtype).unsqueeze(0).expand(batch, -1, -1)  # [B, n_tokens, width]
            x = torch.cat([x, first], dim=1)  # [B, 1 + grid*grid + n_tokens, width]
        x = visual.ln_pre(x)
        for index, block in enumerate(visual.transformer.resblocks):
            if 1 <= index < len(prompts):
                deep = prompts[index].to(x.dtype).unsqueeze(0).expand(batch, -1, -1)  # [B, n_tokens, width]
                x = torch.cat([x[:, :-n_tokens], deep], dim=1)  # [B, 1 + grid*grid + n_tokens, width]
            x = self._run_block(block, x)
        pooled = visual.ln_post(x[:, 0])  # [B, width]
        if visual.proj is None:
            return pooled
        return pooled @ visual.proj  # [B, embed_dim]

    def forward(
        self,
        images: Tensor | None = None,
        text_tokens: Tensor | None = None,
        *,
        use_prompts: bool = True,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Image and/or text features (projected, not normalised); None for a missing input."""
        image_features = None if images is None else self.encode_image(images, use_prompts=use_prompts)
        text_features = (
            None if text_tokens is None else self.encode_text(text_tokens, use_prompts=use_prompts)
        )
        return image_features, text_features

    def encode_plain_text(self, texts: list[str]) -> Tensor:
        """Unprompted CLIP features of free texts (e.g. the teacher's templates), ``[N, embed_dim]``."""
        if not texts:
            raise ValueError("encode_plain_text: empty text list")
        tokens = self.tokenizer(list(texts)).to(self.clip.token_embedding.weight.device)
        return self.encode_text(tokens, use_prompts=False)

    # -------------------------------------------------------------- parameters

    def prompt_parameters(self, tower: Tower) -> dict[str, nn.Parameter]:
        """One tower's prompt tensors, block 0 first, keyed by their ``named_parameters`` names.

        Returns an empty dict for a tower without prompts.
        """
        if tower not in _TOWERS:
            raise ValueError(f"prompt_parameters: tower {tower!r} is not one of {list(_TOWERS)}")
        prompts = self.text_prompts if tower == "text" else self.vision_prompts
        if prompts is None:
            return {}
        return {f"{tower}_prompts.blocks.{i}": prompts.blocks[i] for i in range(prompts.depth)}

    @property
    def logit_scale(self) -> Tensor:
        """CLIP's temperature, ``exp()`` already applied (scalar, frozen)."""
        return self.clip.logit_scale.exp().detach()
