"""Methods: prompt design × training scheme (docs/algorithm.md §1, "method" in this project).

A method is a named pair of

- a **prompt design** — which towers carry prompts and how deep: ``none`` (zero-shot CLIP),
  ``coop`` (the text block-0 prompt only), ``vpt`` (deep vision prompts only), ``ivlp`` (deep
  prompts in both towers, depth 9), and
- a **training scheme** — ``zeroshot`` (no training; the dataset's single template from the data
  catalog), ``plain`` (cross-entropy), ``regularized`` (cross-entropy + the frozen-teacher
  regularisers), ``prometar`` (regularisers modulated by the gate network, bi-level meta step).

Each method resolves into dotted run-config settings. ``prometar.config.resolve_config`` writes
them over the preset and then applies the user's explicit overrides, so an explicit override of a
key a method sets (``prompts.text_depth=3`` with ``coop``) always wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Method", "get_method", "list_methods"]

PromptDesign = Literal["none", "coop", "vpt", "ivlp"]
Scheme = Literal["zeroshot", "plain", "regularized", "prometar"]

# Prompt depth per tower for each design: an int, or DEEP = the run config's
# ``prompts.deep_depth`` (9 in the paper; a 3-block toy CLIP needs less).
DEEP = "deep"
_DESIGNS: dict[str, dict[str, int | str]] = {
    "none": {"prompts.text_depth": 0, "prompts.vision_depth": 0},
    "coop": {"prompts.text_depth": 1, "prompts.vision_depth": 0},
    "vpt": {"prompts.text_depth": 0, "prompts.vision_depth": DEEP},
    "ivlp": {"prompts.text_depth": DEEP, "prompts.vision_depth": DEEP},
}

_SCHEMES: dict[str, dict[str, Any]] = {
    "zeroshot": {"regularizer.enabled": False, "meta.enabled": False},
    "plain": {"regularizer.enabled": False, "meta.enabled": False},
    "regularized": {"regularizer.enabled": True, "meta.enabled": False},
    "prometar": {"regularizer.enabled": True, "meta.enabled": True},
}


@dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
        name: Registry key (``prometar``).
        design: Prompt design.
        scheme: Training scheme.
        description: One line for help texts.
    """

    name: str
    design: PromptDesign
    scheme: Scheme
    description: str

    @property
    def uses_deep_depth(self) -> bool:
        """Whether ``prompts.deep_depth`` sets one of this design's prompt depths."""
        return DEEP in _DESIGNS[self.design].values()

    def settings(self, deep_depth: int = 9) -> dict[str, Any]:
        """Dotted run-config settings the method implies (prompt depths, scheme switches).

        Args:
            deep_depth: Depth of the design's deep prompts (``prompts.deep_depth``).
        """
        depths = {key: deep_depth if value == DEEP else value for key, value in _DESIGNS[self.design].items()}
        return {**depths, **_SCHEMES[self.scheme]}

    @property
    def trains(self) -> bool:
        """Whether the method trains anything."""
        return self.scheme != "zeroshot"


_METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("zeroshot", "none", "zeroshot", "zero-shot CLIP with the dataset's single template"),
        Method("coop", "coop", "plain", "CoOp: learned text context (block 0), cross-entropy"),
        Method("vpt", "vpt", "plain", "VPT: deep vision prompts, cross-entropy"),
        Method("ivlp", "ivlp", "plain", "IVLP: deep prompts in both towers, cross-entropy"),
        Method("ivlp_reg", "ivlp", "regularized", "IVLP + frozen-teacher regularisers (no meta-regulariser)"),
        Method("prometar", "ivlp", "prometar", "ProMetaR on IVLP (the paper's method)"),
        Method("prometar_coop", "coop", "prometar", "ProMetaR on CoOp's text prompt"),
        Method("prometar_vpt", "vpt", "prometar", "ProMetaR on VPT's vision prompts"),
    )
}


def list_methods() -> list[str]:
    """Registry keys of all methods."""
    return list(_METHODS)


def get_method(name: str) -> Method:
    """Look up a method.

    Raises:
        KeyError: Unknown name; the message lists the valid methods.
    """
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown method {name!r}; valid methods: {', '.join(_METHODS)}") from None
