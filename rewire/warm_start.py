"""Starting a run from an earlier run's parameters: load them, re-initialise chosen leaves, check shapes.

Language adaptation starts from a pretrained model, keeps its body and re-initialises the token embeddings
(at the new tokenizer's size) and the vocabulary-sized LM-head bias. `config.init_from` names the earlier
workdir (a rewire run, or one written by `python -m rewire.hf import`), `config.reinit.pattern` the leaves
to re-initialise: 2-D leaves are drawn from N(0, init_std) with the padding row set to 0, 1-D leaves are
zeroed. Every other leaf must exist in the source with the same shape.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jax
import numpy as np

from rewire.checkpoint import load_params
from rewire.errors import UserError
from rewire.optim import path_str

_REINIT_SALT = 0x2E1217
# Model dimensions a warm-started run takes from its source (the vocabulary comes from its own tokenizer).
SHAPE_KEYS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings",
              "type_vocab_size", "layer_norm_eps")


def source_model_info(workdir: str) -> dict:
  path = os.path.join(workdir, "model.json")
  if not os.path.isfile(path):
    raise UserError(f"init_from {workdir} has no model.json: not a rewire workdir (import Hugging Face "
                    f"checkpoints with `python -m rewire.hf import`)")
  with open(path) as f:
    return json.load(f)


def adopt_model_shape(config) -> None:
  """Copies the source model's dimensions into `config.model` (a warm start cannot change them)."""
  info = source_model_info(config.init_from)
  for key in SHAPE_KEYS:
    if key in info:
      config.model[key] = info[key]


def initial_params(config, abstract_params: Any, *, pad_id: int) -> Any:
  """Host-side initial params: the source's leaves, with `config.reinit.pattern` leaves freshly drawn."""
  loaded, _ = load_params(config.init_from, config.init_step or None)
  source = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(loaded)[0]}
  regex = re.compile(config.reinit.pattern) if config.reinit.pattern else None
  key = jax.random.fold_in(jax.random.key(config.seed), _REINIT_SALT)
  missing, wrong = [], []
  out = []
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
  reinit_index = 0
  for path, a in flat:
    name = path_str(path)
    if regex is not None and regex.fullmatch(name):
      if len(a.shape) == 2:
        x = config.reinit.init_std * jax.random.normal(jax.random.fold_in(key, reinit_index), a.shape, a.dtype)
        x = np.array(x)
        x[pad_id] = 0.0
      else:
        x = np.zeros(a.shape, a.dtype)
      reinit_index += 1
    elif name not in source:
      missing.append(name)
      continue
    else:
      x = np.asarray(source[name])
      if tuple(x.shape) != tuple(a.shape):
        wrong.append(f"{name} {tuple(x.shape)} vs {tuple(a.shape)}")
        continue
    out.append(x.astype(a.dtype))
  if missing:
    raise UserError(f"init_from {config.init_from} lacks {len(missing)} parameter(s): {', '.join(missing[:3])}"
                    + (" ..." if len(missing) > 3 else ""))
  if wrong:
    raise UserError(f"init_from {config.init_from} has mismatched shapes (source vs model): "
                    f"{'; '.join(wrong[:3])}" + (" ..." if len(wrong) > 3 else "")
                    + " -- re-initialise vocabulary-sized leaves with reinit.pattern")
  return jax.tree.unflatten(treedef, out)


def overlay(fresh: Any, workdir: str, step: int | None = None, *, prefix: str = "roberta/") -> Any:
  """`fresh` params with every leaf under `prefix` replaced by the source run's (same path and shape).

  A task model keeps its freshly initialised head and takes the pretrained encoder.
  """
  loaded, _ = load_params(workdir, step or None)
  source = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(loaded)[0]}
  missing, wrong = [], []

  def pick(path, x):
    name = path_str(path)
    if not name.startswith(prefix):
      return x
    if name not in source:
      missing.append(name)
      return x
    y = np.asarray(source[name])
    if tuple(y.shape) != tuple(x.shape):
      wrong.append(f"{name} {tuple(y.shape)} vs {tuple(x.shape)}")
      return x
    return y.astype(x.dtype)

  out = jax.tree_util.tree_map_with_path(pick, fresh)
  if missing:
    raise UserError(f"{workdir} lacks {len(missing)} encoder parameter(s): {', '.join(missing[:3])}"
                    + (" ..." if len(missing) > 3 else ""))
  if wrong:
    raise UserError(f"{workdir} has mismatched shapes (source vs model): {'; '.join(wrong[:3])}"
                    + (" ..." if len(wrong) > 3 else ""))
  return out
