#!/usr/bin/env bash
# Run rewire as a job of N processes on this machine: a pod's multi-host behaviour on a laptop or CI box.
#
#   launch/local_multiprocess.sh 2 -- --config=configs/pretrain_forget.py --workdir=runs/mh
#
# Each process joins one JAX job (coordinator 127.0.0.1 on a free port, CPU collectives through gloo) with
# its own fake CPU devices, so the global mesh has N x DEVICES devices; each reads only its share of every
# batch and writes its share of every checkpoint, and process 0 alone prints the progress line and writes
# metrics. Output lines are prefixed with the process id. SIGTERM or Ctrl-C is forwarded to every process
# as SIGTERM, so they all save a checkpoint at the same step and exit 143; the script exits with the job's
# status: 0 when every process finished, else the status of the lowest-numbered process that did not.
#
# Options:
#   --devices K   fake CPU devices per process (default 2)
#   --port P      the coordinator's port (default: a free one)
#   --venv DIR    activate this virtual environment first
#   --dry-run     print the commands and environment instead of running them
set -euo pipefail

devices=2 port="" venv="" dry=0
[[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]] || { echo "local_multiprocess.sh: usage: local_multiprocess.sh N [options] -- ARGS..." >&2; exit 2; }
n="$1"; shift
[[ "$n" -ge 1 ]] || { echo "local_multiprocess.sh: N must be at least 1" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --devices) devices="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --venv) venv="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    *) echo "local_multiprocess.sh: unknown option $1 (see the header of this script)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "local_multiprocess.sh: give the rewire arguments after --" >&2; exit 2; }

cd "$(dirname "$0")/.."
[[ -n "$venv" && $dry -eq 0 ]] && . "$venv/bin/activate"
py="${PYTHON:-python}"
if [[ -z "$port" ]]; then
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
export JAX_PLATFORMS=cpu JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$n"
export XLA_FLAGS="--xla_force_host_platform_device_count=$devices"
cmd=("$py" -m rewire.main --distributed=on "$@")

if [[ $dry -eq 1 ]]; then
  for ((i = 0; i < n; i++)); do
    echo "JAX_PLATFORMS=cpu JAX_COORDINATOR_ADDRESS=$JAX_COORDINATOR_ADDRESS JAX_NUM_PROCESSES=$n JAX_PROCESS_ID=$i XLA_FLAGS='$XLA_FLAGS' $(printf '%q ' "${cmd[@]}")"
  done
  exit 0
fi

pids=()
stop() {
  trap '' INT TERM
  echo "local_multiprocess.sh: stopping ${#pids[@]} processes (SIGTERM: each saves a checkpoint first)" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap stop INT TERM
for ((i = 0; i < n; i++)); do
  JAX_PROCESS_ID=$i "${cmd[@]}" > >(sed -u "s/^/[p$i] /") 2> >(sed -u "s/^/[p$i] /" >&2) &
  pids+=($!)
done

status=0
for pid in "${pids[@]}"; do
  code=0
  while true; do
    wait "$pid" && code=0 || code=$?
    # `wait` also returns (with 128 + signal) when this script is signalled; wait again for the process.
    kill -0 "$pid" 2>/dev/null || break
  done
  [[ $status -eq 0 && $code -ne 0 ]] && status=$code
done
wait  # the output prefixers
exit "$status"
