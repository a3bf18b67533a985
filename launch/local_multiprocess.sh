#!/usr/bin/env bash
# Run rewire as a job of N processes on this machine: a pod's multi-host behaviour on a laptop or CI box.
#
#   launch/local_multiprocess.sh 2 -- --config=configs/pretrain_forget.py --workdir=runs/mh
#
# Each process joins one JAX job (coordinator 127.0.0.1 on a free port, CPU collectives through gloo) with
# its own fake CPU devices, so the global mesh has N x DEVICES devices; each reads only its share of every
# batch and writes its share of every checkpoint, and process 0 alone prints the progress line and writes
# metrics. Output lines are prefixed with the process id. SIGTERM or Ctrl-C is forwarded to every process
# as SIGTERM, so they all save a checkpoint at the same step and exit 143. The script owns its job: when any
# process exits with a non-zero status, the others get SIGTERM, then SIGKILL after the grace period, and
# the script exits with that first failure's status (0 when every process finished).
#
# Options:
#   --devices K   fake CPU devices per process (default 2)
#   --port P      the coordinator's port (default: a free one); a port in use is refused
#   --grace S     seconds between SIGTERM and SIGKILL for the processes of a failed job (default 30)
#   --venv DIR    activate this virtual environment first
#   --dry-run     print the commands and environment instead of running them
set -euo pipefail

fail() { echo "local_multiprocess.sh: $*" >&2; exit 2; }
devices=2 port="" venv="" dry=0 grace=30
[[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]] || fail "usage: local_multiprocess.sh N [options] -- ARGS..."
n="$1"; shift
[[ "$n" -ge 1 ]] || fail "N must be at least 1"
value() {  # value OPTION NEXT: NEXT must be a value, not another option or nothing
  [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || fail "$1 needs a value"
}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --devices) value "$@"; devices="$2"; shift 2
               [[ "$devices" =~ ^[0-9]+$ && "$devices" -ge 1 ]] || fail "--devices must be a positive integer, got '$devices'" ;;
    --port) value "$@"; port="$2"; shift 2
            [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]] || fail "--port must be a port number (1-65535), got '$port'" ;;
    --grace) value "$@"; grace="$2"; shift 2
             [[ "$grace" =~ ^[0-9]+$ ]] || fail "--grace must be a whole number of seconds, got '$grace'" ;;
    --venv) value "$@"; venv="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    *) fail "unknown option $1 (see the header of this script)" ;;
  esac
done
[[ $# -gt 0 ]] || fail "give the rewire arguments after --"

cd "$(dirname "$0")/.."
[[ -n "$venv" && $dry -eq 0 ]] && . "$venv/bin/activate"
py="${PYTHON:-python}"
if [[ -z "$port" ]]; then
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
elif [[ $dry -eq 0 ]] && ! "$py" -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then
  fail "port $port is in use; give another --port, or none for a free one"
fi
export JAX_PLATFORMS=cpu JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$n"
export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$devices"  # the last count wins
cmd=("$py" -m rewire.main --distributed=on "$@")

if [[ $dry -eq 1 ]]; then
  for ((i = 0; i < n; i++)); do
    echo "JAX_PLATFORMS=cpu JAX_COORDINATOR_ADDRESS=$JAX_COORDINATOR_ADDRESS JAX_NUM_PROCESSES=$n JAX_PROCESS_ID=$i XLA_FLAGS='$XLA_FLAGS' $(printf '%q ' "${cmd[@]}")"
  done
  exit 0
fi

pids=()
stop() {  # stop SIGNAL: every process still running
  for pid in "${pids[@]}"; do kill -"$1" "$pid" 2>/dev/null || true; done
}
forward() {
  trap '' INT TERM
  echo "local_multiprocess.sh: stopping ${#pids[@]} processes (SIGTERM: each saves a checkpoint first)" >&2
  stop TERM
}
trap forward INT TERM
for ((i = 0; i < n; i++)); do
  JAX_PROCESS_ID=$i "${cmd[@]}" > >(sed -u "s/^/[p$i] /") 2> >(sed -u "s/^/[p$i] /" >&2) &
  pids+=($!)
done

status=0 killer="" running=("${pids[@]}")
while [[ ${#running[@]} -gt 0 ]]; do
  done_pid=""
  wait -n -p done_pid "${running[@]}" && code=0 || code=$?
  [[ -n "$done_pid" ]] || continue  # `wait` returned because this script was signalled
  left=()
  for pid in "${running[@]}"; do if [[ "$pid" != "$done_pid" ]]; then left+=("$pid"); fi; done
  running=("${left[@]}")
  if [[ $code -ne 0 && $status -eq 0 ]]; then
    status=$code
    if [[ ${#running[@]} -gt 0 ]]; then  # the job cannot go on without it: stop the others, then make sure
      who=0
      for ((i = 0; i < n; i++)); do if [[ "${pids[$i]}" == "$done_pid" ]]; then who=$i; fi; done
      echo "local_multiprocess.sh: process $who exited with status $code; stopping the other ${#running[@]}" >&2
      stop TERM
      ( sleep "$grace"; stop KILL ) & killer=$!
    fi
  fi
done
if [[ -n "$killer" ]]; then kill "$killer" 2>/dev/null || true; fi
wait  # the output prefixers
exit "$status"
