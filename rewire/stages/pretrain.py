"""The pretraining and language-adaptation stage: `train_and_evaluate(config, workdir)`.

It validates everything it can before it writes anything, prepares or opens the corpus
(`rewire.data.run_data`), builds the state abstractly and places it sharded over the mesh (`rewire.models.mlm.Setup`:
one donated train step for the whole run), resumes on its own from the newest checkpoint in
`<workdir>/checkpoints`, and hands the steps to `rewire.loop`. Process 0 writes `metrics.jsonl`, the
progress line, `loss.png` and `summary.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Sequence

import jax
from flax import linen as nn

from rewire import config as rconfig
from rewire.models import flops, heads
from rewire import loop, sharding
from rewire.stages import warm_start
from rewire import workdir as rworkdir
from rewire.checkpoint import Checkpointer, has_checkpoint
from rewire.data.run_data import pretraining_data
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.models.mlm import Setup, evaluate, step_flops_of, unigram_loss
from rewire.models.roberta import WORD_EMBEDDING
from rewire.plot import plot_losses
from rewire.telemetry import MetricsWriter, Progress, read_records



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
  if not 0.0 < config.data.mask_prob < 1.0:
    raise UserError(f"data.mask_prob must be in (0, 1), got {config.data.mask_prob}")
  if not config.optim.lr > 0:
    raise UserError(f"optim.lr must be positive, got {config.optim.lr}")
  if config.forget.until < 0 or not config.forget.init_std > 0:
    raise UserError("forget.until must be >= 0 (0: reset to the end) and forget.init_std positive")
  if config.optim.warmup_steps < 0 or config.optim.clip_norm < 0:
    raise UserError("optim.warmup_steps and optim.clip_norm must be >= 0")


# Keys a resumed run may change: cadence, bookkeeping, placement and data-preparation mechanics. Any other
# difference from the checkpoint's config.json (model shape, optimizer, forgetting, data, seed) is refused.
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
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    saved = _flat(json.load(f))
  new = _flat(json.loads(config.to_json_best_effort()))
  changed = {k: [saved.get(k), new.get(k)] for k in sorted(set(saved) | set(new)) if saved.get(k) != new.get(k)}
  refused = [k for k in changed if not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE_KEYS)]
  if refused:
    shown = "; ".join(f"{k} {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused[:4])
    more = f" (and {len(refused) - 4} more)" if len(refused) > 4 else ""
    raise UserError(f"{workdir} holds a run with other settings: {shown}{more}; resume it with its own "
                    "config (see its config.json) or choose a new --workdir")
  return changed


def _check_tokenizer_against_checkpoint(config, workdir: str, ckpt: Checkpointer | None) -> None:
  """A resumed run's tokenizer must fit its checkpoint's embedding (checked before any data is read).

  That it is the very tokenizer of the run is checked against the corpus manifest afterwards
  (`rewire.data.run_data.check_tokenizer`).
  """
  if ckpt is None or ckpt.latest_step() is None:
    return
  rows = ckpt.param_shapes(ckpt.latest_step()).get(WORD_EMBEDDING, (None,))[0]
  path = config.data.tokenizer or rworkdir.tokenizer_path(workdir)
  if rows is None or not os.path.exists(path):
    return
  size = load_tokenizer(path).get_vocab_size()
  if size != rows:
    raise UserError(f"tokenizer {path} has {size} entries but the checkpoint in {ckpt.directory} has a "
                    f"{rows}-row embedding")


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


def train_and_evaluate(config, workdir: str, *, devices: Sequence[jax.Device] | None = None,
                       stop_after: int | None = None, log_stream=None, run_name: str | None = None) -> dict:
  """Runs (or resumes) a pretraining or adaptation run in `workdir`; returns the summary it also writes.

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
  with rworkdir.locked(workdir, enabled=jax.process_index() == 0):
    return _train_and_evaluate(config, workdir, mesh, stop_after=stop_after, log_stream=log_stream,
                               run_name=run_name)


