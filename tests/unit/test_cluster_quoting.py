"""Comments and shell words from input: one line of printable ASCII that reads back as the input."""

from __future__ import annotations

import subprocess

import pytest

from orchestration.cluster.quoting import comment_text, shell_join, shell_word

TEXTS = [
    "plain.yaml",
    "a b",
    "it's",
    "new\nline",
    "tab\there",
    "back\\slash",
    "$(id)`id`",
    "caf\u00e9 \u2028",
    "\r\x1b[0m",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_comment_text_is_one_printable_line(text: str) -> None:
    out = comment_text(text)
    assert all(" " <= char <= "~" for char in out)
    assert out.encode().decode("unicode_escape") == text


def test_shell_words_read_back_exactly_under_bash() -> None:
    line = shell_join(TEXTS)
    assert all(" " <= char <= "~" for char in line)
    result = subprocess.run(
        ["bash", "-c", f'for word in {line}; do printf "%s\\0" "$word"; done'],
        check=True,
        capture_output=True,
    )
    assert result.stdout.decode().split("\0")[:-1] == TEXTS


def test_printable_words_use_posix_quoting() -> None:
    assert shell_word("a b") == "'a b'" and shell_word("x") == "x"
    assert shell_word("a\nb") == "$'a\\x0ab'"
