"""The pretraining and language-adaptation stage: `train_and_evaluate(config, workdir)`.

It validates everything it can before it writes anything (`rewire.config`, `rewire.stages.resume`),
prepares or opens the corpus (`rewire.data.run_data`), builds the state abstractly and places it sharded
over the mesh (`rewire.stages.pretrain_setup.Setup`: one donated train step for the whole run), resumes on
its own from the newest checkpoint in `<workdir>/checkpoints`, and hands the steps to `rewire.loop`.
Process 0 writes `metrics.jsonl`, the progress line, `loss.png` and `summary.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Sequence

import jax
from flax import linen as nn

from rewire import config as rconfig
from rewire import loop, sharding
from rewire import workdir as rworkdir
from rewire.checkpoint import Checkpointer
from rewire.workdir import has_checkpoint
from rewire.data.run_data import pretraining_data
from rewire.data.tokenizer import SpecialIds
from rewire.errors import UserError
from rewire.models import flops, registry
from rewire.plot import plot_losses
from rewire.probe.during import DuringPretraining
from rewire.stages import new_vocab, resume, warm_start
from rewire.stages.pretrain_setup import Setup
from rewire.telemetry import MetricsWriter, Progress, read_records

LIVE_PLOT_S = 60.0  # the least time between two redraws of loss.png during training
CARRIED = "loop_carried"  # the checkpoint's data-state key for the loop's unlogged steps (`Loop.carry`)


def _check_placement(config, mesh) -> None:
  """The checks that need the devices or the filesystem (the config's own values are checked by its schema)."""
  shards = sharding.num_batch_shards(mesh)
  if config.batch_size % shards:
    raise UserError(f"batch_size {config.batch_size} is not divisible by the {shards} data shards "
                    f"(mesh data x fsdp)")
  sharding.rules_from_config(config.mesh.rules)
  if config.init_from and not os.path.isdir(config.init_from):
    raise UserError(f"init_from {config.init_from} does not exist")


def _check_model(config) -> None:
  """The model config's own checks (shapes, heads, dtype), before the workdir is touched: the vocabulary is
  the configured size until the tokenizer exists, with the ids every rewire tokenizer has."""
  vocab = config.model.get("vocab_size") or config.data.vocab_size
  registry.model_config_from(config, vocab, SpecialIds.layout(vocab).pad)


def plan(config, devices: Sequence[jax.Device] | None = None) -> dict:
  """Checks a config against the devices without reading data or writing anything; returns the run's shape.

  The vocabulary size is `model.vocab_size` or, before a tokenizer exists, `data.vocab_size`.
  """
  rconfig.validate(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  _check_placement(config, mesh)
  vocab = config.model.vocab_size or config.data.vocab_size
  setup = Setup(config, mesh, SpecialIds.layout(vocab))  # the ids its tokenizer will have
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
      "tflops_per_step": setup.step_flops() / 1e12,
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
  _check_placement(config, mesh)
  if config.init_from:
    warm_start.adopt_model_shape(config)  # reads the source's model.json: before any check of the model
  _check_model(config)
  with rworkdir.locked(workdir, enabled=jax.process_index() == 0):
    run = _open(config, workdir, mesh, log_stream=log_stream, run_name=run_name)
    try:
      return run.train(stop_after=stop_after)
    finally:  # every exit path, an error included, ends the checkpointer (a save in flight completes or goes)
      run.ckpt.finish()


@dataclasses.dataclass
class _Run:
  """One opened run: its config, workdir, compiled setup, data, checkpointer and metrics writer."""
  config: Any
  workdir: str
  setup: Setup
  data: Any
  ckpt: Checkpointer
  name: str
  log_stream: Any
  is_main: bool = dataclasses.field(default_factory=lambda: jax.process_index() == 0)
  plotted_at: float = dataclasses.field(default_factory=time.monotonic)
  carried: list = dataclasses.field(default_factory=list)  # the restored checkpoint's unlogged steps
  extension: dict | None = None  # the source's vocabulary size and the pieces added to it (`extend`)
  vocab_start: dict | None = None  # how the new vocabulary rows started (reinit.method, rows per kind)

  def plot(self, *, live: bool = False) -> None:
    """Draws loss.png; a `live` redraw (after an evaluation) at most once per `LIVE_PLOT_S`, since drawing
    takes about half a second and short evaluation intervals would otherwise spend it again and again."""
    if not self.is_main or (live and time.monotonic() - self.plotted_at < LIVE_PLOT_S):
      return
    plot_losses(os.path.join(self.workdir, "metrics.jsonl"), os.path.join(self.workdir, "loss.png"))
    self.plotted_at = time.monotonic()

  def initial_state(self) -> tuple[Any, int, dict | None]:
    """(state, start step, the summary of an already complete run or None), restoring when it can."""
    config, setup, is_main = self.config, self.setup, self.is_main
    restored = self.ckpt.restore_latest(setup.abstract_with_shardings(),
                                        notify=lambda line: is_main and print(line, file=sys.stderr, flush=True))
    if restored:
      state, data_state, start = restored
      self.carried = data_state.pop(CARRIED, [])
      self.data.train.set_state(data_state)
      summary = rworkdir.read_summary(self.workdir)
      return state, start, summary if start >= config.total_steps else None
    if config.init_from:
      data = self.data
      recipe = new_vocab.vocabulary_recipe(config, data.tokenizer,
                                           lambda: data.corpus.read("train", 0, data.num_train_sequences))
      if recipe is not None:
        self.vocab_start = {"method": recipe.method, **recipe.counts(),
                            **({"extension": self.extension} if self.extension else {})}
        if self.is_main:
          for note in recipe.notes:
            print(f"rewire: {note}", file=sys.stderr, flush=True)
          print(f"[{self.name}] new rows: {recipe.describe()}", file=self.log_stream, flush=True)
      params = warm_start.initial_params(config, setup.abstract_state["params"], pad_id=data.specials.pad,
                                         recipe=recipe)
      return setup.init(params), 0, None
    return setup.init(), 0, None

  def train(self, *, stop_after: int | None) -> dict:
    config, setup, data, ckpt, mesh = self.config, self.setup, self.data, self.ckpt, self.setup.mesh
    state, start, complete = self.initial_state()
    if complete is not None:
      if self.is_main:
        print(f"[{self.name}] already complete at step {start}", file=self.log_stream, flush=True)
      return {**complete, "state": state}
    writer = MetricsWriter(os.path.join(self.workdir, "metrics.jsonl"), enabled=self.is_main,
                           resume_step=start or None)
    baseline = setup.family.baseline_loss(data.unigram_counts, data.valid, data.specials)
    if start == 0:
      writer.write({"step": 0, "event": "start", "unigram_loss": baseline,
                    "num_params": sum(math.prod(x.shape) for x in jax.tree.leaves(setup.abstract_state["params"])),
                    "train_tokens": data.num_train_tokens, "devices": mesh.size, "mesh": dict(mesh.shape),
                    **({"vocab_start": self.vocab_start} if self.vocab_start else {})})
    throughput = loop.Throughput({"tokens": config.batch_size * config.data.seq_len}, mesh.size,
                                 setup.step_flops(), flops.peak_flops(mesh.devices.flat[0], config.peak_flops))
    run = loop.Loop(total_steps=config.total_steps, log_every=config.log_every, eval_every=config.eval_every,
                    checkpoint_every=config.checkpoint_every, writer=writer,
                    progress=Progress(config.total_steps, start, name=self.name, enabled=self.is_main,
                                      stream=self.log_stream),
                    throughput=throughput, events={"forgot": "forget"}, on_log=ckpt.seal_finished,
                    hint=lambda: f"lower optim.lr or enable optim.clip_norm (last checkpoint: {ckpt.newest_sealed()})")
    periodic = []
    if config.probe_every > 0:
      periodic.append((config.probe_every, DuringPretraining(config, self.workdir, setup.model_config, mesh,
                                                             is_main=self.is_main)))
    hooks = loop.Hooks(
        evaluate=lambda state, step: setup.evaluate(state["params"], data.valid, config.batch_size),
        after_eval=lambda *_: self.plot(live=True),
        save=lambda step, state: ckpt.save(step, state, {**data.train.get_state(), CARRIED: run.carry}, force=True),
        preempted=ckpt.reached_preemption if jax.process_count() > 1 else None, periodic=periodic)
    try:
      with jax.set_mesh(mesh), nn.logical_axis_rules(setup.rules):
        result = run.run(state, setup.train_step, data.train, lambda batch: sharding.global_batch(batch, mesh),
                         start=start, hooks=hooks, stop_after=stop_after, carried=self.carried)
      ckpt.wait()  # a failed last save stops the run here with its one line
    finally:
      writer.close()
    self.plot()
    records = read_records(writer.path)
    started = next((r for r in records if r.get("event") == "start"), {})
    summary = {"step": result.step, "finished": result.finished, "preempted": result.preempted,
               "interrupted": result.interrupted, "unigram_loss": baseline,
               "resets": [r["step"] for r in records if r.get("event") == "forget"],
               **({"vocab_start": started["vocab_start"]} if "vocab_start" in started else {}),
               **(result.last_eval or {})}
    return {**loop.finish(self.workdir, summary, is_main=self.is_main), "state": result.state}


def _open(config, workdir: str, mesh, *, log_stream, run_name) -> _Run:
  """Checks a resume against the workdir, opens the data, builds the setup and writes the run's files."""
  ckpt_dir = rworkdir.checkpoint_dir(workdir)
  is_main = jax.process_index() == 0
  new_ckpt = lambda: Checkpointer(ckpt_dir, keep=config.keep_checkpoints, async_save=config.async_checkpoints)
  ckpt = new_ckpt() if has_checkpoint(ckpt_dir) else None
  changes = resume.check_resumed_config(config, workdir) if ckpt is not None else {}
  resume.check_tokenizer_fits(config, workdir, ckpt, registry.run_family(config.model).word_embedding)
  data_cfg, extension = config.data, None
  if config.extend:
    data_cfg, extension = new_vocab.extended_data(config, workdir, is_main=is_main, log_stream=log_stream)
  data = pretraining_data(data_cfg, workdir, seed=config.seed, global_batch_size=config.batch_size,
                          token_budget=config.token_budget, process_index=jax.process_index(),
                          process_count=jax.process_count(), log_stream=log_stream)
  family = registry.run_family(config.model)
  setup = Setup(config, mesh, data.specials, kept_rows=new_vocab.kept_rows(config, family, data.tokenizer))
  ckpt = ckpt or new_ckpt()
  name = run_name or os.path.basename(os.path.abspath(workdir))
  if is_main:
    if extension is not None:
      print(f"[{name}] {extension.describe()}", file=log_stream or sys.stdout, flush=True)
    layout = resume.layout_change(workdir, mesh)
    if layout and ckpt.latest_step() is not None:
      print(f"rewire: resuming step {ckpt.latest_step()} on {resume.describe_layout(layout[1])} (it was saved "
            f"on {resume.describe_layout(layout[0])}); the checkpoint is resharded onto the new mesh",
            file=sys.stderr, flush=True)
      changes = {**changes, "layout": list(layout)}
    resume.write_layout(workdir, mesh)
    if changes:  # allowed changes on resume are recorded, the config.json then describes the run from here
      with open(os.path.join(workdir, "config_history.jsonl"), "a") as f:
        f.write(json.dumps({"resumed_at_step": ckpt.latest_step(), "changed": changes}) + "\n")
    rworkdir.write_config(workdir, config)
    rworkdir.write_model_info(workdir, {"architecture": setup.family.lm, **dataclasses.asdict(setup.model_config)})
  return _Run(config, workdir, setup, data, ckpt, name, log_stream,
              extension={"old_size": extension.old_size, "added": extension.added} if extension else None)
