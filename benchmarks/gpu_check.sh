#!/usr/bin/env bash
# The accelerator check on one GPU, in under 8 minutes: rewire's and HF's train steps at the `base` shapes
# in bf16 (tokens/s, MFU), forgetting resets at every K, cuDNN fused attention; figures in one JSON file.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR] [gpu_check.py options]     # default OUT_DIR: runs/gpu_check
#
# Needs the project installed with the GPU extra (pip install -e ".[cuda,hf]"). `--batch N` lowers the
# batch if 32 x 512 does not fit; `--tiny` checks the script itself on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/gpu_check}"
[[ $# -gt 0 ]] && shift
mkdir -p "$out"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}" PYTHONUNBUFFERED=1
timeout 470 "${PYTHON:-python}" benchmarks/gpu_check.py --out "$out/gpu_check.json" "$@"
