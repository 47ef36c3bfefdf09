"""LaTeX tables: label, caption, published block and a structure that compiles.

No LaTeX engine is installed where these tests usually run, so the structure is checked: balanced
braces, environments and math, one ``\\label``, a tabular column count every row matches. Where an
engine is installed, a second test compiles every table.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from orchestration.ledger.runs import RunsTable as Ledger
from orchestration.ledger.runs import tidy_from_wide
from orchestration.results.context import ResultsContext
from orchestration.results.published import load_published
from orchestration.results.tables import build_tables, latex_label
from orchestration.results.transfer import DOMAIN_TARGETS

BACKBONE = {"backbone.name": "ViT-B-16-quickgelu", "backbone.pretrained": "openai"}


def with_backbone(wide: pd.DataFrame) -> Ledger:
    return tidy_from_wide(wide.assign(**BACKBONE), source="hand")


def base2new() -> Ledger:
    rows = [
        (m, d, s, 70.0 + s + i, 60.0 - s + i)
        for i, m in enumerate(("coop", "prometar"))
        for d in ("dtd", "eurosat")
        for s in (1, 2, 3)
    ]
    wide = pd.DataFrame(rows, columns=["method", "dataset", "seed", "base_acc", "new_acc"]).assign(shots=16)
    return with_backbone(wide)


def few_shot() -> Ledger:
    rows = [
        {"method": "coop", "dataset": d, "seed": s, "shots": k, "protocol": "all_classes", "acc": 40.0 + k}
        for d in ("dtd", "eurosat")
        for s in (1, 2)
        for k in (1, 2, 4)
    ]
    return with_backbone(pd.DataFrame(rows))


def transfer(protocol: str, targets: tuple[str, ...]) -> Ledger:
    rows = [
        {
            "method": "prometar",
            "dataset": "imagenet",
            "seed": s,
            "shots": 16,
            "protocol": protocol,
            "acc/imagenet": 70.0 + s,
            **{f"acc/{t}": 50.0 + i for i, t in enumerate(targets)},
        }
        for s in (1, 2)
    ]
    return with_backbone(pd.DataFrame(rows))


def ablation() -> Ledger:
    rows = [
        {
            "method": "prometar",
            "dataset": d,
            "seed": s,
            "shots": 16,
            "base_acc": 80.0 + g,
            "new_acc": 60.0,
            "meta.gate_mode": mode,
        }
        for g, mode in enumerate(("learned", "constant"))
        for d in ("dtd", "eurosat")
        for s in (1, 2)
    ]
    return with_backbone(pd.DataFrame(rows))


def search() -> Ledger:
    rows = [
        {
            "method": "prometar",
            "dataset": "dtd",
            "seed": 1,
            "shots": 16,
            "protocol": "search",
            "val_hm": 60.0 + i,
            "regularizer.text_weight": 5.0 * 2**i,
        }
        for i in range(4)
    ]
    return with_backbone(pd.DataFrame(rows))


def every_table() -> list[tuple[str, str]]:
    """(kind, LaTeX) of every table kind, base-to-new with and without the published block."""
    cases = [
        (base2new(), {"datasets": ("dtd", "eurosat"), "published": load_published()}),
        (base2new(), {"datasets": ("dtd", "eurosat")}),
        (few_shot(), {"datasets": ("dtd", "eurosat")}),
        (transfer("domain_generalization", DOMAIN_TARGETS), {}),
        (transfer("cross_dataset", ("dtd", "eurosat")), {"targets": ("dtd", "eurosat")}),
        (ablation(), {"datasets": ("dtd", "eurosat")}),
        (search(), {"search_space": ("regularizer.text_weight",)}),
    ]
    out = []
    for ledger, options in cases:
        for table in build_tables(ledger, ResultsContext(name="my_sweep", expected_seeds=3, **options)):
            out.append((table.name, table.render("latex")))
    return out


def strip_escapes(text: str) -> str:
    return text.replace(r"\{", "").replace(r"\}", "").replace(r"\$", "").replace(r"\%", "").replace(r"\&", "")


def check_structure(kind: str, text: str) -> None:
    body = strip_escapes(text)
    depth = 0
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, kind
    assert depth == 0, kind
    stack = []
    for verb, env in re.findall(r"\\(begin|end)\{(\w+)\}", body):
        if verb == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, (kind, env)
    assert stack == [], kind
    for line in body.splitlines():
        assert line.count("$") % 2 == 0, (kind, line)
    assert re.findall(r"\\label\{([^}]*)\}", text) == [f"tab:my_sweep-{kind}"]
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", text).group(1)
    inside = text.split(r"\begin{tabular}", 1)[1].split(r"\end{tabular}", 1)[0]
    rows = [line for line in inside.splitlines() if line.rstrip().endswith(r"\\")]
    assert rows, kind
    for row in rows:
        cells = len(re.split(r"(?<!\\)&", row))
        assert cells == len(spec), (kind, row)
    for rule in re.findall(r"\\cmidrule\(l\)\{2-(\d+)\}", text):
        assert int(rule) == len(spec), kind
    caption = re.search(r"\\caption\{(.*)\}\n", text).group(1)
    assert "seed" in caption and "shot" in caption and r"backbone ViT-B-16-quickgelu (openai)" in caption, (
        kind
    )


def test_every_table_has_one_label_a_caption_and_a_balanced_structure():
    tables = every_table()
    assert [kind for kind, _ in tables] == [
        "base2new",
        "base2new",
        "few_shot",
        "domain_generalization",
        "cross_dataset",
        "ablation",
        "search",
    ]
    for kind, text in tables:
        check_structure(kind, text)


def test_published_numbers_are_a_block_of_rows():
    (kind, text), (_, plain) = every_table()[:2]
    assert r"\cmidrule(l){2-5}" in text and "ProMetaR (published)" in text and "CoOp (published)" in text
    assert "paper" not in text.lower().split(r"\end{tabular}")[0]  # no paper columns in the LaTeX
    assert "published numbers in the lower rows of each block" in text
    assert r"\cmidrule" not in plain and "(published)" not in plain
    # the published block of DTD holds the paper's DTD numbers
    published = load_published()
    paper = published[(published["method"] == "coop") & (published["dataset"] == "dtd")].iloc[0]
    row = next(
        line
        for line in text.splitlines()
        if line.startswith(" & CoOp (published)") and f"{paper['base']:.2f}" in line
    )
    assert f"{paper['hm']:.2f}" in row


def test_latex_label_is_safe():
    assert latex_label("base2new", "few_shot") == "tab:base2new-few_shot"
    assert latex_label("my sweep/{1}", "hm") == "tab:my-sweep--1--hm"


ENGINE = next((e for e in ("pdflatex", "lualatex", "tectonic") if shutil.which(e)), None)


@pytest.mark.skipif(ENGINE is None, reason="no LaTeX engine installed (pdflatex, lualatex, tectonic)")
def test_every_table_compiles(tmp_path: Path):
    document = "\n".join(
        [
            r"\documentclass{article}",
            r"\usepackage{booktabs}",
            r"\begin{document}",
            *(text for _, text in every_table()),
            r"\end{document}",
        ]
    )
    (tmp_path / "tables.tex").write_text(document)
    command = (
        [ENGINE, "tables.tex"]
        if ENGINE == "tectonic"
        else [ENGINE, "-interaction=nonstopmode", "-halt-on-error", "tables.tex"]
    )
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "tables.pdf").is_file()
