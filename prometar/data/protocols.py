"""Transitional alias of :mod:`prometar.data.splits` for the toy world (``prometar.toyclip``).

The toy world is moving out of the core in another branch; its import of ``base_new_split`` from
here is updated at that merge, and this module is deleted then. Nothing else imports it.
"""

from prometar.data.splits import base_new_split

__all__ = ["base_new_split"]
