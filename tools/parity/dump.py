"""dump.py WORKDIR_ROOT OUT_DIR -- flattens everything a run_all.sh output holds into a comparable dump.

OUT_DIR/arrays.npz    every checkpoint leaf (train state: step, params, opt_state; params-only checkpoints),
                      restored with orbax directly (no target, numpy restore type), plus *.npy files
                      (unigram counts); key "RUN::relative/path/to/checkpoints/STEP/state::leaf/path".
OUT_DIR/records.json  every JSON / JSONL / Markdown output, normalised: timing fields dropped and the
                      WORKDIR_ROOT prefix of absolute paths replaced by "<OUT>"; key "RUN::relative/path"
                      (JSONL files: a list of records, one per line).
OUT_DIR/index.json    per run: the number of array leaves and of records.

RUN is the top-level directory under WORKDIR_ROOT (pretrain, adapt, probe, ...).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

# Keys whose values depend on wall-clock time, not on the computation (decided from the files' contents:
# metrics.jsonl: tokens_per_s, tokens_per_s_per_device, tflops_per_device, examples_per_s[_per_device];
# data/manifest.json: run.seconds, run.created; and the generic names a refactor might add).
TIMING_KEY = re.compile(r"per_s($|_)|tflops|(^|_)mfu($|_)|elapsed|wall|seconds|timing|created|duration"
                        r"|(^|_)time($|_)|timestamp|(^|_)eta($|_)")
# Files that are not outputs of the computation: orbax's own bookkeeping and the checkpoint file hashes
# (orbax's metadata files carry creation timestamps, so their hashes differ from run to run).
SKIP_DIRS = {"checkpoint_checksums", "damaged_checkpoints"}
TEXT_EXT = (".json", ".jsonl", ".md")


def _norm_str(s: str, root: str) -> str:
  return s.replace(root, "<OUT>")


def normalise(x, root: str):
  if isinstance(x, dict):
    return {k: normalise(v, root) for k, v in x.items() if not TIMING_KEY.search(k)}
  if isinstance(x, list):
    return [normalise(v, root) for v in x]
  if isinstance(x, str):
    return _norm_str(x, root)
  return x


def restore_state(path: str) -> dict[str, np.ndarray]:
  """Every leaf of one orbax PyTree item directory (e.g. checkpoints/40/state), as numpy, by path."""
  import jax
  import orbax.checkpoint as ocp
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path)
  tree = meta.item_metadata if hasattr(meta, "item_metadata") else meta
  tree = tree.tree if hasattr(tree, "tree") else tree
  restore_args = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  out = {}
  for keypath, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]:
    name = "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in keypath)
    out[name] = np.asarray(leaf)
  return out


def dump(root: str, out_dir: str) -> dict:
  root = os.path.realpath(root)
  arrays: dict[str, np.ndarray] = {}
  records: dict[str, object] = {}
  index: dict[str, dict] = {}
  runs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
  for run in runs:
    run_dir = os.path.join(root, run)
    n_arr = n_rec = n_ckpt = 0
    for dirpath, dirnames, filenames in os.walk(run_dir):
      dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
      rel_dir = os.path.relpath(dirpath, run_dir)
      parts = rel_dir.split(os.sep)
      # A checkpoint step: .../checkpoints/STEP with one folder per orbax item.
      if len(parts) >= 2 and parts[-2] == "checkpoints" and parts[-1].isdigit():
        n_ckpt += 1
        for item in sorted(dirnames):
          item_dir = os.path.join(dirpath, item)
          if os.path.isfile(os.path.join(item_dir, "_METADATA")):  # a PyTree (StandardSave/PyTreeSave) item
            for name, value in restore_state(item_dir).items():
              arrays[f"{run}::{rel_dir}/{item}::{name}"] = value
              n_arr += 1
          elif os.path.isfile(os.path.join(item_dir, "metadata")):  # a JsonSave item (data-iterator state)
            with open(os.path.join(item_dir, "metadata")) as f:
              records[f"{run}::{rel_dir}/{item}"] = normalise(json.load(f), root)
            n_rec += 1
          else:
            raise SystemExit(f"dump.py: unknown checkpoint item {item_dir}: {sorted(os.listdir(item_dir))}")
        dirnames[:] = []
        continue
      for fn in sorted(filenames):
        path = os.path.join(dirpath, fn)
        key = f"{run}::{os.path.normpath(os.path.join(rel_dir, fn))}"
        if fn.endswith(".npy"):
          arrays[key] = np.load(path, allow_pickle=False)
          n_arr += 1
        elif fn.endswith(".jsonl"):
          with open(path) as f:
            records[key] = [normalise(json.loads(line), root) for line in f if line.strip()]
          n_rec += len(records[key])
        elif fn.endswith(".json"):
          with open(path) as f:
            records[key] = normalise(json.load(f), root)
          n_rec += 1
        elif fn.endswith(".md"):
          with open(path) as f:
            records[key] = _norm_str(f.read(), root)
          n_rec += 1
    index[run] = {"arrays": n_arr, "records": n_rec, "checkpoints": n_ckpt}
  os.makedirs(out_dir, exist_ok=True)
  np.savez(os.path.join(out_dir, "arrays.npz"), **arrays)
  with open(os.path.join(out_dir, "records.json"), "w") as f:
    json.dump(records, f, indent=1, sort_keys=True)  # NaN is written as NaN (json's default)
  with open(os.path.join(out_dir, "index.json"), "w") as f:
    json.dump({"root": root, "runs": index}, f, indent=1)
  return index


def main(argv):
  if len(argv) != 3:
    raise SystemExit(__doc__)
  logging.getLogger().setLevel(logging.CRITICAL)  # orbax logs a harmless device-mismatch ERROR per leaf
  try:
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.FATAL)
  except ImportError:
    pass
  index = dump(argv[1], argv[2])
  for run, n in index.items():
    print(f"{run}: {n['arrays']} array leaves ({n['checkpoints']} checkpoints), {n['records']} records")


if __name__ == "__main__":
  main(sys.argv)
