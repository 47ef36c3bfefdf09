"""The project's YAML: safe loading only, with YAML 1.2 floats (``1e-5`` is a float, not a string).

Every YAML the project reads — run configs and presets, ``--set`` values, sweep files — goes
through :func:`parse_yaml`: a ``yaml.SafeLoader`` (no object construction) that also reads
``1e-5``-style numbers as floats, where PyYAML's YAML 1.1 rules would make them strings.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["parse_yaml"]


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-5``-style numbers as floats."""


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


def parse_yaml(text: str) -> Any:
    """Parse YAML safely (a ``yaml.SafeLoader``: no object construction), reading ``1e-5`` as a float.

    Every YAML the project reads (run configs, overrides, sweep files) goes through this one parser.

    Raises:
        yaml.YAMLError: The text is not valid YAML.
    """
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
