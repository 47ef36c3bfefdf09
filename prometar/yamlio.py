"""Reading YAML the project trusts: run configs, presets, ``--set`` values and sweep files.

Every YAML text goes through :func:`parse_yaml`, which is stricter than ``yaml.safe_load``:

- no object construction (a ``yaml.SafeLoader``: mappings, lists, strings, numbers, booleans, null);
- YAML 1.2 floats: ``1e-5`` is a float (PyYAML's 1.1 rules make it a string);
- a key written twice in one mapping is an error naming the key and both lines (PyYAML keeps the
  last value silently, so a typo'd copy of a key drops a setting without a word);
- aliases may not expand the document past :data:`MAX_EXPANDED_NODES` values ("billion laughs").

Files are read by :func:`read_text_file`: a file that is not UTF-8 or cannot be opened is one
:class:`YamlFileError` naming the path. :func:`shorten` caps a value echoed in a message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from prometar.errors import InputError, InputFileError
from prometar.files import MAX_TEXT_FILE_BYTES, read_input_bytes

__all__ = [
    "MAX_EXPANDED_NODES",
    "MAX_SHOWN",
    "YamlFileError",
    "cap",
    "parse_yaml",
    "read_text_file",
    "shorten",
]

MAX_EXPANDED_NODES = 100_000
"""Most values (scalars, lists, mappings) a document may hold once its aliases are expanded."""

MAX_SHOWN = 200
"""Most characters of a value that an error message echoes."""


def cap(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` cut to ``limit`` characters, ending in "…" when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shorten(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr`` of ``value`` for a message, cut to ``limit`` characters with "…"."""
    return cap(repr(value), limit)


class YamlFileError(InputError):
    """A YAML file that cannot be read as text; the message names the path."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_text_file(path: str | Path) -> str:
    """The UTF-8 text of ``path``.

    Raises:
        YamlFileError: Missing, unreadable (permissions, a folder), not a regular file (a FIFO, a
            device), larger than :data:`~prometar.files.MAX_TEXT_FILE_BYTES` or not UTF-8; names
            the path.
    """
    path = Path(path)
    try:
        raw = read_input_bytes(path, max_bytes=MAX_TEXT_FILE_BYTES)
    except InputFileError as error:
        raise YamlFileError(str(path), error.reason) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise YamlFileError(
            str(path),
            f"is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}); save it as UTF-8",
        ) from None


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 floats, no duplicate keys and bounded alias expansion."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {shorten(key)} (first at line {first.start_mark.line + 1}, "
                    f"again at line {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _expanded_size(root: yaml.Node) -> int:
    """Values in the document once every alias is expanded (each shared node counted per use)."""
    sizes: dict[int, int] = {}
    # Post-order over the node graph (aliases make it a DAG); each node's size is computed once.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if id(node) in sizes:
            continue
        children = (
            [c for pair in node.value for c in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
            if isinstance(node, yaml.SequenceNode)
            else []
        )
        if ready or not children:
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_EXPANDED_NODES + 1)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def parse_yaml(text: str) -> Any:
    """Parse YAML safely (see the module docstring), reading ``1e-5`` as a float.

    Raises:
        yaml.YAMLError: Invalid YAML, a duplicate key, nesting deeper than Python's recursion
            limit, or a document that aliases expand past :data:`MAX_EXPANDED_NODES` values;
            ``problem_mark`` says where.
    """
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:  # the composer recurses once per nesting level
            raise yaml.composer.ComposerError(
                None, None, "lists or mappings nested too deeply; a config is a few levels deep"
            ) from None
        if root is None:
            return None
        if _expanded_size(root) > MAX_EXPANDED_NODES:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"aliases expand the document past {MAX_EXPANDED_NODES:,} values "
                "(anchors '&' and aliases '*' repeat it); write the values out",
                root.start_mark,
            )
        return loader.construct_document(root)
    finally:
        loader.dispose()
