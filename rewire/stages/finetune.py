"""Task adaptation (Chen et al. 2023, step 3): fine-tune the encoder and a new task head on an English task.

The token embeddings are frozen (`optim.rules`), so a later assembly can swap in another language's
embeddings. The run starts from a pretrained workdir (its encoder and tokenizer), trains for `epochs`
over the training split through `rewire.loop`, scores the dev split after every epoch, and keeps the
best epoch's parameters as the workdir's checkpoint (model selection). `model.json` records the task
architecture. A fine-tuning run restarts rather than resumes; the pipeline redoes an unfinished one.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import jax
from flax import linen as nn

from rewire import config as rconfig
from rewire import loop, optim, sharding, step
from rewire import workdir as rworkdir
from rewire.checkpoint import Checkpointer
from rewire.workdir import has_checkpoint
from rewire.data.batches import array_batches
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.models.task_model import TaskModel, TaskObjective, spec_from, task_model_config, task_model_info
from rewire.stages import warm_start
from rewire.tasks.loading import load_task_split
from rewire.telemetry import MetricsWriter, Progress


def _check(config, mesh, workdir: str) -> None:
  if not config.init_from or not os.path.isdir(config.init_from):
    raise UserError(f"finetune needs init_from, an existing pretrained workdir; got {config.init_from!r}")
  shards = sharding.num_batch_shards(mesh)
  for key in ("batch_size", "eval_batch_size"):
    if config[key] <= 0 or config[key] % shards:
      raise UserError(f"{key} {config[key]} must be positive and divisible by the {shards} data shards")
  if has_checkpoint(rworkdir.checkpoint_dir(workdir)):
    done = rworkdir.read_summary(workdir) is not None
    raise UserError(f"{workdir} already holds a {'finished' if done else 'partly'} fine-tuned model "
                    f"(fine-tuning restarts rather than resumes); choose a new workdir or delete it")


def _initial_state_and_step(config, tm: TaskModel, total: int, batch_keys):
  """The placed initial state (pretrained body, fresh head) and the jitted, donated train step."""
  params = warm_start.overlay(tm.fresh_params(config.seed), config.init_from, config.init_step,
                              prefix=tm.family.body)
  opt = optim.stage_optimizer(config.optim, tm.family, params, total_steps=total,
                              warmup_steps=config.optim.warmup_steps or round(config.optim.warmup_fraction * total))
  shardings = step.state_shardings(opt.tx, tm.boxed_abstract, tm.mesh, tm.rules)
  train_step = step.make_train_step(TaskObjective(tm.model, tm.spec), opt.tx, opt.trainable, seed=config.seed,
                                    rates=opt.rates)
  batch_sh = {k: sharding.batch_sharding(tm.mesh) for k in batch_keys}
  return step.place_state(params, opt.tx, shardings), step.jit_train_step(train_step, shardings, batch_sh)


def train_and_evaluate(config, workdir: str, *, devices: Sequence[jax.Device] | None = None,
                       log_stream=None, run_name: str | None = None) -> dict:
  """Fine-tunes `config.init_from` on `config.train_source`; returns (and writes) the summary."""
  rconfig.validate(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = sharding.rules_from_config(config.mesh.rules)
  _check(config, mesh, workdir)
  with rworkdir.locked(workdir, enabled=jax.process_index() == 0):
    return _finetune(config, workdir, mesh, rules, log_stream=log_stream, run_name=run_name)


def _finetune(config, workdir: str, mesh, rules, *, log_stream, run_name) -> dict:
  spec = spec_from(config)
  tok_path = rworkdir.tokenizer_path(config.init_from)
  tok = load_tokenizer(tok_path)
  train_examples = load_task_split(config.train_source, task=spec.name)
  if config.max_train_examples:
    train_examples = train_examples[:config.max_train_examples]
  dev_examples = load_task_split(config.dev_source, task=spec.name)
  train_feats, dev_feats = spec.features(train_examples, tok), spec.features(dev_examples, tok)
  steps_per_epoch = len(train_feats) // config.batch_size
  if steps_per_epoch == 0:
    raise UserError(f"{len(train_feats)} training features are fewer than one batch of {config.batch_size}")
  total = config.epochs * steps_per_epoch
  mc = task_model_config(rworkdir.read_model_info(config.init_from), config.model)
  tm = TaskModel(spec, mc, mesh, rules)
  arrays = train_feats.arrays()
  state, step_fn = _initial_state_and_step(config, tm, total, list(arrays))

  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    rworkdir.write_config(workdir, config)
    rworkdir.copy_tokenizer(tok_path, workdir)
    source_info = rworkdir.read_model_info(config.init_from)
    kept = {k: source_info[k] for k in (rworkdir.HF_SPECIAL_IDS,) if k in source_info}  # same tokenizer, same ids
    rworkdir.write_model_info(workdir, {**task_model_info(mc, spec), **kept})
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"), enabled=is_main)
  writer.write({"step": 0, "event": "start", "task": spec.name, "train_examples": len(train_examples),
                "train_features": len(train_feats), "dev_examples": len(dev_examples), "steps": total})
  ckpt = Checkpointer(rworkdir.checkpoint_dir(workdir), keep=1, async_save=False)
  best = {"score": -math.inf, "step": 0}
  curve: list[dict] = []

  def evaluate(state, step):
    scores = spec.score(dev_examples, dev_feats, tm.predict(state["params"], dev_feats, config.eval_batch_size), "en")
    return {f"dev_{k}": v for k, v in scores.items()}

  def keep_best(step, state, rec):
    curve.append({"step": step, **rec})
    if rec[f"dev_{spec.primary}"] > best["score"]:
      best.update(score=rec[f"dev_{spec.primary}"], step=step)
      ckpt.save(step, {"step": state["step"], "params": state["params"]}, {"epoch": rec["epoch"]}, force=True)
      writer.write({"step": step, "event": "best", f"dev_{spec.primary}": best["score"]})

  run = loop.Loop(total_steps=total, log_every=config.log_every, eval_every=steps_per_epoch, checkpoint_every=0,
                  writer=writer, throughput=loop.Throughput({"examples": config.batch_size}, mesh.size),
                  progress=Progress(total, 0, name=run_name or os.path.basename(os.path.abspath(workdir)),
                                    enabled=is_main, stream=log_stream), what="fine-tuning")
  batches = array_batches(arrays, config.batch_size, config.seed, identity=f"{config.train_source}:{len(train_feats)}",
                          process_index=jax.process_index(), process_count=jax.process_count())
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      hooks = loop.Hooks(evaluate=evaluate, after_eval=keep_best, extra=lambda step: {"epoch": -(-step // steps_per_epoch)})
      result = run.run(state, step_fn, batches, lambda b: {k: sharding.global_batch(v, mesh) for k, v in b.items()},
                       hooks=hooks)
    ckpt.wait()
  finally:  # an error with a save in flight: it completes or leaves no temporary folder, threads stop
    ckpt.finish()
    writer.close()
  summary = {"task": spec.name, "finished": result.finished, "best_step": best["step"],
             f"best_dev_{spec.primary}": best["score"], "steps": total, "dev_curve": curve}
  return {**loop.finish(workdir, summary, is_main=is_main), "state": result.state}
