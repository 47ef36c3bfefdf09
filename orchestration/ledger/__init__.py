"""MLflow as the ledger: its vocabulary, the store, the driver-side writer, and the runs reader.

``vocabulary`` (every tag, param, status and Tune result key, defined once), ``store``
(:class:`~orchestration.ledger.store.TrialLedger`: one sweep's records, live launches, the one
paginated reader), ``callback`` (the Tune callback, the single writer of trial runs), ``runs``
(child runs or a runs CSV → the tidy :class:`~orchestration.ledger.runs.RunsTable`).
"""
