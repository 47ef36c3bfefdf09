"""Kubernetes' own rules for the names and quantities a manifest carries, checked where they enter.

A value Kubernetes would refuse at ``kubectl apply`` (or accept as something else) is a
:class:`~orchestration.errors.ClusterError` naming the option when the manifest is written:
namespaces are DNS-1123 labels, object names (claims, secrets) DNS-1123 subdomains, memory a
positive resource quantity (``<number><suffix>``: ``32Gi``, ``500M``, ``1.5e9``), images one
reference without whitespace or control characters.
"""

from __future__ import annotations

import re

from orchestration.errors import ClusterError

LABEL_MAX = 63
SUBDOMAIN_MAX = 253
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUANTITY = re.compile(
    r"\+?(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?"
)
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")


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
