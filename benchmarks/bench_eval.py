"""Benchmark: evaluation throughput (images/s) with the class text features computed once.

``prometar.evaluation.Evaluator`` encodes a class list's prompted text features once and then only
runs the image tower per batch. This script times ``Evaluator.evaluate`` over pre-made batches of
random images (decoding JPEGs is not measured) against a reference loop that re-encodes the class
texts for every batch, and checks the two give the same accuracy. Class list: all 101 Food-101
names. Backbones: ``toy`` (``toy-clip``) and ``vitb16`` (``ViT-B-16-quickgelu``), random weights,
IVLP prompts, fp32, one thread by default.

Run: ``.venv/bin/python benchmarks/bench_eval.py [--backbones toy vitb16] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import report

BACKBONES = {"vitb16": "ViT-B-16-quickgelu", "toy": "toy-clip"}
DEFAULT_IMAGES = {"toy": (1000, 100), "vitb16": (16, 8)}  # images, batch size
CLASSNAMES = Path(__file__).resolve().parent / "classnames" / "food101.txt"


def evaluate_once(model, batches, names: list[str]) -> int:
    """Correct predictions of a fresh ``Evaluator`` (its one text pass included in the time)."""
    from prometar.evaluation import Evaluator

    return Evaluator(model).evaluate(batches, names).correct


def evaluate_per_batch(model, batches, tokens) -> int:
    """Reference: correct predictions with the class texts re-encoded for every batch."""
    import torch
    import torch.nn.functional as F

    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in batches:
            text = F.normalize(model.encode_text(tokens), dim=-1)  # [C, E]
            image = F.normalize(model.encode_image(images), dim=-1)  # [b, E]
            correct += int(((image @ text.t()).argmax(dim=-1) == labels).sum())
    return correct


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=["toy", "vitb16"])
    parser.add_argument("--repeats", type=int, default=3, help="timed evaluations (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed evaluations first")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from prometar.backbone import load_clip
    from prometar.evaluation import Evaluator
    from prometar.prompts import PromptedCLIP

    torch.set_num_threads(args.threads)
    names = [line.strip() for line in CLASSNAMES.read_text().splitlines() if line.strip()]
    rows = []
    for key in args.backbones:
        torch.manual_seed(0)
        backbone = load_clip(BACKBONES[key], None)
        clip = backbone.model
        model = PromptedCLIP(
            backbone,
            text_depth=min(9, len(clip.transformer.resblocks)),
            vision_depth=min(9, len(clip.visual.transformer.resblocks)),
        )
        count, batch = DEFAULT_IMAGES[key]
        size = backbone.image_size
        generator = torch.Generator().manual_seed(1)
        batches = [
            (
                torch.randn(batch, 3, size, size, generator=generator),  # [b, 3, S, S]
                torch.randint(0, len(names), (batch,), generator=generator),
            )
            for _ in range(count // batch)
        ]
        tokens = model.tokenize_classnames(names)  # [C, L]

        figures = {}
        loops = (
            ("text once (Evaluator)", functools.partial(evaluate_once, model, batches, names)),
            ("text per batch (reference)", functools.partial(evaluate_per_batch, model, batches, tokens)),
        )
        for label, function in loops:
            times, correct = [], None
            for index in range(args.warmup + args.repeats):
                start = time.process_time()
                correct = function()
                if index >= args.warmup:
                    times.append(time.process_time() - start)
            figures[label] = (report.median(times), correct)
        (once_s, once_correct), (ref_s, ref_correct) = figures.values()
        assert once_correct == ref_correct, f"{key}: {once_correct} vs {ref_correct} correct"
        evaluator = Evaluator(model)
        start = time.process_time()
        evaluator.class_features(names)
        text_s = time.process_time() - start
        n_images = len(batches) * batch
        for label, (seconds, _) in figures.items():
            rows.append(
                (
                    key,
                    label,
                    f"{n_images} × {size}px, batch {batch}",
                    f"{seconds:.2f} s",
                    f"{n_images / seconds:.1f}",
                    f"{ref_s / seconds:.2f}×",
                )
            )
        rows.append((key, "class text features alone (101 classes)", "", f"{text_s:.2f} s", "", ""))
    report.print_block(
        "Evaluation throughput",
        f"Food-101 class list (101 names), IVLP prompts, random weights, fp32, {args.threads} thread(s), "
        f"CPU time (at one thread: the wall time on an idle machine), median of {args.repeats} after "
        f"{args.warmup} warm-up; pre-made batches (no image decoding)",
        ("backbone", "classifier", "images", "time", "images/s", "speed-up vs per batch"),
        rows,
        ["both loops give the same number of correct predictions (asserted)"],
    )


if __name__ == "__main__":
    main()
