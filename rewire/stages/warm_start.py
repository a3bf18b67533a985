"""Starting a run from an earlier run's parameters: load them, re-initialise chosen leaves, check shapes.

Language adaptation starts from a pretrained model, keeps its body and re-initialises every
vocabulary-sized leaf at the new tokenizer's size (the token embeddings, a decoder's untied output head,
RoBERTa's LM-head bias). `config.init_from` names the earlier
workdir (a rewire run, or one written by `python -m rewire.hf import`), `config.reinit.pattern` the leaves
to re-initialise: 2-D leaves are drawn from N(0, init_std) (RoBERTa's padding row set to 0), 1-D leaves
are zeroed. `config.reinit.method` other than `random` builds the vocabulary leaves from the source's rows
instead (`rewire.vocab`). Every other leaf must exist in the source with the same shape.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import numpy as np

from rewire import config as rconfig
from rewire import workdir
from rewire.workdir import load_params
from rewire.errors import UserError
from rewire.models import registry
from rewire.optim import path_str
from rewire.vocab.recipe import Recipe
from rewire.vocab.start import start_leaf

_REINIT_SALT = 0x2E1217


def adopt_model_shape(config) -> None:
  """Copies the source model's family and dimensions into `config.model` (a warm start cannot change them;
  the vocabulary comes from the run's own tokenizer)."""
  info = workdir.read_model_info(config.init_from)
  fam = registry.info_family(info)
  with config.model.unlocked():
    config.model.family = fam.name
  rconfig.seat_family(config.model)
  for key in fam.shape_keys:
    if key in info:
      config.model[key] = info[key]


def initial_params(config, abstract_params: Any, *, pad_id: int, recipe: Recipe | None = None) -> Any:
  """Host-side initial params: the source's leaves, with `config.reinit.pattern` leaves freshly drawn.

  The pattern is a regex or a name of `registry.LEAF_SETS` (resolved for `config.model.family`). A fresh
  token-embedding matrix of a family with a zero padding row (RoBERTa) gets that row zeroed. With a
  `recipe` (`rewire.stages.new_vocab.vocabulary_recipe`), the vocabulary-sized leaves among them are built from the source's
  leaf of the same path as the recipe says, along the family's vocabulary axis.
  """
  fam = registry.run_family(config.model)
  pattern = fam.resolve(config.reinit.pattern) if config.reinit.pattern else ""
  regex = re.compile(pattern) if pattern else None
  key = jax.random.fold_in(jax.random.key(config.seed), _REINIT_SALT)
  reinit = lambda name: regex is not None and regex.fullmatch(name) is not None
  vocab_leaves = set(fam.vocab_leaves())
  source = _source_leaves(config.init_from, config.init_step)
  index = 0

  def fresh(path, a):
    nonlocal index
    name = path_str(path)
    if not reinit(name):
      return a  # a placeholder, taken from the source below
    x = np.asarray(fam.fresh_leaf(jax.random.fold_in(key, index), name, a.shape, std=config.reinit.init_std,
                                  pad_id=pad_id)).astype(a.dtype)
    if recipe is not None and name in vocab_leaves and name in source:
      x = start_leaf(recipe, source[name], x, vocab_axis=fam.vocab_axis(name), pad_row=fam.pad_row(name, pad_id),
                     seed=config.seed * 1000 + index, covariance_scale=config.reinit.covariance_scale)
    index += 1
    return x

  base = jax.tree_util.tree_map_with_path(fresh, abstract_params)
  return _take_from_source(base, config.init_from, config.init_step, lambda name: not reinit(name),
                           hint=" -- re-initialise vocabulary-sized leaves with reinit.pattern", source=source)


def overlay(fresh: Any, workdir: str, step: int | None, *, prefix: str) -> Any:
  """`fresh` params with every leaf under `prefix` replaced by the source run's (same path and shape).

  A task model keeps its freshly initialised head and takes the pretrained encoder.
  """
  return _take_from_source(fresh, workdir, step, lambda name: name.startswith(prefix))


def _source_leaves(workdir: str, step: int | None) -> dict[str, Any]:
  loaded, _ = load_params(workdir, step or None)
  return {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(loaded)[0]}


def _take_from_source(base: Any, workdir: str, step: int | None, take, *, hint: str = "",
                      source: dict[str, Any] | None = None) -> Any:
  """`base` with each leaf whose path satisfies `take` replaced by the leaf of the same path in the
  checkpoint of `workdir` (`source`, when already read); a missing path or a different shape is a
  UserError listing the first few."""
  source = source if source is not None else _source_leaves(workdir, step)
  missing, wrong = [], []

  def pick(path, x):
    name = path_str(path)
    if not take(name):
      return x
    if name not in source:
      missing.append(name)
      return x
    y = np.asarray(source[name])
    if tuple(y.shape) != tuple(x.shape):
      wrong.append(f"{name} {tuple(y.shape)} vs {tuple(x.shape)}")
      return x
    return y.astype(x.dtype)

  out = jax.tree_util.tree_map_with_path(pick, base)
  more = lambda xs: " ..." if len(xs) > 3 else ""
  if missing:
    raise UserError(f"{workdir} lacks {len(missing)} parameter(s) the model needs: {', '.join(missing[:3])}"
                    + more(missing))
  if wrong:
    raise UserError(f"{workdir} has mismatched shapes (source vs model): {'; '.join(wrong[:3])}"
                    + more(wrong) + hint)
  return out
