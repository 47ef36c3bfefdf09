"""Sweep files: the spec (parse and validate), its planning into trials, and trial identity.

``spec`` (the schema → :class:`~orchestration.sweeps.spec.SweepSpec`), ``planning`` (the spec
expanded once into :class:`~orchestration.sweeps.planning.Trial` s and search groups: a
:class:`~orchestration.sweeps.planning.SweepPlan`), ``keys`` (trial and search-group keys).
Imports the core's config, protocols, methods and catalog — never torch, Ray or MLflow.
"""
