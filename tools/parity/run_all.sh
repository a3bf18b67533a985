#!/usr/bin/env bash
# Usage: run_all.sh TREE OUTDIR  -- tiny, deterministic runs of every stage of `rewire` from TREE into OUTDIR.
set -euo pipefail
TREE=$(cd "$1" && pwd -P)
mkdir -p "$2"
OUT=$(cd "$2" && pwd -P)
PY=${PY:-python}   # REWIRE_MAIN=module overrides the CLI module (default rewire.main)
cd "$TREE"
export PYTHONPATH="$TREE"
export XLA_FLAGS=--xla_force_host_platform_device_count=4
export JAX_PLATFORMS=cpu
export HF_HUB_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
export PYTHONDONTWRITEBYTECODE=1  # leave TREE untouched
# A compilation cache of this OUTDIR only (fresh for every run_all.sh): later runs with the same shapes
# (pretrain_probe_every after pretrain) load the executables instead of recompiling them.
export JAX_COMPILATION_CACHE_DIR="$OUT/.jax_cache"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0

# rewire must come from TREE (an editable install may point at another checkout).
"$PY" - "$TREE" <<'PYEOF'
import os, sys
import rewire
tree = os.path.realpath(sys.argv[1])
f = os.path.realpath(rewire.__file__)
print(f"rewire.__file__ = {f}")
if not f.startswith(tree + os.sep):
  sys.exit(f"run_all.sh: rewire is imported from {f}, not from {tree}")
PYEOF

T0=$(date +%s.%N)
step() {  # step NAME CONFIG FLAGS...   (one run; its output goes to OUTDIR/NAME.log)
  local name=$1 cfg=$2; shift 2
  local t=$(date +%s.%N)
  if [ -e "$OUT/$name" ]; then echo "run_all.sh: $OUT/$name exists; use a fresh OUTDIR" >&2; return 1; fi
  "$PY" -m "${REWIRE_MAIN:-rewire.main}" --config="$cfg" --workdir="$OUT/$name" "$@" > "$OUT/$name.log" 2>&1 \
    || { echo "run_all.sh: $name failed:"; tail -30 "$OUT/$name.log"; return 1; }
  printf '=== %-22s %6.1f s  %s\n' "$name" "$(echo "$(date +%s.%N) - $t" | bc)" \
    "$(tr '\r' '\n' < "$OUT/$name.log" | grep -v '^ *$' | tail -1 | cut -c1-90)"
}
PRETRAIN=(
  --config.total_steps=40 --config.forget_every=10 --config.batch_size=16
  --config.log_every=5 --config.eval_every=20 --config.checkpoint_every=20
  --config.model.hidden_size=32 --config.model.num_layers=1 --config.model.num_heads=2
  --config.model.intermediate_size=64
  --config.data.seq_len=32 --config.data.vocab_size=400 --config.data.max_valid_sequences=32
  --config.data.max_documents=400
  --config.optim.lr=3e-3 --config.optim.warmup_steps=4
  --config.mesh.fsdp=2
)

step pretrain configs/pretrain_forget.py "${PRETRAIN[@]}"

step pretrain_probe_every configs/pretrain_forget.py "${PRETRAIN[@]}" \
  --config.probe_every=20 \
  "--config.probe.token_budgets=(10000,)" --config.probe.total_steps=10 --config.probe.eval_every=5 \
  --config.probe.batch_size=8 \
  --config.probe.data.seq_len=32 --config.probe.data.vocab_size=300 --config.probe.data.max_valid_sequences=16 \
  --config.probe.data.max_documents=200

step probe configs/probe.py \
  --config.init_from="$OUT/pretrain" --config.languages=en=bundled:bible_en,es=bundled:bible_es \
  "--config.token_budgets=(10000,)" --config.seeds=2 --config.total_steps=20 --config.eval_every=10 \
  --config.batch_size=8 \
  --config.data.seq_len=32 --config.data.vocab_size=300 --config.data.max_valid_sequences=16 \
  --config.data.max_documents=200 --config.save_embeddings=True

step adapt configs/adapt_language.py \
  --config.init_from="$OUT/pretrain" --config.data.source=bundled:bible_es \
  --config.total_steps=30 --config.token_budget=20000 --config.batch_size=16 \
  --config.log_every=5 --config.eval_every=15 --config.checkpoint_every=15 \
  --config.data.seq_len=32 --config.data.vocab_size=400 --config.data.max_valid_sequences=32 \
  --config.data.max_documents=200 --config.optim.warmup_steps=3

step finetune configs/finetune_nli.py \
  --config.task=classify \
  --config.train_source=bundled:verse_genre:train --config.dev_source=bundled:verse_genre:dev \
  "--config.label_names=('narrative','discourse')" \
  --config.init_from="$OUT/pretrain" --config.max_train_examples=256 --config.epochs=2 \
  --config.batch_size=16 --config.eval_batch_size=16 --config.max_len=32 --config.log_every=4

step assemble configs/assemble.py \
  --config.task_from="$OUT/finetune" --config.embeddings_from="$OUT/probe/embeddings/es_b10000_s0"

step evaluate configs/evaluate.py \
  --config.models=assembled="$OUT/assemble" "--config.languages=('es',)" \
  --config.test_source=bundled:verse_genre:test --config.max_examples=64 --config.eval_batch_size=16

# The Llama family: the same stages on the tiny decoder (input and output matrices reset; the probe with the
# probe recipe's dropout spelled out, so that a tree whose probe takes the body's dropout runs the same thing).
step pretrain_llama configs/pretrain_forget.py:tiny-llama "${PRETRAIN[@]}" --config.forget.pattern=both

step probe_llama configs/probe.py \
  --config.init_from="$OUT/pretrain_llama" --config.languages=es=bundled:bible_es \
  "--config.token_budgets=(10000,)" --config.seeds=2 --config.total_steps=20 --config.eval_every=10 \
  --config.batch_size=8 --config.model.dropout=0.1 --config.model.attention_dropout=0.1 \
  --config.data.seq_len=32 --config.data.vocab_size=300 --config.data.max_valid_sequences=16 \
  --config.data.max_documents=200

step adapt_llama configs/adapt_language.py:tiny-llama \
  --config.init_from="$OUT/pretrain_llama" --config.data.source=bundled:bible_es \
  --config.total_steps=30 --config.token_budget=20000 --config.batch_size=16 \
  --config.log_every=5 --config.eval_every=15 --config.checkpoint_every=15 \
  --config.data.seq_len=32 --config.data.vocab_size=400 --config.data.max_valid_sequences=32 \
  --config.data.max_documents=200 --config.optim.warmup_steps=3

step finetune_llama configs/finetune_nli.py:tiny-llama \
  --config.task=classify \
  --config.train_source=bundled:verse_genre:train --config.dev_source=bundled:verse_genre:dev \
  "--config.label_names=('narrative','discourse')" \
  --config.init_from="$OUT/pretrain_llama" --config.max_train_examples=256 --config.epochs=2 \
  --config.batch_size=16 --config.eval_batch_size=16 --config.max_len=32 --config.log_every=4

step assemble_llama configs/assemble.py \
  --config.task_from="$OUT/finetune_llama" --config.embeddings_from="$OUT/adapt_llama"

step evaluate_llama configs/evaluate.py \
  --config.models=assembled="$OUT/assemble_llama" "--config.languages=('es',)" \
  --config.test_source=bundled:verse_genre:test --config.max_examples=64 --config.eval_batch_size=16

printf 'run_all.sh: all runs done in %.1f s -> %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$OUT"
