"""The workdir contract: what every stage writes into its run directory and reads from an earlier one.

  config.json      the config the stage ran with
  model.json       the model's architecture and shape (a task model adds its task, labels and lengths)
  tokenizer.json   the tokenizer the model's ids belong to
  checkpoints/N/   orbax checkpoints: a run's train state, or params only (assembly, import, fine-tuning);
                   `load_params` reads the params of any of them
  summary.json     the stage's summary, written last: a workdir with `"finished": true` in it is complete

Every stage goes through these functions, so a later stage, the exporter and the pipeline read any
workdir the same way, whichever stage wrote it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from rewire.checkpoint import Checkpointer
from rewire.errors import UserError
from rewire.fileio import write_json_atomic

CONFIG = "config.json"
MODEL_INFO = "model.json"
TOKENIZER = "tokenizer.json"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"
# `model.json` metadata of an imported checkpoint: the special token ids its Hugging Face config names, which
# an export writes back while the model keeps that tokenizer.
HF_SPECIAL_IDS = "hf_special_ids"
SPECIAL_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


@contextlib.contextmanager
def locked(workdir: str, *, enabled: bool = True):
  """Holds an exclusive lock on `<workdir>/.lock` while a stage runs; a second process on the same
  workdir gets a one-line error instead of silently interleaving checkpoints and metrics.

  A new workdir that ends up holding nothing but the lock file (a stage that failed on bad input) is
  removed again. Only process 0 of a multi-host job takes the lock (`enabled`).
  """
  if not enabled:
    yield
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir} is a file")
  new = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    f = open(os.path.join(workdir, LOCK), "a")  # never written: a rerun leaves the workdir byte-identical
  except OSError as e:
    raise UserError(f"cannot write to workdir {workdir}: {e.strerror}") from None
  try:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      raise UserError(f"workdir {workdir} is in use by another rewire process (it holds {f.name}); wait "
                      "for that run to finish or choose another --workdir") from None
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
  finally:
    f.close()
    if new and os.listdir(workdir) == [LOCK]:
      shutil.rmtree(workdir, ignore_errors=True)


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINTS)


def write_config(workdir: str, config) -> None:
  """`config.json`: the (ml_collections) config the stage ran with, written atomically."""
  os.makedirs(workdir, exist_ok=True)
  write_json_atomic(os.path.join(workdir, CONFIG), json.loads(config.to_json_best_effort()), indent=2)


def read_model_info(workdir: str) -> dict:
  """`model.json` of a workdir; UserError when there is none."""
  path = os.path.join(workdir, MODEL_INFO)
  if not os.path.isfile(path):
    raise UserError(f"{workdir} has no {MODEL_INFO}: not a rewire workdir (import Hugging Face checkpoints "
                    f"with `python -m rewire.hf import`)")
  with open(path) as f:
    return json.load(f)


def write_model_info(workdir: str, info: dict) -> None:
  os.makedirs(workdir, exist_ok=True)
  write_json_atomic(os.path.join(workdir, MODEL_INFO), info, indent=2)


def tokenizer_path(workdir: str) -> str:
  return os.path.join(workdir, TOKENIZER)


def copy_tokenizer(source: str, workdir: str) -> None:
  """Copies a tokenizer file, or the tokenizer of workdir `source`, into `workdir`."""
  src = tokenizer_path(source) if os.path.isdir(source) else source
  if not os.path.isfile(src):
    raise UserError(f"tokenizer file not found: {src}")
  os.makedirs(workdir, exist_ok=True)
  shutil.copyfile(src, tokenizer_path(workdir))


def write_params(workdir: str, params: Any, note: dict | None = None) -> None:
  """A params-only checkpoint `checkpoints/0 = {step: 0, params}` (for workdirs no run trains further)."""
  if has_checkpoint(checkpoint_dir(workdir)):
    raise UserError(f"{workdir} already holds a model; choose a new workdir")
  os.makedirs(workdir, exist_ok=True)
  ckpt = Checkpointer(checkpoint_dir(workdir), keep=1, async_save=False)
  try:
    ckpt.save(0, {"step": np.zeros([], np.int32), "params": params}, dict(note or {}), force=True)
    ckpt.wait()
  finally:
    ckpt.close()


def write_summary(workdir: str, summary: dict) -> None:
  """`summary.json`, written atomically as a stage's last act (`finished` says whether it completed)."""
  write_json_atomic(os.path.join(workdir, SUMMARY), summary, indent=2)


def read_summary(workdir: str) -> dict | None:
  path = os.path.join(workdir, SUMMARY)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def is_complete(workdir: str) -> bool:
  """Whether the stage that writes `workdir` finished there."""
  summary = read_summary(workdir)
  return bool(summary and summary.get("finished"))


def has_checkpoint(directory: str) -> bool:
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def load_params(workdir: str, step: int | None = None, *, sharding: jax.sharding.Sharding | None = None) -> tuple[Any, int]:
  """Reads only the model parameters of a run's checkpoint (newest unless `step`); returns (params, step).

  Stages that start from an earlier stage's workdir use this: the optimizer state is not read.
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not has_checkpoint(directory):
    raise UserError(f"no checkpoint in {directory}")
  mngr = ocp.CheckpointManager(directory, item_handlers={"state": ocp.PyTreeCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
                               options=ocp.CheckpointManagerOptions(create=False))
  try:
    steps = list(mngr.all_steps())
    step = mngr.latest_step() if step is None else step
    if step not in steps:
      raise UserError(f"no checkpoint for step {step} in {directory}; available: {steps}")
    try:
      meta = mngr.item_metadata(step)["state"]
      tree = meta.tree if hasattr(meta, "tree") else meta
      has_params = "params" in tree
      if has_params:
        sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), tree["params"])
        restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=sharding), target)
        out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item={"params": target}, restore_args={"params": restore_args}, partial_restore=True)))
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
      first = (str(e).strip().splitlines() or [""])[0][:200]
      raise UserError(f"cannot read checkpoint {step} in {directory}: it is damaged ({type(e).__name__}: "
                      f"{first})") from None
    if not has_params:
      raise UserError(f"the checkpoint in {directory} holds no params")
    return out["state"]["params"], step
  finally:
    mngr.close()
