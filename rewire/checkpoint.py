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
import os
import shutil
import time
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from rewire.errors import UserError, quiet_save_failures
from rewire.fileio import sha256_file, write_json_atomic
from rewire.optim import path_str


def _handlers() -> dict:
  # Named explicitly so that a fresh process can read metadata before it has saved anything.
  return {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}


class Checkpointer:
  def __init__(self, directory: str, *, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    # cleanup_tmp_directories: no temporary folder of a failed or killed save is left for the next run.
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                           enable_async_checkpointing=async_save)
    self._mngr = ocp.CheckpointManager(self.directory, options=options, item_handlers=_handlers())
    self._quiet = quiet_save_failures()
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
      self._wait_for_saves()  # as orbax's own `save` does first: here, to name the step that failed
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
      if not self._own_failure():  # else orbax's threads wait for the other processes: no waiting for them
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

  def _own_failure(self) -> str | None:
    """Why a save of this checkpointer failed in its background writes in this process, if one did."""
    prefix = self.directory + os.sep
    return next((why for d, why in self._quiet.failed_saves.items() if d.startswith(prefix)), None)

  def _wait_for_saves(self) -> None:
    """`wait_until_finished`, but a failure of this process's own writes is raised at once, without waiting
    for orbax's threads (after such a failure they wait for the other processes at a barrier)."""
    while self._mngr.is_saving_in_progress():
      failed = self._own_failure()
      if failed:
        raise OSError(failed)
      time.sleep(0.02)
    self._mngr.wait_until_finished()

  def wait(self) -> None:
    """Lets the saves in flight finish and seals them; UserError (one line) when one failed."""
    try:
      self._wait_for_saves()
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
    sealed or leaves no temporary folder, and orbax's threads stop, so the process exits with its one line.
    After a failed save in a job of several processes the manager stays open: the others may wait for this
    process in that save's barrier, and closing would wait with them (its `PeerWatch` stops them)."""
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
