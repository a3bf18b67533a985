"""The pretraining loop: `train_and_evaluate(config, workdir)`.

It validates everything it can before it writes anything, builds the state abstractly and places it
sharded over the mesh, compiles one donated train step for the whole run, and resumes on its own from the
newest checkpoint in `<workdir>/checkpoints`. Process 0 writes `metrics.jsonl`, the progress line,
`loss.png` and `summary.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from rewire import config as rconfig
from rewire import flops, forgetting, mlm, optim, sharding, warm_start
from rewire.checkpoint import Checkpointer, has_checkpoint
from rewire.data import masking
from rewire.data.batches import eval_batches
from rewire.data.pretrain import pretraining_data
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.telemetry import MetricsWriter, Progress
from rewire.model import WORD_EMBEDDING, ModelConfig, RobertaForMaskedLM
from rewire.plot import plot_losses



class _Preemption:
  """Turns SIGTERM (what TPU/GPU schedulers send before preempting) into a save-and-exit at the next step."""

  def __init__(self):
    self.requested = False
    self._old = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, *_):
    self.requested = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def _check_run_config(config, mesh) -> None:
  if config.total_steps <= 0:
    raise UserError(f"total_steps must be positive, got {config.total_steps}")
  if config.forget_every < 0:
    raise UserError(f"forget_every must be >= 0 (0 turns forgetting off), got {config.forget_every}")
  shards = sharding.num_batch_shards(mesh)
  if config.batch_size % shards:
    raise UserError(f"batch_size {config.batch_size} is not divisible by the {shards} data shards "
                    f"(mesh data x fsdp)")
  if config.init_from and not os.path.isdir(config.init_from):
    raise UserError(f"init_from {config.init_from} does not exist")
  if config.stage == "adapt_language":
    if not config.init_from:
      raise UserError("adapt_language needs init_from: the workdir of a pretrained model")
    if not config.data.source:
      raise UserError("adapt_language needs data.source: the new language's corpus")
    if config.forget_every:
      raise UserError("adapt_language does not reset embeddings: set forget_every=0")
  for key in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    if config[key] <= 0:
      raise UserError(f"{key} must be positive, got {config[key]}")


def _check_tokenizer_against_checkpoint(config, workdir: str, ckpt: Checkpointer | None) -> None:
  """A resumed run must use the tokenizer its checkpoint was trained with."""
  if ckpt is None or ckpt.latest_step() is None:
    return
  saved_tok = os.path.join(workdir, "tokenizer.json")
  rows = ckpt.param_shapes(ckpt.latest_step()).get(WORD_EMBEDDING, (None,))[0]
  if config.data.tokenizer:
    tok = load_tokenizer(config.data.tokenizer)
    if rows is not None and tok.get_vocab_size() != rows:
      raise UserError(f"tokenizer {config.data.tokenizer} has {tok.get_vocab_size()} entries but the "
                      f"checkpoint in {ckpt.directory} has a {rows}-row embedding")
    if os.path.exists(saved_tok):
      with open(saved_tok) as a, open(config.data.tokenizer) as b:
        if json.load(a) != json.load(b):
          raise UserError(f"tokenizer {config.data.tokenizer} differs from {saved_tok}, which the "
                          f"checkpoint in {ckpt.directory} was trained with")
  elif os.path.exists(saved_tok) and rows is not None:
    size = load_tokenizer(saved_tok).get_vocab_size()
    if size != rows:
      raise UserError(f"{saved_tok} has {size} entries but the checkpoint has a {rows}-row embedding")


def model_config_from(config, vocab_size: int, pad_id: int) -> ModelConfig:
  d = dict(config.model)
  if d["vocab_size"] and d["vocab_size"] != vocab_size:
    raise UserError(f"config.model.vocab_size={d['vocab_size']} but the tokenizer has {vocab_size} entries")
  d["vocab_size"] = vocab_size
  d["max_position_embeddings"] = d["max_position_embeddings"] or config.data.seq_len + 2
  if d["max_position_embeddings"] < config.data.seq_len + 2:
    raise UserError(f"model.max_position_embeddings={d['max_position_embeddings']} is too small for "
                    f"data.seq_len={config.data.seq_len} (needs seq_len + 2)")
  d["pad_token_id"] = pad_id
  return ModelConfig.from_dict(d)


def unigram_loss(counts: np.ndarray, valid: np.ndarray, num_special: int, mask_id: int) -> float:
  """Cross-entropy of validation tokens under the training unigram distribution (add-one smoothed).

  Masked positions are a uniform sample of the eligible tokens, so this is the loss of a model that
  predicts every masked token from token frequencies alone: the floor a trained MLM must beat.
  `counts` are the training tokens' counts (`vocab_size` long).
  """
  counts = counts.astype(np.float64).copy()
  vocab_size = counts.size
  counts[:num_special] = 0
  counts[mask_id] = 0
  probs = (counts + 1.0) / (counts.sum() + vocab_size - num_special - 1)
  v = valid.ravel()
  v = v[(v >= num_special) & (v != mask_id)]
  return float(-np.log(probs[v]).mean()) if v.size else float("nan")


class Setup:
  """Everything static about a run: mesh, model, optimizer, shardings and the jitted steps."""

  def __init__(self, config, mesh, specials, *, full_gradient: bool = False):
    self.config = config
    self.mesh = mesh
    self.rules = sharding.rules_from_config(config.mesh.rules)
    self.model_config = model_config_from(config, specials.vocab_size, specials.pad)
    self.model = RobertaForMaskedLM(self.model_config)
    seq_len = config.data.seq_len
    self.masker = mlm.MaskingSpec(mask_id=specials.mask, pad_id=specials.pad, vocab_size=specials.vocab_size,
                                  mask_prob=config.data.mask_prob,
                                  max_predictions=masking.max_predictions_for(seq_len, config.data.mask_prob))

    def init_boxed(key):
      ids = jnp.zeros((1, seq_len), jnp.int32)
      pos = jnp.zeros((1, self.masker.max_predictions), jnp.int32)
      return self.model.init({"params": key, "dropout": key}, ids, jnp.ones_like(ids), pos,
                             deterministic=True)["params"]

    key = jax.random.key(config.seed)
    boxed = jax.eval_shape(init_boxed, key)
    self.param_shardings = sharding.logical_shardings(boxed, mesh, self.rules)
    abstract_params = nn.unbox(boxed)

    labels = optim.label_params(abstract_params, config.optim.rules)
    forget_every = config.forget_every
    if forget_every > 0:
      labels = optim.relabel(abstract_params, labels, config.forget.pattern, optim.FORGET)
    self.labels = labels
    self.trainable = optim.trainable_mask(labels)
    groups = sorted(set(jax.tree.leaves(labels)))
    self.schedules = optim.make_schedules(config.optim, config.total_steps, forget_every, groups)
    inner = optim.make_stage_optimizer(config.optim, labels, self.schedules)
    self.tx = forgetting.forget(inner, labels=labels, group=optim.FORGET, every=forget_every,
                                last_step=config.total_steps, init_std=config.forget.init_std,
                                pad_id=specials.pad, seed=config.seed)

    def init_state(key):
      params = nn.unbox(init_boxed(key))
      return {"step": jnp.zeros([], jnp.int32), "params": params, "opt_state": self.tx.init(params)}

    self._init_state = init_state
    self.abstract_state = jax.eval_shape(init_state, key)
    repl = sharding.replicated(mesh)
    opt_shardings = sharding.shardings_like_params(self.abstract_state["opt_state"], abstract_params,
                                                   self.param_shardings, repl)
    self.state_shardings = {"step": repl, "params": self.param_shardings, "opt_state": opt_shardings}
    batch_sh = sharding.batch_sharding(mesh)

    train_step = mlm.make_train_step(self.model, self.tx, self.trainable, seed=config.seed, masker=self.masker,
                                     schedules=self.schedules, forget_every=forget_every,
                                     total_steps=config.total_steps, full_gradient=full_gradient)
    self.train_step = jax.jit(train_step, in_shardings=(self.state_shardings, batch_sh),
                              out_shardings=(self.state_shardings, repl), donate_argnums=(0,))
    eval_step = mlm.make_eval_step(self.model, seed=config.seed, masker=self.masker)
    self.eval_step = jax.jit(eval_step, in_shardings=(self.param_shardings, batch_sh, None), out_shardings=repl)

  def init(self, params: Any = None) -> Any:
    """A fresh state: random params, or the given host-side params placed on the mesh."""
    if params is None:
      return jax.jit(self._init_state, out_shardings=self.state_shardings)(jax.random.key(self.config.seed))
    params = jax.device_put(params, self.param_shardings)
    opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings["opt_state"])(params)
    step = jax.device_put(jnp.zeros([], jnp.int32), self.state_shardings["step"])
    return {"step": step, "params": params, "opt_state": opt_state}

  def abstract_with_shardings(self) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        self.abstract_state, self.state_shardings)


def step_flops_of(setup: Setup) -> float:
  mc, c = setup.model_config, setup.config
  return flops.mlm_step_flops(hidden=mc.hidden_size, layers=mc.num_layers, intermediate=mc.intermediate_size,
                              vocab=mc.vocab_size, batch=c.batch_size, seq_len=c.data.seq_len,
                              predictions=setup.masker.max_predictions)


def plan(config, devices: Sequence[jax.Device] | None = None) -> dict:
  """Checks a config against the devices without reading data or writing anything; returns the run's shape.

  The vocabulary size is `model.vocab_size` or, before a tokenizer exists, `data.vocab_size`.
  """
  from rewire.data.tokenizer import SpecialIds
  rconfig.validate(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  _check_run_config(config, mesh)
  vocab = config.model.vocab_size or config.data.vocab_size
  setup = Setup(config, mesh, SpecialIds(bos=0, pad=1, eos=2, unk=3, mask=vocab - 1, vocab_size=vocab))
  per_device = 0
  for a, sh in zip(jax.tree.leaves(setup.abstract_state), jax.tree.leaves(setup.state_shardings)):
    per_device += math.prod(sh.shard_shape(a.shape)) * a.dtype.itemsize
  peak = flops.peak_flops(mesh.devices.flat[0], config.peak_flops)
  return {
      "mesh": dict(mesh.shape), "devices": mesh.size, "processes": jax.process_count(),
      "device_kind": mesh.devices.flat[0].device_kind,
      "params": sum(math.prod(x.shape) for x in jax.tree.leaves(setup.abstract_state["params"])),
      "state_gib_per_device": per_device / 2**30,
      "tokens_per_step": config.batch_size * config.data.seq_len,
      "tflops_per_step": step_flops_of(setup) / 1e12,
      "peak_tflops_per_device": peak / 1e12 if peak else None,
      "forget_every": config.forget_every, "total_steps": config.total_steps,
  }


def evaluate(setup: Setup, params, valid: np.ndarray, batch_size: int, pad_id: int) -> dict[str, float]:
  """Validation MLM loss and accuracy with a fixed masking per batch (comparable across steps and runs)."""
  loss_sum = correct = count = 0.0
  nproc, pid = jax.process_count(), jax.process_index()
  for i, batch in enumerate(eval_batches(valid, batch_size, pad_id)):
    local = batch.shape[0] // nproc
    tokens = sharding.global_batch(batch[pid * local:(pid + 1) * local], setup.mesh)
    l, c, n = jax.device_get(setup.eval_step(params, tokens, np.int32(i)))
    loss_sum, correct, count = loss_sum + float(l), correct + float(c), count + float(n)
  count = max(count, 1.0)
  return {"valid_loss": loss_sum / count, "valid_accuracy": correct / count}


def train_and_evaluate(config, workdir: str, *, devices: Sequence[jax.Device] | None = None,
                       stop_after: int | None = None, log_stream=None, run_name: str | None = None) -> dict:
  """Runs (or resumes) a pretraining run in `workdir`; returns the summary that it also writes to disk.

  Args:
    config: a pretraining config (see `rewire.config.pretrain_defaults`).
    workdir: where checkpoints, metrics, plots and the tokenizer go; an existing run there is resumed.
    devices: the devices to build the mesh over (default: all).
    stop_after: stop (with a checkpoint) once this many updates are done, as a preemption would.
    log_stream: where the progress line goes (default stdout).
    run_name: the progress line's label (default: the workdir's name).
  """
  rconfig.validate(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  sharding.rules_from_config(config.mesh.rules)
  _check_run_config(config, mesh)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  is_main = jax.process_index() == 0
  ckpt = Checkpointer(ckpt_dir, keep=config.keep_checkpoints,
                      async_save=config.async_checkpoints) if has_checkpoint(ckpt_dir) else None
  _check_tokenizer_against_checkpoint(config, workdir, ckpt)
  if config.init_from:
    warm_start.adopt_model_shape(config)

  data = pretraining_data(config.data, workdir, seed=config.seed, global_batch_size=config.batch_size,
                          token_budget=config.token_budget, process_index=jax.process_index(),
                          process_count=jax.process_count(), log_stream=log_stream)
  specials = data.specials
  setup = Setup(config, mesh, specials)
  if ckpt is None:
    ckpt = Checkpointer(ckpt_dir, keep=config.keep_checkpoints, async_save=config.async_checkpoints)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    write_model_info(workdir, setup.model_config, "RobertaForMaskedLM")

  start = ckpt.latest_step()
  if start is not None:
    state, data_state = ckpt.restore(start, setup.abstract_with_shardings())
    data.train.set_state(data_state)
    summary_path = os.path.join(workdir, "summary.json")
    if start >= config.total_steps and os.path.exists(summary_path):
      ckpt.close()
      with open(summary_path) as f:
        summary = json.load(f)
      if is_main:
        print(f"[{run_name or os.path.basename(os.path.abspath(workdir))}] already complete at step {start}",
              file=log_stream, flush=True)
      return {**summary, "state": state}
  elif config.init_from:
    abstract_params = setup.abstract_state["params"]
    state, start = setup.init(warm_start.initial_params(config, abstract_params, pad_id=specials.pad)), 0
  else:
    state, start = setup.init(), 0
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"), enabled=is_main,
                         resume_step=start if start else None)
  baseline = unigram_loss(data.unigram_counts, data.valid, 4, specials.mask)
  if start == 0:
    writer.write({"step": 0, "event": "start", "unigram_loss": baseline,
                  "num_params": sum(math.prod(x.shape) for x in jax.tree.leaves(setup.abstract_state["params"])),
                  "train_tokens": data.num_train_tokens, "devices": mesh.size,
                  "mesh": dict(mesh.shape)})

  total = config.total_steps
  name = run_name or os.path.basename(os.path.abspath(workdir))
  progress = Progress(total, start, name=name, enabled=is_main, stream=log_stream)
  tokens_per_step = config.batch_size * config.data.seq_len
  step_flops = step_flops_of(setup)
  peak = flops.peak_flops(mesh.devices.flat[0], config.peak_flops)
  pending: list[tuple[int, dict]] = []
  step = start
  last_valid = None
  t_last = time.perf_counter()
  steps_since = 0

  def flush_logs():
    nonlocal pending, t_last, steps_since
    if not pending:
      return
    fetched = jax.device_get([m for _, m in pending])
    now = time.perf_counter()
    for (s, _), m in zip(pending, fetched):
      if bool(m["forgot"]):
        writer.write({"event": "forget", "step": s})
    last_step = pending[-1][0]
    rec = {"step": last_step}
    for k in ("loss", "accuracy", "grad_norm"):
      rec[k] = float(np.mean([m[k] for m in fetched]))
    for k in fetched[-1]:
      if k.startswith("lr_"):
        rec[k] = float(fetched[-1][k])
    if steps_since > 0:
      seconds = max(now - t_last, 1e-9)
      rec["tokens_per_s"] = steps_since * tokens_per_step / seconds
      rec["tokens_per_s_per_device"] = rec["tokens_per_s"] / mesh.size
      rec["tflops_per_device"] = steps_since * step_flops / seconds / mesh.size / 1e12
      if peak:
        rec["mfu"] = rec["tflops_per_device"] * 1e12 / peak
    if not all(math.isfinite(rec[k]) for k in ("loss", "grad_norm")):
      raise UserError(f"training diverged: loss {rec['loss']} at step {last_step}; lower optim.lr or "
                      f"enable optim.clip_norm (last checkpoint: {ckpt.latest_step()})")
    writer.write(rec)
    progress.log(last_step, rec)
    pending, t_last, steps_since = [], now, 0

  with _Preemption() as preempt, jax.set_mesh(mesh), nn.logical_axis_rules(setup.rules):
    while step < total:
      tokens = sharding.global_batch(next(data.train), mesh)
      state, metrics = setup.train_step(state, tokens)
      step += 1
      pending.append((step, metrics))
      if step == start + 1:
        jax.block_until_ready(metrics)  # the first step compiles; time from here on
        progress.mark_compiled(step)
        t_last = time.perf_counter()
      else:
        steps_since += 1
      stopping = preempt.requested or (stop_after is not None and step >= stop_after)
      if step % config.log_every == 0 or step == total or stopping:
        flush_logs()
      if step % config.eval_every == 0 or step == total:
        flush_logs()  # so the throughput of the steps before the evaluation is measured without it
        last_valid = evaluate(setup, state["params"], data.valid, config.batch_size, specials.pad)
        writer.write({"step": step, **last_valid})
        progress.log(step, last_valid)
        if is_main:
          plot_losses(writer.path, os.path.join(workdir, "loss.png"))
        t_last, steps_since = time.perf_counter(), 0
      if step % config.checkpoint_every == 0 or step == total or stopping:
        ckpt.save(step, state, data.train.get_state(), force=True)
      if stopping and step < total:
        break
  ckpt.wait()
  ckpt.close()

  summary = {"step": step, "finished": step >= total, "unigram_loss": baseline,
             "resets": [r["step"] for r in _events(writer.path)],
             **(last_valid or {})}
  if is_main:
    plot_losses(writer.path, os.path.join(workdir, "loss.png"))
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  summary["state"] = state
  return summary


def write_model_info(workdir: str, model_config: ModelConfig, architecture: str) -> None:
  """`model.json`: the resolved model shape (vocab size included), which later stages and exporters read."""
  with open(os.path.join(workdir, "model.json"), "w") as f:
    json.dump({"architecture": architecture, **dataclasses.asdict(model_config)}, f, indent=2)


def _events(path: str) -> list[dict]:
  from rewire.telemetry import read_records
  return [r for r in read_records(path) if r.get("event") == "forget"]
