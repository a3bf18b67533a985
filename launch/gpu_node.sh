#!/usr/bin/env bash
# Run rewire on one GPU node: a single process drives every local GPU (the mesh spans them all).
#
#   launch/gpu_node.sh -- --config=configs/pretrain_forget.py:base --workdir=runs/forget_base \
#       --config.model.dtype=bfloat16
#
# Options:
#   --gpus LIST   restrict to these GPUs (CUDA_VISIBLE_DEVICES), e.g. 0,1,2,3
#   --venv DIR    activate this virtual environment first
#   --dry-run     print the command and environment instead of running it
# Install once with: pip install -e ".[cuda]"
set -euo pipefail

gpus="" venv="" dry=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpus) gpus="$2"; shift 2 ;;
    --venv) venv="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    *) echo "gpu_node.sh: unknown option $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "gpu_node.sh: give the rewire arguments after --" >&2; exit 2; }

cd "$(dirname "$0")/.."
[[ -n "$venv" && $dry -eq 0 ]] && . "$venv/bin/activate"
[[ -n "$gpus" ]] && export CUDA_VISIBLE_DEVICES="$gpus"
# Let XLA overlap collectives with compute, and keep JAX from grabbing memory it does not need.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"

cmd=(python -m rewire.main --distributed=off "$@")
if [[ $dry -eq 1 ]]; then
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-all} XLA_FLAGS='$XLA_FLAGS'"
  printf '%q ' "${cmd[@]}"; echo
else
  exec "${cmd[@]}"
fi
