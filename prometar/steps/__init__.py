"""Training steps: one iteration of each training scheme (docs/algorithm.md §4), one class per scheme.

- :class:`~prometar.steps.plain.PlainStep`: cross-entropy only (CoOp, VPT, IVLP).
- :class:`~prometar.steps.regularized.RegularizedStep`: CE + weighted R_text + weighted R_image,
  one backward (IVLP + regularisers).
- :class:`~prometar.steps.prometar.ProMetaRStep`: the gate-modulated phase A and the bi-level
  meta step on a virtual task (phase B).

All share :class:`~prometar.steps.base.TrainingStep`: ``step(images, labels, task)`` is a
deterministic function of (prompts, gate, optimiser states, batch, task) and returns the metrics
named in ``prometar.metrics.STEP_METRICS``; ``step(images, labels, generator=...)`` samples the
virtual task first (only the ProMetaR step has one). Import each class from its module.
"""
