"""Process-wide torch backend settings for the training device (GPU throughput, docs/algorithm.md §5).

On CUDA the CLIP forward passes run under bf16 autocast (``backbone.precision``); what stays in
float32 outside autocast (the prompt updates, the gate network, normalisations of fp32 features)
may use TF32 tensor cores for matrix products and convolutions. ``configure_backends`` sets those
flags once, where a run sets up its device (``prometar.run.run``); on CPU it changes nothing.

TF32 is not exact: float32 products keep a 10-bit mantissa in the multiply. That is a named
switch (``tf32=False`` keeps full IEEE float32), not part of the exact fast path; CPU runs, the
parity tests and every figure in ``docs/benchmarks.md`` measured on CPU are unaffected.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

__all__ = ["configure_backends"]


def configure_backends(device: torch.device | str, *, tf32: bool = True) -> dict[str, str]:
    """Set the float32 precision of CUDA matrix products and cuDNN convolutions.

    Args:
        device: The run's device; only ``cuda`` devices change anything.
        tf32: True lets float32 matmuls and convolutions use TF32; False keeps IEEE float32.

    Returns:
        The flags now in effect (``{"matmul": ..., "conv": ...}``); empty on CPU.
    """
    if torch.device(device).type != "cuda":
        return {}
    # torch.set_float32_matmul_precision is the one API that keeps torch's per-backend flags
    # consistent (mixing it with the per-backend ``fp32_precision`` attributes makes
    # ``torch.get_float32_matmul_precision`` raise).
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    flags = {
        "matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
        "conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee",
    }
    logger.info("CUDA float32 precision: matmul %s, convolutions %s", flags["matmul"], flags["conv"])
    return flags
