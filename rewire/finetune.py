"""Task adaptation (Chen et al. 2023, step 3): fine-tune the encoder and a new task head on an English task.

The token embeddings are frozen (`optim.rules`), so a later assembly can swap in another language's
embeddings. The run starts from a pretrained workdir (its encoder and tokenizer), trains for
`epochs` over the training split, scores the dev split after every epoch, and keeps the best epoch's
parameters as the workdir's checkpoint (model selection). `model.json` records the task architecture.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from rewire import config as rconfig
from rewire import heads, optim, sharding, warm_start
from rewire.checkpoint import Checkpointer, has_checkpoint
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.telemetry import MetricsWriter, Progress
from rewire.model import ModelConfig
from rewire.tasks.data import load_task_split
from rewire.tasks.spec import TaskSpec, make_spec


def task_model_config(source_info: dict, model_cfg) -> ModelConfig:
  """The source model's shape and vocabulary, with this run's dropout, dtype and remat settings."""
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  d = {k: v for k, v in source_info.items() if k in fields}
  d.update(dropout=model_cfg.dropout, attention_dropout=model_cfg.attention_dropout, dtype=model_cfg.dtype,
           remat=model_cfg.remat)
  return ModelConfig.from_dict(d)


def spec_from(config) -> TaskSpec:
  return make_spec(config.task, label_names=config.label_names, max_len=config.max_len,
                   doc_stride=config.doc_stride, max_query_len=config.max_query_len)


class TaskModel:
  """A task model on a mesh: its shardings and jitted predict step (shared by fine-tuning and evaluation)."""

  def __init__(self, spec: TaskSpec, model_config: ModelConfig, mesh, rules):
    self.spec, self.model_config, self.mesh, self.rules = spec, model_config, mesh, rules
    self.model = heads.make_model(spec.architecture, model_config, spec.num_labels)
    boxed = jax.eval_shape(lambda k: heads.init_variables(self.model, k, spec.max_len)["params"],
                           jax.random.key(0))
    self.param_shardings = sharding.logical_shardings(boxed, mesh, rules)
    self.abstract_params = nn.unbox(boxed)
    batch_sh = sharding.batch_sharding(mesh)

    def predict(params, ids, mask):
      return self.model.apply({"params": params}, ids, mask, deterministic=True)

    self.predict_step = jax.jit(predict, in_shardings=(self.param_shardings, batch_sh, batch_sh),
                                out_shardings=sharding.replicated(mesh))

  def fresh_params(self, seed: int) -> Any:
    init = lambda k: nn.unbox(heads.init_variables(self.model, k, self.spec.max_len)["params"])
    return jax.device_get(jax.jit(init)(jax.random.key(seed)))

  def place(self, params: Any) -> Any:
    return jax.device_put(params, self.param_shardings)

  def predict(self, params: Any, features: Any, batch_size: int) -> Any:
    """Outputs for every feature row (host arrays), in fixed-shape batches padded with copies of row 0."""
    arrays = features.arrays()
    n = len(features)
    outs = []
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      for lo in range(0, n, batch_size):
        idx = np.arange(lo, lo + batch_size)
        idx[idx >= n] = 0
        ids = sharding.global_batch(arrays["input_ids"][idx], self.mesh)
        mask = sharding.global_batch(arrays["attention_mask"][idx], self.mesh)
        outs.append(jax.device_get(self.predict_step(params, ids, mask)))
    keep = lambda xs: np.concatenate(xs)[:n]
    if isinstance(outs[0], tuple):
      return tuple(keep([o[i] for o in outs]) for i in range(len(outs[0])))
    return keep(outs)


def write_task_model_info(workdir: str, model_config: ModelConfig, spec: TaskSpec) -> None:
  info = {"architecture": spec.architecture, "task": spec.name, **dataclasses.asdict(model_config)}
  if spec.num_labels:
    info.update(num_labels=spec.num_labels, label_names=list(spec.label_names))
  info.update(max_len=spec.max_len, doc_stride=spec.doc_stride, max_query_len=spec.max_query_len)
  with open(os.path.join(workdir, "model.json"), "w") as f:
    json.dump(info, f, indent=2)


def train_and_evaluate(config, workdir: str, *, devices: Sequence[jax.Device] | None = None,
                       log_stream=None, run_name: str | None = None) -> dict:
  """Fine-tunes `config.init_from` on `config.train_source`; returns (and writes) the summary."""
  rconfig.validate(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = sharding.rules_from_config(config.mesh.rules)
  if not config.init_from or not os.path.isdir(config.init_from):
    raise UserError(f"finetune needs init_from, an existing pretrained workdir; got {config.init_from!r}")
  shards = sharding.num_batch_shards(mesh)
  for key in ("batch_size", "eval_batch_size"):
    if config[key] <= 0 or config[key] % shards:
      raise UserError(f"{key} {config[key]} must be positive and divisible by the {shards} data shards")
  if config.epochs <= 0:
    raise UserError(f"epochs must be positive, got {config.epochs}")
  if has_checkpoint(os.path.join(workdir, "checkpoints")):
    done = os.path.exists(os.path.join(workdir, "summary.json"))
    raise UserError(f"{workdir} already holds a {'finished' if done else 'partly'} fine-tuned model "
                    f"(fine-tuning restarts rather than resumes); choose a new workdir or delete it")
  spec = spec_from(config)
  info = warm_start.source_model_info(config.init_from)
  tok_path = os.path.join(config.init_from, "tokenizer.json")
  tok = load_tokenizer(tok_path)
  train_examples = load_task_split(config.train_source, task=spec.name)
  if config.max_train_examples:
    train_examples = train_examples[:config.max_train_examples]
  dev_examples = load_task_split(config.dev_source, task=spec.name)
  train_feats = spec.features(train_examples, tok)
  dev_feats = spec.features(dev_examples, tok)
  steps_per_epoch = len(train_feats) // config.batch_size
  if steps_per_epoch == 0:
    raise UserError(f"{len(train_feats)} training features are fewer than one batch of {config.batch_size}")

  mc = task_model_config(info, config.model)
  tm = TaskModel(spec, mc, mesh, rules)
  params = warm_start.overlay(tm.fresh_params(config.seed), config.init_from, config.init_step)
  labels = optim.label_params(params, config.optim.rules)
  trainable = optim.trainable_mask(labels)
  total = config.epochs * steps_per_epoch
  ocfg = dict(config.optim)
  ocfg["warmup_steps"] = config.optim.warmup_steps or round(config.optim.warmup_fraction * total)
  ocfg = type(config.optim)(ocfg)
  schedules = optim.make_schedules(ocfg, total, 0, sorted(set(jax.tree.leaves(labels))))
  tx = optim.make_stage_optimizer(ocfg, labels, schedules)
  params = tm.place(params)
  repl = sharding.replicated(mesh)
  opt_abstract = jax.eval_shape(tx.init, params)
  opt_shardings = sharding.shardings_like_params(opt_abstract, tm.abstract_params, tm.param_shardings, repl)
  state = {"step": jax.device_put(jnp.zeros([], jnp.int32), repl), "params": params,
           "opt_state": jax.jit(tx.init, out_shardings=opt_shardings)(params)}
  state_shardings = {"step": repl, "params": tm.param_shardings, "opt_state": opt_shardings}
  batch_keys = list(train_feats.arrays())
  batch_sh = {k: sharding.batch_sharding(mesh) for k in batch_keys}

  def train_step(state, batch):
    step = state["step"] + 1
    rng = jax.random.fold_in(jax.random.key(config.seed), step)
    train_p, frozen_p = optim.split_trainable(state["params"], trainable)

    def loss_fn(tp):
      p = optim.merge(tp, frozen_p, trainable)
      out = tm.model.apply({"params": p}, batch["input_ids"], batch["attention_mask"], deterministic=False,
                           rngs={"dropout": rng})
      return spec.loss(out, batch)

    loss, grads = jax.value_and_grad(loss_fn)(train_p)
    updates, opt_state = tx.update(optim.zeros_for_frozen(grads, state["params"], trainable),
                                   state["opt_state"], state["params"])
    new = {"step": step, "params": optim.apply_trainable(state["params"], updates, trainable),
           "opt_state": opt_state}
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    metrics.update({f"lr_{g}": lr for g, lr in schedules.rates(step, 0).items()})
    return new, metrics

  step_fn = jax.jit(train_step, in_shardings=(state_shardings, batch_sh), out_shardings=(state_shardings, repl),
                    donate_argnums=(0,))

  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    shutil.copyfile(tok_path, os.path.join(workdir, "tokenizer.json"))
    write_task_model_info(workdir, mc, spec)
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"), enabled=is_main)
  writer.write({"step": 0, "event": "start", "task": spec.name, "train_examples": len(train_examples),
                "train_features": len(train_feats), "dev_examples": len(dev_examples), "steps": total})
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=1, async_save=False)
  progress = Progress(total, 0, name=run_name or os.path.basename(os.path.abspath(workdir)), enabled=is_main,
                      stream=log_stream)
  arrays = train_feats.arrays()
  best, best_step, curve = -math.inf, 0, []
  pending, step, t_last = [], 0, time.perf_counter()
  local = config.batch_size // jax.process_count()
  lo_host = jax.process_index() * local
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    for epoch in range(config.epochs):
      order = np.random.default_rng([config.seed, epoch]).permutation(len(train_feats))
      for b in range(steps_per_epoch):
        idx = order[b * config.batch_size:(b + 1) * config.batch_size][lo_host:lo_host + local]
        batch = {k: sharding.global_batch(arrays[k][idx], mesh) for k in batch_keys}
        state, m = step_fn(state, batch)
        step += 1
        pending.append(m)
        if step == 1:
          jax.block_until_ready(m)  # compiled; the ETA counts from here
          progress.mark_compiled(step)
          t_last = time.perf_counter()
        if step % config.log_every == 0 or step == total:
          fetched = jax.device_get(pending)
          now = time.perf_counter()
          rec = {"step": step, "epoch": epoch + 1, "loss": float(np.mean([x["loss"] for x in fetched])),
                 "grad_norm": float(np.mean([x["grad_norm"] for x in fetched])),
                 **{k: float(v) for k, v in fetched[-1].items() if k.startswith("lr_")},
                 "examples_per_s": len(fetched) * config.batch_size / max(now - t_last, 1e-9)}
          if not math.isfinite(rec["loss"]):
            raise UserError(f"fine-tuning diverged at step {step}: lower optim.lr")
          writer.write(rec)
          progress.log(step, rec)
          pending, t_last = [], now
      outputs = tm.predict(state["params"], dev_feats, config.eval_batch_size)
      scores = spec.score(dev_examples, dev_feats, outputs, "en")
      rec = {"step": step, "epoch": epoch + 1, **{f"dev_{k}": v for k, v in scores.items()}}
      curve.append(rec)
      writer.write(rec)
      progress.log(step, rec)
      if scores[spec.primary] > best:
        best, best_step = scores[spec.primary], step
        ckpt.save(step, {"step": state["step"], "params": state["params"]}, {"epoch": epoch + 1}, force=True)
        writer.write({"step": step, "event": "best", f"dev_{spec.primary}": best})
      t_last = time.perf_counter()
  ckpt.wait()
  ckpt.close()
  summary = {"task": spec.name, "best_step": best_step, f"best_dev_{spec.primary}": best, "steps": total,
             "dev_curve": curve}
  if is_main:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  summary["state"] = state
  return summary
