"""A task model (sequence classification or extractive QA) on a mesh: shapes, shardings, prediction, loss.

Fine-tuning trains one, evaluation and assembly read one; both build it here from a `model.json`-style
shape and a `TaskSpec` (`rewire.tasks.spec`), whose `head` picks the family's task architecture in
`rewire.models.registry`. `TaskObjective` is the task's loss for the one train step (`rewire.step`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import linen as nn

from rewire.models import registry
from rewire import sharding
from rewire.tasks.spec import TaskSpec, make_spec


def task_model_config(source_info: dict, model_cfg) -> Any:
  """The source model's family, shape and vocabulary, with this run's dropout, dtype and remat settings."""
  overrides = dict(dropout=model_cfg.dropout, attention_dropout=model_cfg.attention_dropout,
                   dtype=model_cfg.dtype, remat=model_cfg.remat)
  return registry.config_from_info({**source_info, **overrides})[1]


def spec_from(config) -> TaskSpec:
  return make_spec(config.task, label_names=config.label_names, max_len=config.max_len,
                   doc_stride=config.doc_stride, max_query_len=config.max_query_len)


class TaskModel:
  """A task model on a mesh: its shardings and jitted predict step (shared by fine-tuning and evaluation)."""

  def __init__(self, spec: TaskSpec, model_config: Any, mesh, rules):
    self.spec, self.model_config, self.mesh, self.rules = spec, model_config, mesh, rules
    self.family = registry.family_for(model_config)
    self.architecture = self.family.task_architecture(spec.head)
    self.model = registry.make_model(self.architecture, model_config, spec.num_labels)
    boxed = jax.eval_shape(lambda k: registry.init_variables(self.model, k, spec.max_len)["params"],
                           jax.random.key(0))
    self.param_shardings = sharding.logical_shardings(boxed, mesh, rules)
    self.boxed_abstract = boxed
    self.abstract_params = nn.unbox(boxed)
    batch_sh = sharding.batch_sharding(mesh)

    def predict(params, ids, mask):
      return self.model.apply({"params": params}, ids, mask, deterministic=True)

    self.predict_step = jax.jit(predict, in_shardings=(self.param_shardings, batch_sh, batch_sh),
                                out_shardings=sharding.replicated(mesh))

  def fresh_params(self, seed: int) -> Any:
    init = lambda k: nn.unbox(registry.init_variables(self.model, k, self.spec.max_len)["params"])
    return jax.device_get(jax.jit(init)(jax.random.key(seed)))

  def place(self, params: Any) -> Any:
    return jax.device_put(params, self.param_shardings)

  def predict(self, params: Any, features: Any, batch_size: int) -> Any:
    """Outputs for every feature row (host arrays), in fixed-shape batches padded with copies of row 0."""
    arrays = features.arrays()
    n = len(features)
    outs = []
    # Each process feeds its share of every batch (all processes hold all features); the outputs are
    # replicated, so every process gets all of them.
    local = batch_size // jax.process_count()
    mine = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      for lo in range(0, n, batch_size):
        idx = np.arange(lo, lo + batch_size)
        idx[idx >= n] = 0
        ids = sharding.global_batch(arrays["input_ids"][idx[mine]], self.mesh)
        mask = sharding.global_batch(arrays["attention_mask"][idx[mine]], self.mesh)
        outs.append(jax.device_get(self.predict_step(params, ids, mask)))
    keep = lambda xs: np.concatenate(xs)[:n]
    if isinstance(outs[0], tuple):
      return tuple(keep([o[i] for o in outs]) for i in range(len(outs[0])))
    return keep(outs)


class TaskObjective:
  """A task's loss (`TaskSpec.loss` of the model's outputs) as an objective of `rewire.step.make_train_step`."""

  def __init__(self, model, spec: TaskSpec):
    self.model, self.spec = model, spec

  def prepare(self, rng, batch):
    return batch, rng  # the features are the inputs; the step's key is the dropout key

  def loss(self, params, batch, rng):
    out = self.model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], deterministic=False,
                           rngs={"dropout": rng})
    return self.spec.loss(out, batch), {}


def task_model_info(model_config: Any, spec: TaskSpec) -> dict:
  """What a task model's `model.json` holds: its architecture and shape, task, labels and lengths."""
  architecture = registry.family_for(model_config).task_architecture(spec.head)
  info = {"architecture": architecture, "task": spec.name, **dataclasses.asdict(model_config)}
  if spec.num_labels:
    info.update(num_labels=spec.num_labels, label_names=list(spec.label_names))
  info.update(max_len=spec.max_len, doc_stride=spec.doc_stride, max_query_len=spec.max_query_len)
  return info
