"""The events a run reports to its callback and writes to ``metrics.jsonl``: their names and keys.

After each epoch's checkpoint: ``{EVENT: EPOCH, EPOCH_KEY: k, CHECKPOINT: path, ...metrics}``;
at the end: ``{EVENT: FINAL, ...final metrics}`` (``prometar.run``, ``prometar.trainer``).
"""

EVENT = "event"
"""The key naming the event."""
EPOCH = "epoch"
"""An epoch ended and its checkpoint is written."""
FINAL = "final"
"""The run ended; the final metrics (``prometar.protocols``) follow."""
EPOCH_KEY = "epoch"
"""Completed epochs (from 1), in an epoch event."""
CHECKPOINT = "checkpoint"
"""The epoch's checkpoint folder, in an epoch event (not written to ``metrics.jsonl``)."""
