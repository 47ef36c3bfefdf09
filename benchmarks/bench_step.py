"""Benchmark: one training step per method — time and peak memory (algorithm.md §4, §5).

Methods: ``ivlp`` (IVLP, plain CE), ``ivlp_reg`` (IVLP + both regularisers, one backward) and
``prometar`` (phase A with separate gradients and the gate, phase B second order); on request
``prometar_first_order`` (``meta.order: first``). Backbones:
``vitb16`` = ``load_clip("ViT-B-16-quickgelu", None)`` (random weights, ViT-B/16 shapes) and
``toy`` = ``load_clip("toy-clip", None)``; prompts 4 tokens × depth 9 in each tower (capped at the
tower's blocks on the toy), batch of 4 random images with 4 distinct labels over the first 50
Food-101 class names, fp32, ``torch.set_num_threads(1)`` by default.

Each (backbone, method) runs in a fresh child process: the child builds the model, runs
``--warmup`` untimed steps and ``--repeats`` timed ones (the median is reported), and reports its
peak resident set size (``ru_maxrss``: model, activations, autograd graph, allocator slack, all
of it) and the peak it had before the first step (the model alone). The ProMetaR step uses a fixed
virtual task (query = item 0, support = items 1..3, as with 4 distinct labels) and a random text
teacher (its values do not change the cost). Weights are random: time does not depend on them.

Run: ``.venv/bin/python benchmarks/bench_step.py [--backbones toy vitb16] [--repeats 3]``;
``--profile`` prints a torch.profiler table of one step instead (one backbone and method).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import report

BACKBONES = {"vitb16": "ViT-B-16-quickgelu", "toy": "toy-clip"}
METHODS = {
    "ivlp": "plain",
    "ivlp_reg": "regularized",
    "prometar": "prometar",
    "prometar_first_order": "prometar",
}  # the last: meta.order first (a named switch), on request
DEFAULT_METHODS = ["ivlp", "ivlp_reg", "prometar"]
CLASSNAMES = Path(__file__).resolve().parent / "classnames" / "food101.txt"
# Ours, ViT-B/16 shapes, one thread (issue 9); the published implementation's figures (algorithm.md §5).
TARGET_PROMETAR_S, TARGET_PROMETAR_GIB, TARGET_RATIO = 29.0, 8.8, 4.0
PUBLISHED = {"ivlp": (9.45, 4.6), "prometar": (57.8, 17.6)}


def build(
    backbone_key: str,
    method: str,
    classes: int,
    batch: int,
    device: str = "cpu",
    sequence_first_blocks: bool = True,
):
    """The training step, batch and virtual task of one (backbone, method) on ``device``.

    On CUDA the step runs under bf16 autocast around fp32 weights (the official recipe on GPU).
    """
    import torch

    from prometar.backbone import load_clip
    from prometar.meta import GateNetwork, VirtualTask
    from prometar.prompts import PromptedCLIP
    from prometar.steps.plain import PlainStep
    from prometar.steps.prometar import ProMetaRStep
    from prometar.steps.regularized import RegularizedStep

    torch.manual_seed(0)
    backbone = load_clip(BACKBONES[backbone_key], None, device=device)
    clip = backbone.model
    text_depth = min(9, len(clip.transformer.resblocks))
    vision_depth = min(9, len(clip.visual.transformer.resblocks))
    model = PromptedCLIP(backbone, text_depth=text_depth, vision_depth=vision_depth)
    model.sequence_first_blocks = sequence_first_blocks
    names = CLASSNAMES.read_text().split()[:classes]
    class_tokens = model.tokenize_classnames(names)  # [C, L]
    embed_dim = clip.text_projection.shape[1]
    teacher_text = torch.randn(len(names), embed_dim, device=device)  # [C, E]; values do not change the cost
    prompts = {**model.prompt_parameters("text"), **model.prompt_parameters("vision")}
    optimizer = torch.optim.SGD(list(prompts.values()), lr=0.0025, momentum=0.9, weight_decay=5e-4)
    scheme = METHODS[method]
    gate = gate_optimizer = None
    if scheme == "prometar":
        gate = GateNetwork({name: tuple(t.shape) for name, t in prompts.items()}, reduction=8).to(device)
        gate_optimizer = torch.optim.SGD(gate.parameters(), lr=1e-6, momentum=0.9, weight_decay=5e-4)
    autocast_dtype = torch.bfloat16 if torch.device(device).type == "cuda" else None
    if scheme == "plain":
        step = PlainStep(model, optimizer, class_tokens=class_tokens, autocast_dtype=autocast_dtype)
    elif scheme == "regularized":
        step = RegularizedStep(
            model,
            optimizer,
            class_tokens=class_tokens,
            teacher_text=teacher_text,
            text_weight=50.0,
            image_weight=20.0,
            autocast_dtype=autocast_dtype,
        )
    else:
        step = ProMetaRStep(
            model,
            optimizer,
            class_tokens=class_tokens,
            teacher_text=teacher_text,
            text_weight=50.0,
            image_weight=20.0,
            gate=gate,
            gate_optimizer=gate_optimizer,
            second_order=method != "prometar_first_order",
            autocast_dtype=autocast_dtype,
        )
    size = backbone.image_size
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(
        device
    )  # [B, 3, S, S]
    labels = (torch.arange(batch) % len(names)).to(device)  # distinct labels
    task = None
    if scheme == "prometar":
        task = VirtualTask(query=(0,), support=tuple(range(1, batch)), lam=(0.3,), partners=(batch - 1,))
    return step, images, labels, task


def child(args: argparse.Namespace) -> None:
    """Run one (backbone, method) and print one JSON line of figures."""
    import torch

    torch.set_num_threads(args.threads)
    step, images, labels, task = build(
        args.backbones[0],
        args.methods[0],
        args.classes,
        args.batch,
        sequence_first_blocks=not args.batch_first_blocks,
    )
    model_gib = report.peak_rss_gib()
    if args.profile:
        profile_step(step, images, labels, task)
        return
    times, cpu_times = [], []
    for index in range(args.warmup + args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        step.step(images, labels, task)
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - start_cpu)
    print(
        json.dumps(
            {
                "times": times,
                "cpu_times": cpu_times,
                "peak_gib": report.peak_rss_gib(),
                "model_gib": model_gib,
            }
        )
    )


def profile_step(step, images, labels, task) -> None:
    """Print where one step's time goes: per piece of the step, then per operator."""
    from torch.profiler import ProfilerActivity, profile

    step.step(images, labels, task)  # warm-up
    pieces: list[tuple[str, float]] = []
    for name in ("_image_teacher", "_features", "_separate_gradients", "_meta_step"):
        original = getattr(step, name)

        def timed(*a, _name=name, _original=original, **k):
            start = time.process_time()
            try:
                return _original(*a, **k)
            finally:
                pieces.append((_name, time.process_time() - start))

        setattr(step, name, timed)
    start = time.process_time()
    step.step(images, labels, task)
    total = time.process_time() - start
    print(f"step {total:.2f} s CPU; pieces in call order (nested calls inside _meta_step are listed first):")
    for name, seconds in pieces:
        print(f"  {name:<22} {seconds:8.2f} s")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step.step(images, labels, task)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


