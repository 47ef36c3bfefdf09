"""orchestration: the application around the ``prometar`` core.

Sweep files, trial planning and identity, the Ray Tune trainable, the MLflow ledger, cluster
submission, tables and plots, and the ``prometar-sweep`` command line.
"""
