"""Checkpoints: an orbax `CheckpointManager` holding the train state and the data-iterator state.

Saves are asynchronous and the newest `keep` are kept. Restoring takes an abstract state whose leaves carry
shardings, so a checkpoint lands directly in place on the current mesh (which may differ from the mesh
that wrote it).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from rewire.optim import path_str


def _handlers() -> dict:
  # Named explicitly so that a fresh process can read metadata before it has saved anything.
  return {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}


class Checkpointer:
  def __init__(self, directory: str, *, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._mngr = ocp.CheckpointManager(self.directory, options=options, item_handlers=_handlers())

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, step: int, state: Any, data_state: dict, *, force: bool = False) -> None:
    self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                  data=ocp.args.JsonSave(data_state)), force=force)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    out = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                           data=ocp.args.JsonRestore()))
    return out["state"], dict(out["data"])

  def param_shapes(self, step: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the saved params, by '/'-joined path, read from metadata without loading arrays."""
    meta = self._mngr.item_metadata(step)["state"]
    tree = meta.tree if hasattr(meta, "tree") else meta
    out = {}

    def visit(path, leaf):
      name = path_str(path)
      if name.startswith("params/") and hasattr(leaf, "shape"):
        out[name[len("params/"):]] = tuple(leaf.shape)

    jax.tree_util.tree_map_with_path(visit, tree)
    return out

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.close()


def has_checkpoint(directory: str) -> bool:
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def load_params(workdir: str, step: int | None = None, *, sharding: jax.sharding.Sharding | None = None) -> tuple[Any, int]:
  """Reads only the model parameters of a run's checkpoint (newest unless `step`); returns (params, step).

  Stages that start from an earlier stage's workdir use this: the optimizer state is not read.
  """
  from rewire.errors import UserError
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
