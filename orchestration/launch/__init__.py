"""Launching a sweep on Ray Tune: the runner and its parts.

``runner`` (:func:`~orchestration.launch.runner.launch`: plan → dedupe → fan-out → outcome),
``preflight`` (checks before anything is written), ``lock`` (one launch per sweep and output),
``ray_session`` (local Ray on 127.0.0.1 or a cluster joined), ``tuner`` (one Tune run),
``search`` (Optuna per search group, the best written), ``trial_table`` (Tune config → trial),
``trainable`` (the Tune function trainable, in the workers), ``progress`` (the progress line),
``status`` (done / failed / running / to do), ``tables`` (the tables a launch writes).
"""
