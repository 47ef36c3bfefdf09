"""prometar: ProMetaR (Prompt Learning via Meta-Regularization, CVPR 2024) on CLIP.

The training core. It depends on torch, open_clip, numpy, PIL and yaml only; it never imports
ray, mlflow, click or the ``orchestration`` application layer, never prints, and logs through
``logging.getLogger(__name__)``.
"""

__version__ = "0.1.0"

RESULT_REVISION = 3
"""Revision of the numbers this code produces; part of every trial key and checkpoint fingerprint.

Bump it on every change that alters numbers under unchanged hyper-parameters (a fixed schedule,
another few-shot draw, a different loss or evaluation), so that results recorded by earlier code
are not mistaken for this code's. Revision 1 is everything before the constant existed.

History: 2 — the cosine restarts after the warm-up (Dassl ``WARMUP_RECOUNT``); labels with
exactly ``K`` images are drawn in few-shot sampling (Dassl ``len(items) >= K``). 3 — without a
gate network (``ivlp_reg``, ``meta.gate_mode: off``) the regularisers act at ProMetaR's gate
strength (``regularizer.ungated_strength: prometar``).
"""
