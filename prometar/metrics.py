"""The names of the training metrics a run reports: each step's, and each epoch's.

A training step (``prometar.steps``) returns :data:`STEP_METRICS`, named, finite floats; the
trainer averages them over an epoch and adds :data:`EPOCH_METRICS`. Final metrics are the protocol
registry's (``prometar.protocols``). Imports nothing: the plots read these names in the driver.

- ``loss``: the phase-A objective ``ce + text_reg + image_reg`` (``ce`` alone for ``plain``).
- ``text_reg``, ``image_reg``: already weighted; 0.0 in the ``plain`` scheme (not computed).
- ``query``: phase B's meta loss (mixed query CE × meta-loss scale); 0.0 when phase B did not run.
- ``meta_skipped``: 1.0 when the ``prometar`` scheme skipped phase B (single-label batch), else 0.0.
- ``gate_mean/<tower>``, ``gate_std/<tower>``: the effective multiplier of the regulariser
  gradient in phase A over all of the tower's prompt values (std with Bessel's correction):
  the learned gate; 0.5 / 0 for a constant gate; 1 / 0 when the gate is off and in the
  ``regularized`` scheme; 0 / 0 in the ``plain`` scheme or for a tower without prompts.
- ``grad_cos/<tower>``: cosine between the tower's CE gradient and its regulariser gradient
  (all the tower's prompt tensors flattened together); only the ``prometar`` scheme takes the
  gradients separately, the other schemes report 0.0.
- ``train_acc``: phase-A batch accuracy in percent.
- per epoch: ``lr`` and ``gate_lr`` (the epoch's learning rates), ``steps`` (iterations run).
- measured per epoch (:data:`MEASUREMENTS`, in the epoch event only): ``epoch_seconds`` (wall-clock
  seconds of the epoch's training steps) and ``images_per_second`` (training images over those
  seconds). Measurements of the machine, never an input to a result: they are not in the run's
  history, its checkpoints or ``metrics.jsonl``.
"""

TOWERS: tuple[str, ...] = ("text", "vision")
"""The prompted towers, in the order their metrics are reported."""

LOSS = "loss"
CE = "ce"
TEXT_REG = "text_reg"
IMAGE_REG = "image_reg"
QUERY = "query"
META_SKIPPED = "meta_skipped"
TRAIN_ACC = "train_acc"
GATE_MEAN: dict[str, str] = {tower: f"gate_mean/{tower}" for tower in TOWERS}
GATE_STD: dict[str, str] = {tower: f"gate_std/{tower}" for tower in TOWERS}
GRAD_COS: dict[str, str] = {tower: f"grad_cos/{tower}" for tower in TOWERS}

STEP_METRICS: tuple[str, ...] = (
    LOSS,
    CE,
    TEXT_REG,
    IMAGE_REG,
    QUERY,
    META_SKIPPED,
    GATE_MEAN["text"],
    GATE_STD["text"],
    GATE_MEAN["vision"],
    GATE_STD["vision"],
    GRAD_COS["text"],
    GRAD_COS["vision"],
    TRAIN_ACC,
)
"""Keys of every step's metrics, in every scheme and mode, in this order."""

GATE_METRICS: tuple[str, ...] = (*GATE_MEAN.values(), *GATE_STD.values())
"""The gate's statistics per tower (means, then standard deviations)."""
ALIGNMENT_METRICS: tuple[str, ...] = tuple(GRAD_COS.values())
"""The cosine between the CE and the regulariser gradients, per tower."""

LR = "lr"
GATE_LR = "gate_lr"
STEPS = "steps"
EPOCH_METRICS: tuple[str, ...] = (LR, GATE_LR, STEPS)
"""What the trainer adds to an epoch's mean step metrics (``gate_lr`` only with a gate)."""

EPOCH_SECONDS = "epoch_seconds"
IMAGES_PER_SECOND = "images_per_second"
MEASUREMENTS: tuple[str, ...] = (EPOCH_SECONDS, IMAGES_PER_SECOND)
"""Wall-clock measurements of an epoch, reported with its event and logged to the ledger only."""
