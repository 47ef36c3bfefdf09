"""The meta-regulariser of ProMetaR (docs/algorithm.md): the gate network that modulates the
regulariser gradient per prompt tensor (:func:`modulate_gradient`), and the virtual tasks of the
meta step with their task augmentation (:func:`sample_virtual_task`, :func:`augment_task`).

The gate of a prompt tensor θ (n × w values, D = n·w) is

    gate = repeat(sigmoid(W2 · W1 · [∇θ CE, ∇θ R]), repeat)      # reshaped to n × w
    g    = ∇θ CE + gate ⊙ ∇θ R

with ``W1: 2D → D/r`` and ``W2: D/r → D/r`` bias-free linears and no activation between them.
Text tensors take R_text's gradient, vision tensors R_image's (the training step routes them).

Gate modes (``GateMode``): ``learned`` uses this network; ``constant`` uses 0.5 everywhere (what
the official run effectively does, since its gate never trains); ``off`` applies no network: the
regulariser gradient is scaled by the training step's ungated strength — ``INITIAL_GATE`` (the
strength ProMetaR applies, ``regularizer.ungated_strength: prometar``) or 1 (``nominal``: the
plain weighted sum ``g = ∇CE + ∇R``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

GateMode = Literal["learned", "constant", "off"]
GATE_MODES: tuple[str, ...] = ("learned", "constant", "off")
CONSTANT_GATE = 0.5
INITIAL_GATE = 0.5
"""The gate network's output at initialisation: sigmoid of two small bias-free linears applied to
gradients of order 1e-3 or less, i.e. sigmoid(≈0). ProMetaR's gate trains at 1e-6 and stays there,
so its regulariser gradient enters at this fraction of the nominal weights (50 / 20): the strength
an ungated regularised step applies by default (``tests/unit/test_meta.py`` derives it from a
freshly initialised ``GateNetwork``)."""


class GateNetwork(nn.Module):
    """One two-layer gate per prompt tensor.

    Args:
        prompt_shapes: prompt tensor name → ``(n_tokens, width)``, in a fixed order (the names are
            the prompt parameters' names in the prompted model).
        reduction: r; the hidden and output sizes are ``D / r`` with ``D = n_tokens · width``.
        repeat: how many consecutive times each of the ``D / r`` outputs is repeated to cover the
            ``D`` values. ``None`` ties it to ``reduction``; the official code hard-codes 8, so
            its preset passes ``repeat=8``. ``(D / r) · repeat`` must equal ``D``.

    Raises:
        ValueError: a shape is not divisible by ``reduction`` or ``repeat`` does not cover it.
    """

    def __init__(
        self, prompt_shapes: Mapping[str, tuple[int, int]], reduction: int = 8, repeat: int | None = None
    ) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be a positive integer, got {reduction}")
        repeat = reduction if repeat is None else repeat
        if repeat < 1:
            raise ValueError(f"repeat must be a positive integer, got {repeat}")
        self.reduction = reduction
        self.repeat = repeat
        self.prompt_shapes: dict[str, tuple[int, int]] = {
            name: (int(shape[0]), int(shape[1])) for name, shape in prompt_shapes.items()
        }
        self._module_keys: dict[str, str] = {}
        self.networks = nn.ModuleDict()
        for name, (n_tokens, width) in self.prompt_shapes.items():
            size = n_tokens * width
            if size % reduction:
                raise ValueError(f"prompt {name!r} has {size} values, not divisible by reduction {reduction}")
            hidden = size // reduction
            if hidden * repeat != size:
                raise ValueError(
                    f"prompt {name!r}: {hidden} gate values repeated {repeat} times give "
                    f"{hidden * repeat} values, not the tensor's {size}"
                )
            key = name.replace(".", "__")
            self._module_keys[name] = key
            self.networks[key] = nn.Sequential(
                nn.Linear(2 * size, hidden, bias=False),
                nn.Linear(hidden, hidden, bias=False),
            )

    def network(self, name: str) -> nn.Sequential:
        """The two linears (``[0]`` first, ``[1]`` second) gating prompt tensor ``name``."""
        try:
            return self.networks[self._module_keys[name]]
        except KeyError:
            raise KeyError(
                f"no gate for prompt {name!r}; gated prompts: {list(self.prompt_shapes)}"
            ) from None

    def forward(self, name: str, ce_grad: Tensor, reg_grad: Tensor) -> Tensor:
        """Gate values of one prompt tensor.

        Args:
            name: the prompt tensor's name.
            ce_grad: ``[n, w]`` gradient of the cross-entropy with respect to the tensor.
            reg_grad: ``[n, w]`` gradient of the (weighted) regulariser with respect to it.

        Returns:
            ``[n, w]`` gate in (0, 1), in the gate weights' dtype.
        """
        network = self.network(name)
        n_tokens, width = self.prompt_shapes[name]
        dtype = network[0].weight.dtype
        features = torch.cat([ce_grad.reshape(1, -1), reg_grad.reshape(1, -1)], dim=1).to(dtype)  # [1, 2D]
        hidden = network(features)  # [1, D / r]
        gate = torch.sigmoid(hidden).repeat_interleave(self.repeat, dim=1)  # [1, D]
        return gate.reshape(n_tokens, width)  # [n, w]


def modulate_gradient(ce_grad: Tensor, reg_grad: Tensor, gate: Tensor | float) -> Tensor:
    """The paper's gradient modulation of one prompt tensor: ``g = ∇CE + gate ⊙ ∇R``.

    Both phases of the ProMetaR step call it: phase A on the batch (the prompt optimiser's
    gradient), phase B on the support items (the inner step's gradient, graph kept). ``gate`` is
    the gate network's output, :data:`CONSTANT_GATE`, or 1.0 (no modulation).
    """
    return ce_grad + gate * reg_grad


def augment_task(query_features: Tensor, partner_features: Tensor, lam: Tensor) -> Tensor:
    """The paper's task augmentation: manifold mixup of a virtual task's query items.

    Each query item's final image features are mixed with those of its support partner,
    ``λ · f(query) + (1 − λ) · f(partner)``, under the inner step's fast prompts; the mixed
    cross-entropy (``prometar.losses.mixed_cross_entropy``) weighs the two labels by λ too.

    Args:
        query_features: ``[Q, E]`` features of the query items.
        partner_features: ``[Q, E]`` features of their partners (:attr:`VirtualTask.partners`).
        lam: ``[Q]`` mixing coefficients (:attr:`VirtualTask.lam`).

    Returns:
        ``[Q, E]`` mixed features.
    """
    return lam[:, None] * query_features + (1.0 - lam[:, None]) * partner_features


@dataclass(frozen=True)
class VirtualTask:
    """A virtual task carved out of one batch, the unit of the paper's task augmentation
    (docs/algorithm.md: the bi-level step).

    Attributes:
        query: batch indices of the items carrying the chosen label.
        support: batch indices of the other items (the inner step trains on these).
        lam: one mixing coefficient λ per query item (weight of the query item's features).
        partners: per query item, the **batch index** of the support item it is mixed with.
    """

    query: tuple[int, ...]
    support: tuple[int, ...]
    lam: tuple[float, ...]
    partners: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.query or not self.support:
            raise ValueError("a virtual task needs at least one query and one support item")
        if set(self.query) & set(self.support):
            raise ValueError(f"query {self.query} and support {self.support} overlap")
        if len(self.lam) != len(self.query) or len(self.partners) != len(self.query):
            raise ValueError("lam and partners need one entry per query item")
        if not set(self.partners) <= set(self.support):
            raise ValueError(f"partners {self.partners} must be support items {self.support}")


def sample_virtual_task(
    labels: Tensor, generator: torch.Generator, beta: tuple[float, float] = (0.5, 0.5)
) -> VirtualTask | None:
    """Sample the virtual task of one batch.

    One label present in the batch is drawn uniformly; its items are the query and the rest the
    support. Each query item gets ``λ ~ Beta(beta)`` and a support partner drawn uniformly.

    Args:
        labels: ``[B]`` batch labels.
        generator: the only source of randomness (a CPU ``torch.Generator``).
        beta: the Beta distribution's two concentration parameters.

    Returns:
        The task, or ``None`` when all labels are equal (no support items: the meta step is skipped).
    """
    labels_list = [int(label) for label in labels.reshape(-1).tolist()]
    present = sorted(set(labels_list))
    if len(present) < 2:
        return None
    chosen = present[int(torch.randperm(len(present), generator=generator)[0])]
    query = tuple(i for i, label in enumerate(labels_list) if label == chosen)
    support = tuple(i for i, label in enumerate(labels_list) if label != chosen)
    # Beta draws with numpy, seeded from the torch generator so the task depends on it alone.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    lam = np.random.default_rng(seed).beta(beta[0], beta[1], size=len(query))
    picks = torch.randint(0, len(support), (len(query),), generator=generator).tolist()
    return VirtualTask(
        query=query,
        support=support,
        lam=tuple(float(v) for v in lam),
        partners=tuple(support[p] for p in picks),
    )
