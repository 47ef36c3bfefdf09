"""``make bench``: run every benchmark script and append its figures to ``docs/benchmarks.md``.

Each script prints one Markdown block (title, machine, versions, settings, one table); this runner
runs them one after the other in fresh processes, echoes their output, and appends a dated section
holding all the blocks to ``docs/benchmarks.md`` (the top of that file explains how each figure is
measured and stays as it is). A script that fails is reported in the section with the end of its
error output, the others still run, and the exit status is 1.

Run: ``.venv/bin/python benchmarks/run_all.py`` (the full set: ViT-B/16 steps at one thread take
tens of minutes on a busy machine), ``--quick`` (toy backbone and one repetition: a few minutes),
``--only step text`` to pick scripts, ``--no-docs`` to leave the docs alone.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import report

HERE = Path(__file__).resolve().parent
DOCS = report.REPO / "docs" / "benchmarks.md"

# name -> (script, arguments of the full run, arguments of --quick)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "step": (
        "bench_step.py",
        ["--methods", "ivlp", "ivlp_reg", "prometar", "prometar_first_order"],
        ["--backbones", "toy", "--repeats", "1"],
    ),
    "text": ("bench_text.py", [], ["--repeats", "1", "--warmup", "0", "--no-backward"]),
    "eval": ("bench_eval.py", [], ["--backbones", "toy", "--repeats", "1"]),
    "orchestration": ("bench_orchestration.py", [], ["--trials", "2"]),
    "tables": ("bench_tables.py", ["--runs", "1000"], ["--runs", "1000"]),
}


def run_one(name: str, quick: bool) -> tuple[str, bool, float]:
    """Run one script; return its Markdown block, whether it succeeded, and its wall time."""
    script, full, fast = BENCHMARKS[name]
    command = [sys.executable, str(HERE / script), *(fast if quick else full)]
    print(f"$ {' '.join(command[1:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=report.REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    seconds = time.perf_counter() - start
    output = done.stdout.strip()
    if name == "tables" and done.returncode == 0:
        # bench_tables.py (read 1,000 runs, render the tables) prints a plain table of its own.
        output = "\n".join(
            [
                "### Tables over 1,000 runs\n",
                f"- machine: {report.machine()}",
                f"- versions: {report.versions()}",
                "- settings: `bench_tables.py --runs 1000`: 1,000 FINISHED child runs in a SQLite MLflow "
                "store; read into the tidy runs table, then the base-to-new table in markdown, latex and "
                "csv\n",
                "```",
                output,
                "```\n",
            ]
        )
    if done.returncode != 0:
        tail = (done.stderr.strip() or output)[-2000:]
        output = f"### {name}: FAILED (exit {done.returncode})\n\n```\n{tail}\n```\n"
    return output, done.returncode == 0, seconds


def append_section(blocks: list[str], quick: bool) -> None:
    """Append one dated section with every block to ``docs/benchmarks.md``."""
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    kind = "quick run (`--quick`)" if quick else "full run"
    section = [f"\n## {stamp} — {kind}, prometar {report.git_sha()}\n"] + [
        block.rstrip() + "\n" for block in blocks
    ]
    with open(DOCS, "a", encoding="utf-8") as stream:
        stream.write("\n".join(section))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these scripts")
    parser.add_argument("--quick", action="store_true", help="toy backbone, one repetition")
    parser.add_argument("--no-docs", action="store_true", help="print only; do not append to docs")
    args = parser.parse_args(argv)
    blocks, failed = [], []
    for name in args.only or list(BENCHMARKS):
        block, ok, seconds = run_one(name, args.quick)
        print(block, flush=True)
        print(f"({name}: {seconds:.0f} s)\n", file=sys.stderr, flush=True)
        blocks.append(block)
        if not ok:
            failed.append(name)
    if not args.no_docs:
        append_section(blocks, args.quick)
        print(f"appended to {DOCS.relative_to(report.REPO)}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