def _train_and_evaluate(config, workdir: str, mesh, *, stop_after: int | None, log_stream, run_name) -> dict:
  ckpt_dir = rworkdir.checkpoint_dir(workdir)
  is_main = jax.process_index() == 0
  ckpt = Checkpointer(ckpt_dir, keep=config.keep_checkpoints,
                      async_save=config.async_checkpoints) if has_checkpoint(ckpt_dir) else None
  if config.init_from:
    warm_start.adopt_model_shape(config)  # reads the source's model.json: before comparing configs
  changes = check_resumed_config(config, workdir) if ckpt is not None else {}
  _check_tokenizer_against_checkpoint(config, workdir, ckpt)
  data = pretraining_data(config.data, workdir, seed=config.seed, global_batch_size=config.batch_size,
                          token_budget=config.token_budget, process_index=jax.process_index(),
                          process_count=jax.process_count(), log_stream=log_stream)
  setup = Setup(config, mesh, data.specials)
  ckpt = ckpt or Checkpointer(ckpt_dir, keep=config.keep_checkpoints, async_save=config.async_checkpoints)
  if is_main:
    if changes:  # allowed changes on resume are recorded, the config.json then describes the run from here
      with open(os.path.join(workdir, "config_history.jsonl"), "a") as f:
        f.write(json.dumps({"resumed_at_step": ckpt.latest_step(), "changed": changes}) + "\n")
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    rworkdir.write_model_info(workdir, {"architecture": heads.MLM, **dataclasses.asdict(setup.model_config)})
  name = run_name or os.path.basename(os.path.abspath(workdir))

  restored = ckpt.restore_latest(setup.abstract_with_shardings(),
                                 notify=lambda line: is_main and print(line, file=sys.stderr, flush=True))
  start = restored[2] if restored else None
  if restored:
    state, data_state, _ = restored
    data.train.set_state(data_state)
    summary = rworkdir.read_summary(workdir)
    if start >= config.total_steps and summary is not None:
      ckpt.close()
      if is_main:
        print(f"[{name}] already complete at step {start}", file=log_stream, flush=True)
      return {**summary, "state": state}
  elif config.init_from:
    start = 0
    state = setup.init(warm_start.initial_params(config, setup.abstract_state["params"], pad_id=data.specials.pad))
  else:
    state, start = setup.init(), 0
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"), enabled=is_main, resume_step=start or None)
  baseline = unigram_loss(data.unigram_counts, data.valid, 4, data.specials.mask)
  if start == 0:
    writer.write({"step": 0, "event": "start", "unigram_loss": baseline,
                  "num_params": sum(math.prod(x.shape) for x in jax.tree.leaves(setup.abstract_state["params"])),
                  "train_tokens": data.num_train_tokens, "devices": mesh.size, "mesh": dict(mesh.shape)})
  result = _run(config, setup, data, state, start, ckpt, writer,
                Progress(config.total_steps, start, name=name, enabled=is_main, stream=log_stream),
                stop_after=stop_after, plot=lambda: is_main and plot_losses(writer.path, os.path.join(workdir, "loss.png")))
  summary = {"step": result.step, "finished": result.finished, "preempted": result.preempted,
             "interrupted": result.interrupted, "unigram_loss": baseline,
             "resets": [r["step"] for r in read_records(writer.path) if r.get("event") == "forget"],
             **(result.last_eval or {})}
  return {**loop.finish(workdir, summary, is_main=is_main), "state": result.state}


def _run(config, setup: Setup, data, state, start: int, ckpt: Checkpointer, writer: MetricsWriter,
         progress: Progress, *, stop_after: int | None, plot) -> loop.Result:
  mesh = setup.mesh
  throughput = loop.Throughput({"tokens": config.batch_size * config.data.seq_len}, mesh.size,
                               step_flops_of(setup), flops.peak_flops(mesh.devices.flat[0], config.peak_flops))
  run = loop.Loop(total_steps=config.total_steps, log_every=config.log_every, eval_every=config.eval_every,
                  checkpoint_every=config.checkpoint_every, writer=writer, progress=progress,
                  throughput=throughput, events={"forgot": "forget"}, on_log=ckpt.seal_finished,
                  hint=lambda: f"lower optim.lr or enable optim.clip_norm (last checkpoint: {ckpt.latest_step()})")
  periodic = []
  if config.probe_every > 0:
    from rewire.probe.stage import DuringPretraining
    periodic.append((config.probe_every, DuringPretraining(config, os.path.dirname(writer.path), setup.model_config,
                                                           mesh, is_main=jax.process_index() == 0)))
  with jax.set_mesh(mesh), nn.logical_axis_rules(setup.rules):
    result = run.run(
        state, setup.train_step, data.train, lambda batch: sharding.global_batch(batch, mesh), start=start,
        evaluate=lambda state, step: evaluate(setup, state["params"], data.valid, config.batch_size, data.specials.pad),
        after_eval=lambda *_: plot(),
        save=lambda step, state: ckpt.save(step, state, data.train.get_state(), force=True),
        stop_after=stop_after, preempted=ckpt.reached_preemption if jax.process_count() > 1 else None,
        periodic=periodic)
  ckpt.wait()
  ckpt.close()
  plot()
  return result
