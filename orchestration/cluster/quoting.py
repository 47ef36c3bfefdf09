"""Text from input entering a generated cluster file: comments and shell words that keep its structure.

The sbatch script and the RayJob manifest carry names from the command line (the sweep file's
path, the ``-o`` file name, overrides) in comments and shell words. A comment ends at a line break
(bash: a newline; YAML: also CR, NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR), so
:func:`comment_text` writes every character outside printable ASCII as an escape; a shell word
(:func:`shell_word`) is one line of printable ASCII that bash reads back as exactly the input.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable


def _printable_ascii(text: str) -> bool:
    return all(" " <= char <= "~" for char in text)


def comment_text(text: str) -> str:
    """``text`` for a one-line comment: printable ASCII kept, every other character and the
    backslash escaped (``\\n``, ``\\x1b``, ``\\u2028``, ``\\\\``), so no line break can end the
    comment and the text reads back unambiguously."""
    return "".join(
        char if " " <= char <= "~" and char != "\\" else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def shell_word(text: str) -> str:
    """One bash word, on one line of printable ASCII, that bash reads back as exactly ``text``.

    Printable ASCII is quoted by :func:`shlex.quote`; anything else (a newline, a control
    character, non-ASCII) becomes bash's ANSI-C quoting ``$'...'`` with every byte outside
    printable ASCII written ``\\xHH`` (UTF-8). Bash only: POSIX ``sh`` takes :func:`shlex.join`.
    """
    if _printable_ascii(text):
        return shlex.quote(text)
    body = []
    for byte in text.encode("utf-8", "surrogateescape"):
        char = chr(byte)
        if char in "\\'":
            body.append("\\" + char)
        elif " " <= char <= "~":
            body.append(char)
        else:
            body.append(f"\\x{byte:02x}")
    return "$'" + "".join(body) + "'"


def shell_join(words: Iterable[str]) -> str:
    """:func:`shell_word` of each word, joined by spaces: one line of bash."""
    return " ".join(shell_word(word) for word in words)
