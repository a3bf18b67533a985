"""What a resumed pretraining or adaptation run may change, checked before anything is written.

A run resumes on its own from its workdir. Its new config is compared with the `config.json` the run
wrote: cadence, bookkeeping, placement and data-preparation mechanics may change (the changes are
returned, and the stage appends them to `config_history.jsonl`); anything else (model shape, optimizer,
forgetting, data, seed) would silently make another run, so it is refused with one line naming the keys.
The tokenizer must also fit the checkpoint's embedding before any data is read. A resume onto another
layout (devices, processes, mesh) is allowed, announced in one line and recorded (`layout_change`).
"""

from __future__ import annotations

import json
import os

import jax

from rewire import config as rconfig
from rewire import workdir as rworkdir
from rewire.checkpoint import Checkpointer
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.fileio import write_json_atomic
from rewire.models import registry

# Keys a resumed run may change: cadence, bookkeeping, placement and data-preparation mechanics.
RESUMABLE_KEYS = ("total_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                  "async_checkpoints", "peak_flops", "mesh.", "model.remat", "model.dtype",
                  "data.max_valid_sequences", "data.verify_shards", "data.workers", "data.runner",
                  "data.beam_options", "probe_every", "probe.")


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_resumed_config(config, workdir: str) -> dict:
  """Compares `config` with the `config.json` of the run being resumed, before anything is written.

  Returns the allowed changes (`{key: [saved, new]}`); raises UserError naming the others.
  """
  path = os.path.join(workdir, rworkdir.CONFIG)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    saved = _flat(json.load(f))
  new = _flat(json.loads(config.to_json_best_effort()))
  # A run written before a key existed has that key's default; leaf-set names equal the regexes they name.
  defaults = _flat(json.loads(rconfig.SCHEMAS[config.stage].defaults().to_json_best_effort()))
  saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
  # Runs written before a model group held one family's keys only also saved the other family's.
  saved = {k: v for k, v in saved.items() if not k.startswith("model.") or k in new}
  fam = registry.run_family(config.model)
  saved, new = _resolved(saved, fam), _resolved(new, fam)
  changed = {k: [saved.get(k), new.get(k)] for k in sorted(set(saved) | set(new)) if saved.get(k) != new.get(k)}
  refused = [k for k in changed if not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE_KEYS)]
  if refused:
    shown = "; ".join(f"{k} {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused[:4])
    more = f" (and {len(refused) - 4} more)" if len(refused) > 4 else ""
    raise UserError(f"{workdir} holds a run with other settings: {shown}{more}; resume it with its own "
                    "config (see its config.json) or choose a new --workdir")
  return changed


LAYOUT = "layout.json"


def current_layout(mesh) -> dict:
  """The devices, processes and mesh a run runs on (what a resume may change)."""
  return {"devices": int(mesh.size), "processes": jax.process_count(), "mesh": {k: int(v) for k, v in mesh.shape.items()}}


def describe_layout(layout: dict) -> str:
  mesh = " x ".join(f"{k} {v}" for k, v in layout.get("mesh", {}).items())
  procs = layout.get("processes")
  return f"{layout['devices']} devices" + (f" in {procs} process(es)" if procs else "") + (f" ({mesh})" if mesh else "")


def layout_change(workdir: str, mesh) -> tuple[dict, dict] | None:
  """(saved, current) when the run in `workdir` last ran on another layout; None when it did not, or is new.

  The layout is `layout.json`, written at every start; runs older than it have their first start record's
  device count and mesh in metrics.jsonl."""
  path = os.path.join(workdir, LAYOUT)
  saved = None
  if os.path.isfile(path):
    with open(path) as f:
      saved = json.load(f)
  else:
    metrics = os.path.join(workdir, "metrics.jsonl")
    if os.path.isfile(metrics):
      from rewire.telemetry import read_records
      start = next((r for r in read_records(metrics) if r.get("event") == "start" and "devices" in r), None)
      if start:
        saved = {"devices": start["devices"], "mesh": start.get("mesh", {})}
  now = current_layout(mesh)
  if saved is None or all(saved.get(k, now[k]) == now[k] for k in now):
    return None
  return saved, now


def write_layout(workdir: str, mesh) -> None:
  os.makedirs(workdir, exist_ok=True)
  write_json_atomic(os.path.join(workdir, LAYOUT), current_layout(mesh), indent=None)


def _resolved(flat: dict, fam) -> dict:
  """`flat` with the leaf patterns (forget.pattern, reinit.pattern, optim.rules) as the regexes they name."""
  out = dict(flat)
  for key in ("forget.pattern", "reinit.pattern"):
    if out.get(key):
      out[key] = fam.resolve(out[key])
  if isinstance(out.get("optim.rules"), (list, tuple)):
    out["optim.rules"] = [list(r) for r in fam.resolve_rules(out["optim.rules"])]
  return out


def check_tokenizer_fits(config, workdir: str, ckpt: Checkpointer | None, word_embedding: str) -> None:
  """A resumed run's tokenizer must fit its checkpoint's embedding (checked before any data is read).

  That it is the very tokenizer of the run is checked against the corpus manifest afterwards
  (`rewire.data.run_data.check_tokenizer`).
  """
  if ckpt is None or ckpt.latest_step() is None:
    return
  rows = ckpt.param_shapes(ckpt.latest_step()).get(word_embedding, (None,))[0]
  path = config.data.tokenizer or rworkdir.tokenizer_path(workdir)
  if rows is None or not os.path.exists(path):
    return
  size = load_tokenizer(path).get_vocab_size()
  if size != rows:
    raise UserError(f"tokenizer {path} has {size} entries but the checkpoint in {ckpt.directory} has a "
                    f"{rows}-row embedding")
