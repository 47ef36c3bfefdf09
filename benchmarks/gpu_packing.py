"""GPU packing check: ProMetaR steps/s with 1, 2 and 4 trials sharing one GPU (run by ``gpu_check.sh``).

For each packing k, k separate worker processes each build the ViT-B/16 ProMetaR step of
``bench_step.py`` (``ViT-B-16-quickgelu``, random weights, batch 4, 50 classes, bf16 autocast
around fp32 weights and ``configure_backends`` (TF32) on CUDA, as a run sets them), run
``--warmup`` steps, wait for each other at a barrier, then time
``--steps`` steps (``torch.cuda.synchronize`` before reading the clock). Each worker reports its
steps/s and its peak memory (``torch.cuda.max_memory_allocated`` and ``max_memory_reserved``).
The table gives, per k: steps/s per trial, the GPU's aggregate steps/s, and the peak memory per
trial — what a sweep's ``resources: {gpu: 1/k}`` packing should be chosen from.

``--device cpu --steps 1 --backbone toy`` is a smoke mode that exercises the same process logic
without a GPU. With ``--device cuda`` and no CUDA device the script stops at once with exit 2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import report

HERE = Path(__file__).resolve().parent


def worker(args: argparse.Namespace) -> None:
    """One trial: build, warm up, meet the others at the barrier, time the steps, write JSON."""
    import bench_step
    import torch

    from prometar.backends import configure_backends

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    configure_backends(device)  # as prometar.run.run does: TF32 on CUDA
    step, images, labels, task = bench_step.build(
        args.backbone, "prometar", args.classes, args.batch, device=args.device
    )
    for _ in range(args.warmup):
        step.step(images, labels, task)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    folder = Path(args.barrier)
    (folder / f"ready_{args.rank}").touch()
    deadline = time.monotonic() + 300
    while len(list(folder.glob("ready_*"))) < args.packing[0]:  # the one packing this worker is part of
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {args.rank}: the other workers never got ready")
        time.sleep(0.05)
    start = time.perf_counter()
    for _ in range(args.steps):
        step.step(images, labels, task)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    figures = {"rank": args.rank, "steps_per_s": args.steps / seconds, "seconds": seconds}
    if device.type == "cuda":
        figures["max_allocated_gib"] = torch.cuda.max_memory_allocated(device) / report.GIB
        figures["max_reserved_gib"] = torch.cuda.max_memory_reserved(device) / report.GIB
    else:
        figures["max_allocated_gib"] = figures["max_reserved_gib"] = report.peak_rss_gib()
    (folder / f"result_{args.rank}.json").write_text(json.dumps(figures))


def pack(args: argparse.Namespace, packing: int) -> list[dict]:
    """Run ``packing`` workers at once on the device; return their figures."""
    with tempfile.TemporaryDirectory(prefix=f"gpu_packing_{packing}_") as folder:
        common = [
            "--worker",
            "--barrier",
            folder,
            "--packing",
            str(packing),
            "--device",
            args.device,
            "--backbone",
            args.backbone,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--classes",
            str(args.classes),
            "--batch",
            str(args.batch),
        ]
        processes = [
            subprocess.Popen(
                [sys.executable, __file__, *common, "--rank", str(rank)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for rank in range(packing)
        ]
        errors = []
        for rank, process in enumerate(processes):
            _, stderr = process.communicate()
            if process.returncode != 0:
                errors.append(f"worker {rank} of {packing} exited {process.returncode}:\n{stderr[-2000:]}")
        if errors:
            raise RuntimeError("\n".join(errors))
        return [json.loads((Path(folder) / f"result_{rank}.json").read_text()) for rank in range(packing)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (smoke mode)")
    parser.add_argument("--packing", nargs="+", type=int, default=[1, 2, 4], help="trials per GPU to try")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per worker")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per worker first")
    parser.add_argument("--backbone", choices=["vitb16", "toy"], default="vitb16")
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    import torch

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print(
                f"gpu_check: no CUDA device (torch {torch.__version__}, CUDA build "
                f"{torch.version.cuda}): nothing measured. Run it on a GPU machine, or "
                "--device cpu --steps 1 --backbone toy for the smoke mode.",
                file=sys.stderr,
            )
            return 2
        gpu = torch.cuda.get_device_properties(torch.device(args.device))
        where = f"{gpu.name}, {gpu.total_memory / report.GIB:.0f} GiB, bf16 autocast"
    else:
        where = "CPU smoke mode (one thread per worker, memory columns = peak RSS), fp32"
    rows = []
    single = None
    for packing in args.packing:
        figures = pack(args, packing)
        per_trial = [f["steps_per_s"] for f in figures]
        total = sum(per_trial)
        if packing == 1:
            single = total
        rows.append(
            (
                packing,
                f"{min(per_trial):.2f}–{max(per_trial):.2f}",
                f"{total:.2f}",
                f"{total / single:.2f}×" if single else "–",
                f"{max(f['max_allocated_gib'] for f in figures):.2f} GiB",
                f"{max(f['max_reserved_gib'] for f in figures):.2f} GiB",
            )
        )
    report.print_block(
        "GPU packing: ProMetaR steps/s per trial and per GPU",
        f"{args.backbone}, batch {args.batch}, {args.classes} classes, {where}; {args.steps} timed steps "
        f"after {args.warmup} warm-up per worker, the workers timed together",
        (
            "trials per GPU",
            "steps/s per trial",
            "steps/s per GPU",
            "vs 1 trial",
            "peak allocated per trial",
            "peak reserved per trial",
        ),
        rows,
        [
            "pack k trials per GPU (resources gpu: 1/k) when steps/s per GPU still grows with k and k × "
            "peak reserved fits the GPU's memory with room to spare"
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
