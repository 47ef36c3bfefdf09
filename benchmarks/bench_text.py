"""Benchmark: the text tower with and without the exact sequence truncation (algorithm.md §1).

With a causal mask, tokens after a batch's last EOS never reach an EOS feature, so
``PromptedCLIP(truncate_text=True)`` cuts the sequences to (last EOS + 1) tokens. This script
encodes real class-name lists — all 101 Food-101 names and all 397 SUN397 names
(``benchmarks/classnames/``) — with the prompted ViT-B/16 text tower (``ViT-B-16-quickgelu``,
random weights, deep text prompts 4 × 9, ``"a photo of a <name>."``), once over the full 77
tokens and once truncated, and reports the medians and the speed-up. It asserts that the two give
the same features: max |difference| of the L2-normalised features ≤ 1e-5.

Timed: ``encode_text`` under ``torch.no_grad`` (evaluation / teacher), and for Food-101 also
forward + backward into the prompts (a training step's text pass). fp32, one thread by default.

Run: ``.venv/bin/python benchmarks/bench_text.py [--repeats 3] [--backbone ViT-B-16-quickgelu]``.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import report

CLASSNAMES = Path(__file__).resolve().parent / "classnames"
LISTS = {"Food-101": "food101.txt", "SUN397": "sun397.txt"}
TOLERANCE = 1e-5
TARGET_SPEEDUP = 5.0  # Food-101, forward


def read_names(filename: str) -> list[str]:
    return [line.strip() for line in (CLASSNAMES / filename).read_text().splitlines() if line.strip()]


def timed(function, repeats: int, warmup: int) -> tuple[float, object]:
    """Median CPU time of ``function()`` over ``repeats`` calls after ``warmup`` calls; last result.

    CPU time of this process (``time.process_time``): at one thread, the wall time on an idle machine.
    """
    times, result = [], None
    for index in range(warmup + repeats):
        start = time.process_time()
        result = function()
        if index >= warmup:
            times.append(time.process_time() - start)
    return report.median(times), result


def encode(model, tokens, text_prompts, no_grad: bool):
    """Class text features; with ``no_grad=False`` also back-propagated into the text prompts."""
    import torch

    if no_grad:
        with torch.no_grad():
            return model.encode_text(tokens)
    features = model.encode_text(tokens)  # [C, E]
    torch.autograd.grad(features.square().sum(), text_prompts)
    return features.detach()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ViT-B-16-quickgelu")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-backward", action="store_true", help="skip the forward + backward rows")
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from prometar.backbone import load_clip
    from prometar.prompts import PromptedCLIP

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = PromptedCLIP(load_clip(args.backbone, None))
    model.eval()
    text_prompts = list(model.prompt_parameters("text").values())
    rows, speedups = [], {}
    for label, filename in LISTS.items():
        names = read_names(filename)
        tokens = model.tokenize_classnames(names)  # [C, 77]
        kept = int(model._eos_positions(tokens).max()) + 1
        passes = [("forward (no grad)", True)]
        if label == "Food-101" and not args.no_backward:
            passes.append(("forward + backward", False))
        for name, no_grad in passes:
            figures = {}
            for truncate in (False, True):
                model.truncate_text = truncate

                figures[truncate] = timed(
                    functools.partial(encode, model, tokens, text_prompts, no_grad), args.repeats, args.warmup
                )
            full_s, full = figures[False]
            cut_s, cut = figures[True]
            difference = (F.normalize(full, dim=-1) - F.normalize(cut, dim=-1)).abs().max().item()
            raw_difference = (full - cut).abs().max().item()
            assert difference <= TOLERANCE, f"{label} {name}: truncated features differ by {difference:.2e}"
            speedups[(label, name)] = full_s / cut_s
            rows.append(
                (
                    f"{label} ({len(names)} names)",
                    name,
                    f"{tokens.shape[1]} → {kept}",
                    f"{full_s:.2f} s",
                    f"{cut_s:.2f} s",
                    f"{full_s / cut_s:.1f}×",
                    f"{difference:.1e} ({raw_difference:.1e})",
                )
            )
    model.truncate_text = True
    food = speedups[("Food-101", "forward (no grad)")]
    report.print_block(
        "Text tower: exact sequence truncation",
        f"{args.backbone} text tower (random weights), deep text prompts 4 × 9, fp32, "
        f"{args.threads} thread(s), "
        f"CPU time, median of {args.repeats} after {args.warmup} warm-up",
        (
            "class names",
            "pass",
            "tokens",
            "77 tokens",
            "truncated",
            "speed-up",
            "max abs Δ, normalised (raw)",
        ),
        rows,
        [
            f"target: ≥ {TARGET_SPEEDUP:g}× on Food-101 (forward): "
            f"{'met' if food >= TARGET_SPEEDUP else 'NOT met'} "
            f"({food:.1f}×)",
            f"features asserted identical: max |Δ| of normalised features ≤ {TOLERANCE:g}",
        ],
    )


if __name__ == "__main__":
    main()
