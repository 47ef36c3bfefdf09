"""Campaigns: the paper's results as one file of named sweeps, launched, costed and judged.

``spec`` (the campaign file → a validated :class:`~orchestration.campaign.spec.Campaign`), ``plan``
(its sweeps planned once, done / to do, the cost estimate), ``calibration`` (measured epoch
times), ``verdicts`` (reproduced / not reproduced / not comparable, pure functions), ``cells``
(the runs of a table → the cells judged), ``report`` (the reproduction report), ``runner`` (the
``reproduce`` verb: launch in dependency order, then the report). Imports ``sweeps``, ``ledger``,
``results`` and ``launch``; nothing imports it but the CLI.
"""
