"""Shared by the benchmark scripts: the machine and versions header, medians and the printed tables.

Every benchmark prints one block of Markdown: a title, the machine (CPU model, cores, load average,
memory), the versions (torch, open_clip, prometar git sha) and one table. ``run_all.py`` pastes
these blocks into ``docs/benchmarks.md`` unchanged.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GIB = 1024**3


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"7.9 / 6.1 / 4.0"``."""
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def memory_total_gib() -> float:
    """Physical memory of the machine in GiB (0.0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return 0.0


def git_sha() -> str:
    """Short commit of the working tree, ``+dirty`` when tracked files differ from it."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "diff", "--quiet", "HEAD", "--", "prometar", "orchestration"], cwd=REPO
            ).returncode
            != 0
        )
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> str:
    """``torch X · open_clip Y · prometar <sha> · python Z``."""
    import open_clip
    import torch

    return (
        f"torch {torch.__version__} · open_clip {open_clip.__version__} · prometar {git_sha()} · "
        f"python {platform.python_version()}"
    )


def machine() -> str:
    """``<CPU model> · N cores (M usable) · load average a / b / c · R GiB RAM``."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return (
        f"{cpu_model()} · {cores} cores ({usable} usable) · load average {load_average()} · "
        f"{memory_total_gib():.0f} GiB RAM"
    )


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far, in GiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def median(values: Sequence[float]) -> float:
    """Median of the timed repetitions."""
    return statistics.median(values)


def print_block(
    title: str,
    settings: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    notes: Sequence[str] = (),
) -> None:
    """Print one benchmark's Markdown block: title, machine, versions, settings, table, notes."""
    print(f"### {title}\n")
    print(f"- machine: {machine()}")
    print(f"- versions: {versions()}")
    print(f"- settings: {settings}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    if notes:
        print()
        for note in notes:
            print(f"- {note}")
    print(f"\n(load average at the end: {load_average()})\n", flush=True)
