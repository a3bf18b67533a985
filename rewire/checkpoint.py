"""Checkpoints: an orbax `CheckpointManager` holding the train state and the data-iterator state.

Saves are asynchronous and the newest `keep` are kept. Restoring takes an abstract state whose leaves carry
shardings, so a checkpoint lands directly in place on the current mesh (which may differ from the mesh
that wrote it).

Every finished checkpoint is sealed: the sha256 of each of its files goes to
`<workdir>/checkpoint_checksums/<step>.json` (at the next save, or when the run waits for its saves).
`restore_latest` verifies the newest checkpoint against its seal and tries to read it; a damaged one
(truncated or missing files, flipped bytes, an emptied folder) is moved aside to
`<workdir>/damaged_checkpoints/`, never deleted, reported in one line, and the next older one is tried.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from rewire.errors import UserError
from rewire.fileio import sha256_file, write_json_atomic
from rewire.optim import path_str


class _ReportedOnce(logging.Filter):
  """Drops orbax's logs of a failed save's threads, each with its traceback (hundreds of lines for a full
  disk). The same exception reaches the next `save` or `wait`, where the run reports it in its one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    if not record.exc_info:
      return True
    if f"{os.sep}orbax{os.sep}" in record.pathname:
      return False
    # asyncio's "exception was never retrieved" of a write that orbax started and then abandoned
    tb = record.exc_info[2]
    while tb is not None:
      if f"{os.sep}orbax{os.sep}" in tb.tb_frame.f_code.co_filename:
        return False
      tb = tb.tb_next
    return True


_REPORTED_ONCE = _ReportedOnce()


def _quiet_closed_loop_callbacks() -> None:
  """Wraps `sys.unraisablehook`: a failed save's remaining writes complete after orbax closed their event
  loop, and each completion's callback raises "Event loop is closed" where nothing can catch it. Those are
  dropped (the save's own error is reported); anything else goes to the hook that was there."""
  previous = sys.unraisablehook
  if getattr(previous, "rewire_quiet", False):
    return

  def hook(unraisable) -> None:
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
      return
    previous(unraisable)

  hook.rewire_quiet = True
  sys.unraisablehook = hook


def _handlers() -> dict:
  # Named explicitly so that a fresh process can read metadata before it has saved anything.
  return {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}


