"""prometar: ProMetaR (Prompt Learning via Meta-Regularization, CVPR 2024) on CLIP.

The training core. It depends on torch, open_clip, numpy, PIL and yaml only; it never imports
ray, mlflow, click or the ``orchestration`` application layer, never prints, and logs through
``logging.getLogger(__name__)``.
"""

__version__ = "0.1.0"
