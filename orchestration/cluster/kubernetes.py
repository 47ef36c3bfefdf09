"""Kubernetes' own rules for the names and quantities a manifest carries, checked where they enter.

A value Kubernetes would refuse at ``kubectl apply`` (or accept as something else) is a
:class:`~orchestration.errors.ClusterError` naming the option when the manifest is written:
namespaces are DNS-1123 labels, object names (claims, secrets) DNS-1123 subdomains, memory a
positive resource quantity (``<number><suffix>``: ``32Gi``, ``500M``, ``1.5e9``), images one
reference without whitespace or control characters; node selectors and tolerations are label
keys (an optional DNS subdomain prefix and ``/``, then a name of at most 63 characters) and label
values.
"""

from __future__ import annotations

import re

from orchestration.errors import ClusterError

LABEL_MAX = 63
MAX_REPLICAS = 2**31 - 1
"""The most replicas a worker group may have: Kubernetes' ``int32`` field."""
SUBDOMAIN_MAX = 253
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUANTITY = re.compile(
    r"\+?(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?"
)
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
"""The taint effects a toleration may name."""
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "m": 1e-3}


def dns_label(flag: str, value: str) -> str:
    """``value`` if it is a DNS-1123 label (a namespace): at most 63 of ``a-z 0-9 -``, starting
    and ending alphanumeric; else a :class:`ClusterError` naming ``flag``."""
    if len(value) > LABEL_MAX or not _LABEL.fullmatch(value):
        raise ClusterError(
            f"{flag}: {value!r} is not a DNS-1123 label (at most {LABEL_MAX} lower-case letters, "
            "digits and '-', starting and ending with a letter or digit)"
        )
    return value


def dns_subdomain(flag: str, value: str) -> str:
    """``value`` if it is a DNS-1123 subdomain (a claim's or secret's name): at most 253
    characters, dot-separated labels; else a :class:`ClusterError` naming ``flag``."""
    if len(value) > SUBDOMAIN_MAX or not _SUBDOMAIN.fullmatch(value):
        raise ClusterError(
            f"{flag}: {value!r} is not a Kubernetes object name (a DNS-1123 subdomain: at most "
            f"{SUBDOMAIN_MAX} lower-case letters, digits, '-' and '.', starting and ending with a "
            "letter or digit)"
        )
    return value


def positive_quantity(flag: str, value: str) -> str:
    """``value`` if it is a positive Kubernetes quantity (``32Gi``, ``500M``, ``1.5e9``); else a
    :class:`ClusterError` naming ``flag``."""
    match = _QUANTITY.fullmatch(value)
    if match is None or float(match["number"]) <= 0:
        raise ClusterError(
            f"{flag}: {value!r} is not a positive Kubernetes quantity (a number and an optional "
            "suffix: Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E or an exponent, e.g. 32Gi)"
        )
    return value


def image_reference(flag: str, value: str) -> str:
    """``value`` if it looks like one image reference (``registry/name:tag@digest``: no
    whitespace, control or shell characters); else a :class:`ClusterError` naming ``flag``."""
    if not _IMAGE.fullmatch(value):
        raise ClusterError(f"{flag}: {value!r} is not an image reference (registry/name:tag)")
    return value


def quantity_gib(flag: str, value: str) -> float:
    """A positive Kubernetes quantity in GiB."""
    match = _QUANTITY.fullmatch(positive_quantity(flag, value))
    assert match is not None
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E") and suffix[1:]:
        factor = 10 ** int(suffix[1:])
    else:
        factor = _BINARY.get(suffix) or _DECIMAL.get(suffix, 1)
    return float(match["number"]) * factor / 2**30


def label_key(flag: str, value: str) -> str:
    """``value`` if it is a label key (``[prefix/]name``: a DNS subdomain prefix, a name of at most
    63 letters, digits, ``-``, ``_``, ``.``); else a :class:`ClusterError` naming ``flag``."""
    prefix, _, name = value.rpartition("/")
    if (prefix and (len(prefix) > SUBDOMAIN_MAX or not _SUBDOMAIN.fullmatch(prefix))) or not (
        len(name) <= LABEL_MAX and _NAME.fullmatch(name)
    ):
        raise ClusterError(
            f"{flag}: {value!r} is not a label key ([prefix/]name: a DNS subdomain prefix, a name of "
            f"at most {LABEL_MAX} letters, digits, '-', '_' and '.')"
        )
    return value


def label_value(flag: str, value: str) -> str:
    """``value`` if it is a label value (empty, or at most 63 letters, digits, ``-``, ``_``, ``.``,
    starting and ending alphanumeric); else a :class:`ClusterError` naming ``flag``."""
    if value and not (len(value) <= LABEL_MAX and _NAME.fullmatch(value)):
        raise ClusterError(
            f"{flag}: {value!r} is not a label value (at most {LABEL_MAX} letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit)"
        )
    return value


def node_selector(flag: str, text: str) -> tuple[str, str]:
    """``KEY=VALUE`` → the node selector's key and value, each checked."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ClusterError(f"{flag}: expected KEY=VALUE, got {text!r}")
    return label_key(flag, key), label_value(flag, value)


def toleration(flag: str, text: str) -> dict[str, str]:
    """``KEY[=VALUE]:EFFECT`` (``Equal`` with a value, else ``Exists``) → a pod toleration."""
    spec, sep, effect = text.rpartition(":")
    if not sep or effect not in EFFECTS:
        raise ClusterError(
            f"{flag}: expected KEY[=VALUE]:EFFECT with EFFECT one of {', '.join(EFFECTS)}, got {text!r}"
        )
    key, has_value, value = spec.partition("=")
    label_key(flag, key)
    if has_value:
        return {"key": key, "operator": "Equal", "value": label_value(flag, value), "effect": effect}
    return {"key": key, "operator": "Exists", "effect": effect}
