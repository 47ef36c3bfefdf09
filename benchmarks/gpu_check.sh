#!/usr/bin/env bash
# GPU check: ProMetaR steps/s on ViT-B/16 with 1, 2 and 4 trials packed on one GPU (separate
# processes sharing it), and the peak memory per trial (torch.cuda.max_memory_allocated), so that
# the packing fractions in sweeps/ come from measurements. One command, at most 8 minutes:
#
#   benchmarks/gpu_check.sh                                        # on a machine with a GPU
#   benchmarks/gpu_check.sh --device cpu --steps 1 --backbone toy  # smoke mode, no GPU needed
#
# Without a CUDA device (and no --device cpu) it stops at once with exit status 2.
# Other options: --packing 1 2 4, --steps 30, --warmup 3 (benchmarks/gpu_packing.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec timeout --signal=INT --kill-after=20 480 "$PYTHON" benchmarks/gpu_packing.py "$@"
