#!/usr/bin/env bash
# Behaviour parity of two trees: the same tiny runs (pretrain, pretrain with probe_every, adapt, finetune,
# probe, assemble, evaluate; and every stage again for the Llama family) in each, compared checkpoint leaf
# by leaf (bit for bit) and record by record (metrics, summaries, configs, probe and results files, with
# timings and paths dropped).
#
#   git worktree add --detach /tmp/before HEAD~1
#   bash tools/parity/check.sh /tmp/before .          # about 8 minutes per tree on 2 CPU cores
#
# Exit status 0: identical; 1: differences (listed); other: a run or the dump failed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
before="$(cd "$1" && pwd)" after="$(cd "$2" && pwd)"
out="$(mktemp -d -t rewire-parity-XXXX)"
export PY="${PY:-python}" JAX_PLATFORMS=cpu
for side in before after; do
  tree="${!side}"
  "$here/run_all.sh" "$tree" "$out/$side"
  "$PY" "$here/dump.py" "$out/$side" "$out/$side.dump"
done
"$PY" "$here/compare.py" "$out/before.dump" "$out/after.dump"
