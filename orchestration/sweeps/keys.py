"""Trial identity: the short hashes that name a trial and a search group.

A trial key hashes the canonical JSON of everything that changes the scientific result — the
resolved config's ``scientific_dict()``, the protocol's tag and the code's result revision
(``prometar.RESULT_REVISION``) — and nothing else (resources, paths, tracking URI, concurrency).
A local checkpoint enters by its content, not its path. A search group's key hashes its base
trial's key and the search (space, metric, mode).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometar import RESULT_REVISION
from prometar.errors import BackboneError

KEY_LENGTH = 12
"""Hex digits of a trial or search-group key."""


def trial_key(scientific: Mapping[str, Any], protocol: str, *, revision: int | None = None) -> str:
    """The short hash identifying a trial: canonical JSON of the scientific config, protocol and
    result revision.

    A local checkpoint (``backbone.pretrained`` naming a file) enters by its content, not its
    path: the same weights give the same key wherever the checkout or the data live (a file that
    cannot be read is a :class:`~prometar.errors.BackboneError` naming it). ``revision``
    defaults to this code's ``prometar.RESULT_REVISION``: runs recorded by code of another result
    revision have other keys, so a launch does not count them as done. Revision 1 (the code before
    the revision existed) leaves it out of the JSON, which gives exactly the keys that code made.
    """
    revision = RESULT_REVISION if revision is None else revision
    identity: dict[str, Any] = {"config": _with_checkpoint_content(scientific), "protocol": protocol}
    if revision != 1:
        identity["result_revision"] = revision
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]


def _with_checkpoint_content(scientific: Mapping[str, Any]) -> Mapping[str, Any]:
    backbone = scientific.get("backbone")
    pretrained = backbone.get("pretrained") if isinstance(backbone, Mapping) else None
    if not isinstance(pretrained, str):
        return scientific
    try:
        if not Path(pretrained).is_file():
            return scientific
        stat = Path(pretrained).stat()
        digest = _file_sha256(str(Path(pretrained).resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError as error:  # no read permission, a folder on the way that may not be searched
        raise BackboneError(f"checkpoint {pretrained}: cannot be read ({error.strerror or error})") from None
    return {**scientific, "backbone": {**backbone, "pretrained": f"sha256:{digest}"}}


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file's bytes; cached per (path, size, mtime) so a sweep hashes each once."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def search_group_key(
    base_key: str, space: Mapping[str, tuple[str, list[Any]]], metric: str, mode: str
) -> str:
    """The key of a search group: its base trial's key and the search it runs."""
    ordered = {k: [kind, args] for k, (kind, args) in sorted(space.items())}
    ident = {"base": base_key, "space": ordered, "metric": metric, "mode": mode}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:KEY_LENGTH]