class Checkpointer:
  def __init__(self, directory: str, *, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    # cleanup_tmp_directories: a save that failed or was killed leaves no temporary folder behind for the
    # next run to trip on.
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                           enable_async_checkpointing=async_save)
    self._mngr = ocp.CheckpointManager(self.directory, options=options, item_handlers=_handlers())
    for logger in ("absl", "asyncio"):  # once: a filter is added to a logger only once
      logging.getLogger(logger).addFilter(_REPORTED_ONCE)
    _quiet_closed_loop_callbacks()
    # The manager removes those folders in a background thread. Waiting for it here means a process that
    # stops right after opening (a refused resume: one error line, exit status 2) never exits while that
    # thread still runs, which would print the thread's interpreter-shutdown traceback after the error line.
    cleanup = getattr(self._mngr, "_cleanup_tmp_directory_future", None)
    if cleanup is not None:
      cleanup.result()

    self._async = async_save
    self._closed = False
    self._requested: int | None = None  # the newest step whose save was started
    self._save_failed = False  # a save failed and was reported: the run is stopping
    root = os.path.dirname(self.directory)
    self.sums_dir = os.path.join(root, "checkpoint_checksums")
    self.damaged_dir = os.path.join(root, "damaged_checkpoints")
    if jax.process_index() == 0 and not self._mngr.all_steps():
      os.makedirs(self.sums_dir, exist_ok=True)  # a run that seals from its first checkpoint on

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def reached_preemption(self, step: int) -> bool:
    """Whether every process of the job is to save and stop at `step` (JAX's preemption sync point: true on
    all of them at the same step once any one was sent SIGTERM)."""
    return self._mngr.reached_preemption(step)

  def save(self, step: int, state: Any, data_state: dict, *, force: bool = False) -> None:
    """Starts saving `step`; UserError when this save, or the previous background one, failed."""
    try:
      self._mngr.wait_until_finished()  # as orbax's own `save` does first: here, to name the step that failed
    except Exception as e:
      self._failed(self._requested if self._requested is not None else step, e)
    self.seal_finished()
    stale = os.path.join(self.sums_dir, f"{step}.json")
    if jax.process_index() == 0 and os.path.exists(stale):
      os.remove(stale)  # a seal left by an earlier checkpoint of this step number
    try:
      self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data_state)), force=force)
    except Exception as e:  # a full disk, a vanished filesystem, ...
      self._failed(step, e)
    self._requested = step
    if not self._async:
      self.seal_finished()

  def _failed(self, step: int, error: Exception | None) -> None:
    self._save_failed = True
    try:
      self._mngr.wait_until_finished()  # earlier saves still in flight complete, so they stay usable
    except Exception:  # their own failure is reported below with this one
      pass
    for name in os.listdir(self.directory) if os.path.isdir(self.directory) else []:
      if name.startswith(f"{step}.") and "tmp" in name:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
    try:
      self._seal_finalized()
    except OSError:  # the full disk may not take a seal either: that checkpoint is then not named
      pass
    why = f" ({type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:160]})" if error else ""
    intact = {s for s in self._mngr.all_steps() if s != step}
    if jax.process_index() == 0:  # the process that seals names only what it sealed: a resume starts there
      intact &= self._sealed_steps()
    raise UserError(f"saving checkpoint {step} in {self.directory} failed{why}; is the disk full? The run "
                    f"stopped; " + (f"checkpoint {max(intact)} is intact" if intact else "no checkpoint is kept"))

  def seal_finished(self) -> None:
    """Writes the checksums of every finished checkpoint that has none yet (process 0); UserError when the
    newest save failed in the background.

    `all_steps` lists only finalised checkpoints (orbax renames a save's temporary folder when it is
    complete), so this is safe while the next save is still being written.
    """
    if jax.process_index() != 0:
      return
    if self._requested is not None and not self._mngr.is_saving_in_progress() and \
        self._requested not in self._mngr.all_steps():
      error = None
      try:
        self._mngr.check_for_errors()
      except Exception as e:  # the background save's own error, if orbax kept it
        error = e
      self._failed(self._requested, error)
    self._seal_finalized()

  def _seal_finalized(self) -> None:
    if jax.process_index() != 0:
      return
    steps = set(self._mngr.all_steps())
    for step in self._sealed_steps() - steps:
      os.remove(os.path.join(self.sums_dir, f"{step}.json"))  # its checkpoint was rotated out (max_to_keep)
    for step in sorted(steps):
      path = os.path.join(self.sums_dir, f"{step}.json")
      step_dir = os.path.join(self.directory, str(step))
      if not os.path.exists(path) and os.path.isdir(step_dir):
        try:
          hashes = _file_hashes(step_dir)
        except FileNotFoundError:  # rotated out while being read
          continue
        if not hashes:
          continue
        os.makedirs(self.sums_dir, exist_ok=True)
        write_json_atomic(path, hashes, indent=None)

  def damage(self, step: int) -> str | None:
    """Why checkpoint `step` does not match its seal (None: it matches, or it has no seal yet)."""
    path = os.path.join(self.sums_dir, f"{step}.json")
    if not os.path.isfile(path):
      return None
    with open(path) as f:
      want = json.load(f)
    if not want:
      return "its checksum file is empty"
    got = _file_hashes(os.path.join(self.directory, str(step)))
    for name in sorted(want):
      if name not in got:
        return f"{name} is missing"
      if got[name] != want[name]:
        return f"{name} differs from its checksum"
    return None

  def restore_latest(self, abstract_state: Any, *, notify: Callable[[str], None]) -> tuple[Any, dict, int] | None:
    """The newest intact checkpoint as (state, data_state, step), setting damaged ones aside; None if none."""
    steps = sorted(self._mngr.all_steps(), reverse=True)
    # Once a run seals its checkpoints, an unsealed one (killed between its save and its seal) cannot be
    # verified: it is set aside like a damaged one and the newest sealed one is used (its few steps are
    # recomputed, bit-identically). Workdirs without any seal (older rewire versions) are read as they are.
    sealing = os.path.isdir(self.sums_dir)
    for step in steps:
      if sealing and not os.path.exists(os.path.join(self.sums_dir, f"{step}.json")):
        reason = "it has no checksums (the run stopped before sealing it), so it cannot be verified"
      else:
        reason = self.damage(step)
      if reason is None:
        try:
          state, data_state = self.restore(step, abstract_state)
          return state, data_state, step
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
          reason = f"unreadable ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]})"
      aside = self._set_aside(step)
      older = [s for s in self._mngr.all_steps() if s < step]
      notify(f"rewire: checkpoint {step} in {self.directory} is damaged: {reason}; kept it aside in {aside}; "
             + (f"trying checkpoint {max(older)}" if older else "no older checkpoint: starting afresh"))
    return None

  def _set_aside(self, step: int) -> str:
    aside = os.path.join(self.damaged_dir, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_index() == 0:
      os.makedirs(self.damaged_dir, exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), aside)
      sums = os.path.join(self.sums_dir, f"{step}.json")
      if os.path.exists(sums):
        shutil.move(sums, os.path.join(aside + ".checksums.json"))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"rewire-checkpoint-aside-{step}")
    self._mngr.reload()
    return aside

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    out = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                           data=ocp.args.JsonRestore()))
    return out["state"], dict(out["data"])

  def param_shapes(self, step: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the saved params, by '/'-joined path, read from metadata without loading arrays ({} if
    the metadata is unreadable: `restore_latest` deals with a damaged checkpoint)."""
    try:
      meta = self._mngr.item_metadata(step)["state"]
    except Exception:  # damaged metadata
      return {}
    tree = meta.tree if hasattr(meta, "tree") else meta
    if not isinstance(tree, dict):
      return {}
    out = {}

    def visit(path, leaf):
      name = path_str(path)
      if name.startswith("params/") and hasattr(leaf, "shape"):
        out[name[len("params/"):]] = tuple(leaf.shape)

    jax.tree_util.tree_map_with_path(visit, tree)
    return out

  def wait(self) -> None:
    """Lets the saves in flight finish and seals them; UserError (one line) when one failed."""
    try:
      self._mngr.wait_until_finished()
    except Exception as e:  # a save that failed in the background (orbax re-raises its error here)
      self._failed(self._requested, e)
    self.seal_finished()

  def close(self) -> None:
    self._mngr.close()

  def _sealed_steps(self) -> set[int]:
    """The steps that have a seal in `checkpoint_checksums/`."""
    names = os.listdir(self.sums_dir) if os.path.isdir(self.sums_dir) else []
    return {int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()}

  def _settle(self) -> None:
    """Lets any save in flight finish and seals it; a failed one has had its temporary folder removed
    (`_failed`), and the error that stopped the run is the one reported."""
    try:
      self.wait()
    except UserError:
      pass

  def newest_sealed(self) -> int | None:
    """The newest checkpoint that is finished and sealed, after letting any save in flight finish (what an
    error line may name: a run that stops resumes from it)."""
    self._settle()
    steps = set(self._mngr.all_steps())  # finalised on every process once `wait` returned
    if jax.process_index() == 0:  # the process that seals: only what it sealed
      steps &= self._sealed_steps()
    return max(steps) if steps else None

  def finish(self) -> None:
    """Ends the checkpointer on any exit path, an error included: a save in flight either completes and is
    sealed or leaves no temporary folder, and orbax's threads stop, so the process exits with its one line
    instead of hanging in a save's barrier or printing the threads' shutdown tracebacks.

    After a failed save in a job of several processes the manager is left open: the other processes may be
    waiting for this one in that save's barrier, and closing would wait with them. The process is about
    to exit, and its `PeerWatch` stops the others with its error line.
    """
    if self._closed:
      return
    self._closed = True
    try:
      self._settle()
    finally:
      if not (self._save_failed and jax.process_count() > 1):
        try:
          self._mngr.close()
        except Exception:  # the failed save's error again: it was reported
          if not self._save_failed:
            raise


def _file_hashes(directory: str) -> dict[str, str]:
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, directory)] = sha256_file(path)
  return out


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
