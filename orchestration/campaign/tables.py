"""The table kinds a campaign may name, each with the protocol whose runs fill it.

The kinds are the results registry's (``orchestration.results.kinds.RESULT_KINDS``, plus the
ablation table that base-to-new runs give when several configurations share a cell), so a campaign
can only name a table the results package can build.
"""

from __future__ import annotations

from orchestration.results import ablation, base2new
from orchestration.results.kinds import RESULT_KINDS
from prometar import protocols

TABLE_KINDS: dict[str, str] = {
    **{kind: protocols.for_table(kind).name for kind in RESULT_KINDS},
    ablation.KIND: protocols.for_table(base2new.KIND).name,
}
"""Table kind → the protocol (registry name) whose runs it shows."""


def protocol_of(kind: str) -> protocols.Protocol:
    """The protocol whose runs a table kind shows."""
    return protocols.get_protocol(TABLE_KINDS[kind])