def run_child(backbone: str, method: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--backbones",
        backbone,
        "--methods",
        method,
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--classes",
        str(args.classes),
        "--batch",
        str(args.batch),
    ]
    if args.batch_first_blocks:
        command.append("--batch-first-blocks")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{backbone}/{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=["toy", "vitb16"])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per method (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--profile", action="store_true", help="torch.profiler table of one step")
    parser.add_argument(
        "--batch-first-blocks",
        action="store_true",
        help="PromptedCLIP.sequence_first_blocks = False (the path before the fast path)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child or args.profile:
        child(args)
        return

    rows, notes = [], []
    for backbone in args.backbones:
        figures = {method: run_child(backbone, method, args) for method in args.methods}
        base = report.median(figures["ivlp"]["cpu_times"]) if "ivlp" in figures else None
        for method, figure in figures.items():
            seconds = report.median(figure["cpu_times"])
            ratio = f"{seconds / base:.2f}×" if base else "–"
            published = PUBLISHED.get(method) if backbone == "vitb16" else None
            rows.append(
                (
                    backbone,
                    method,
                    f"{seconds:.3f} s",
                    f"{report.median(figure['times']):.3f} s",
                    f"{figure['peak_gib']:.2f} GiB",
                    f"{figure['model_gib']:.2f} GiB",
                    ratio,
                    f"{published[0]} s / {published[1]} GiB" if published else "–",
                )
            )
        if backbone == "vitb16" and "prometar" in figures and base:
            seconds = report.median(figures["prometar"]["cpu_times"])
            peak = figures["prometar"]["peak_gib"]
            ratio = seconds / base
            verdicts = [
                f"{seconds:.1f} s ≤ {TARGET_PROMETAR_S:g} s: "
                f"{'met' if seconds <= TARGET_PROMETAR_S else 'NOT met'}",
                f"{peak:.2f} GiB ≤ {TARGET_PROMETAR_GIB:g} GiB: "
                f"{'met' if peak <= TARGET_PROMETAR_GIB else 'NOT met'}",
                f"{ratio:.2f}× ≤ {TARGET_RATIO:g}× IVLP: {'met' if ratio <= TARGET_RATIO else 'NOT met'}",
            ]
            notes.append("targets for ProMetaR (ViT-B/16, one thread): " + "; ".join(verdicts))
    notes.append(
        "step = CPU time of the process (user + system) during the step: at one thread it is "
        "the step's wall time on an idle machine, and it is far less disturbed by other load than "
        "the wall clock; the wall column is what the shared machine gave (read it with the load "
        "average); ÷ IVLP uses CPU times measured back to back"
    )
    report.print_block(
        "Training step per method",
        f"batch {args.batch}, {args.classes} classes, fp32, {args.threads} thread(s), "
        f"{'batch-first blocks (sequence_first_blocks off), ' if args.batch_first_blocks else ''}median of "
        f"{args.repeats} after {args.warmup} warm-up, one fresh process per row",
        (
            "backbone",
            "method",
            "step (CPU, median)",
            "wall (median)",
            "peak RSS",
            "RSS before step",
            "÷ IVLP",
            "published",
        ),
        rows,
        notes,
    )


if __name__ == "__main__":
    main()
