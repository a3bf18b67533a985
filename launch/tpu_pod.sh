#!/usr/bin/env bash
# Run rewire on a Cloud TPU VM pod slice: create the slice, copy and install rewire on every worker,
# then start the same command on all workers (one JAX process per host; jax.distributed joins them).
#
#   launch/tpu_pod.sh --name rewire-v4-64 --zone us-central2-b --type v4-64 -- \
#       --config=configs/pretrain_forget.py:base --workdir=/mnt/shared/runs/forget_base \
#       --config.data.source=hf:cc100:en:train
#
# Options:
#   --name NAME        TPU VM name (required)
#   --zone ZONE        GCP zone (required)
#   --type TYPE        accelerator type, e.g. v4-64, v5p-128, v5litepod-64 (default v4-8)
#   --version VERSION  TPU VM software version (default tpu-ubuntu2204-base)
#   --project PROJECT  GCP project (default: gcloud's configured project)
#   --no-create        reuse an existing slice
#   --dry-run          print the gcloud commands instead of running them
# Everything after `--` goes to `python -m rewire.main`.
#
# The workdir must be a filesystem every worker sees (e.g. a Filestore/NFS mount): orbax writes one
# checkpoint from all hosts together, and process 0 writes the metrics.
set -euo pipefail

name="" zone="" type="v4-8" version="tpu-ubuntu2204-base" project="" create=1 dry=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --type) type="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --no-create) create=0; shift ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    *) echo "tpu_pod.sh: unknown option $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
[[ -n "$name" && -n "$zone" ]] || { echo "tpu_pod.sh: --name and --zone are required" >&2; exit 2; }
[[ $# -gt 0 ]] || { echo "tpu_pod.sh: give the rewire arguments after --, e.g. -- --config=configs/pretrain_forget.py:base" >&2; exit 2; }

src="$(cd "$(dirname "$0")/.." && pwd)"
common=(--zone="$zone")
[[ -n "$project" ]] && common+=(--project="$project")
rewire_args=$(printf '%q ' "$@")

run() {
  if [[ $dry -eq 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

if [[ $create -eq 1 ]]; then
  run gcloud compute tpus tpu-vm create "$name" "${common[@]}" --accelerator-type="$type" --version="$version"
fi
archive="/tmp/rewire-src.tar.gz"
run tar -czf "$archive" -C "$src" --exclude=.git --exclude=runs --exclude='.venv*' .
run gcloud compute tpus tpu-vm scp "$archive" "$name":/tmp/rewire-src.tar.gz "${common[@]}" --worker=all
run gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker=all --command \
  "mkdir -p ~/rewire && tar -xzf /tmp/rewire-src.tar.gz -C ~/rewire && python3 -m venv ~/rewire-venv && . ~/rewire-venv/bin/activate && pip install -q -e \"\$HOME/rewire[tpu]\""
run gcloud compute tpus tpu-vm ssh "$name" "${common[@]}" --worker=all --command \
  "cd ~/rewire && . ~/rewire-venv/bin/activate && python -m rewire.main --distributed=on $rewire_args"
