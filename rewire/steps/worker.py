"""What runs in a step's Ray worker: its log, its lease, its entry point, joined to a multi-host job if asked.

`run_step(spec)` is the one function the driver sends to Ray. The worker process is the step's own (Ray
starts it for this task and ends it after: `max_calls=1`), with the environment the step asked for. Its
stdout and stderr, and any native library's, go to the step's log under the root, which every node must
see: the root is a filesystem shared by the nodes (NFS, Lustre, a GCS or S3 mount), as the steps' outputs
must be anyway, since a step reads its inputs' directories.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import socket
import sys
import time
import traceback

from rewire.errors import UserError
from rewire.steps import status


class StepFailed(Exception):
  """A step ended with an error; its message is the one line the driver prints."""


class StepStopped(Exception):
  """A step was stopped (preempted or cancelled) before it finished; its lease was handed back."""


def entry_point(entry: str):
  module, _, name = entry.partition(":")
  return getattr(importlib.import_module(module), name)


def _redirect(log: str) -> None:
  os.makedirs(os.path.dirname(log), exist_ok=True)
  fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  sys.stdout.flush()
  sys.stderr.flush()
  os.dup2(fd, 1)
  os.dup2(fd, 2)
  os.close(fd)


def _clear(directory: str) -> None:
  """Empties a taken-over step's directory, but its status record, for a stage that restarts rather than resumes."""
  if not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    if name != status.RECORD:
      path = os.path.join(directory, name)
      shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def _node() -> str:
  """The Ray node this worker runs on ("" outside Ray)."""
  try:
    import ray
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
  except ImportError:
    return ""


def _stopped(summary) -> bool:
  return isinstance(summary, dict) and bool(summary.get("preempted") or summary.get("interrupted")
                                             or summary.get("finished") is False)


def run_step(spec: dict) -> dict:
  """Runs one step (one host's share of it, for a multi-host step); returns {"seconds", "host", "node"}.

  `spec`: name, hash, entry, config (resolved), workdir, log, owner, lease_s, resumes, cwd (the driver's
  working directory, used where this node has it: a shared filesystem), and for a
  multi-host step `distributed` (coordinator, num_processes, process_id; or {} to detect a TPU slice).
  """
  distributed = spec.get("distributed")
  process = int(distributed.get("process_id", 0)) if distributed else 0
  if os.path.isdir(spec.get("cwd", "")):
    os.chdir(spec["cwd"])  # the driver's: relative paths in configs (configs/..., prepared:data/...) mean the same
  log = spec["log"] if process == 0 else f"{spec['log']}.p{process}"
  _redirect(log)
  name, workdir = spec["name"], spec["workdir"]
  print(f"[step] {name} ({spec['hash']}) on {socket.gethostname()} pid {os.getpid()} node {_node()[:12] or '-'}"
        + (f", process {process} of {distributed.get('num_processes', '?')}" if distributed else ""), flush=True)
  lease = (status.Lease(workdir, step=name, digest=spec["hash"], owner=spec["owner"], lease_s=spec["lease_s"],
                        log=spec["log"]) if process == 0 else None)
  if lease is not None:
    previous = status.read(workdir)
    if previous is not None and not spec["resumes"]:
      _clear(workdir)  # a stage that restarts: what an earlier attempt left goes first
  t0 = time.perf_counter()
  with lease or contextlib.nullcontext():
    try:
      summary = _call(spec, distributed)
    except UserError as e:
      print(f"rewire: error: {e}", file=sys.stderr, flush=True)
      _release(lease, status.FAILED, error=str(e))
      raise StepFailed(f"step {name} failed: {e} -- see {spec['log']}") from None
    except (KeyboardInterrupt, SystemExit) as e:
      _release(lease, status.RUNNING)  # handed back at once: the next driver (or attempt) takes it over
      raise StepStopped(f"step {name} was stopped ({type(e).__name__})") from None
    except BaseException as e:
      traceback.print_exc()
      sys.stderr.flush()
      line = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
      _release(lease, status.FAILED, error=line)
      raise StepFailed(f"step {name} failed: {line} -- see {spec['log']}") from None
    if _stopped(summary):
      _release(lease, status.RUNNING)
      raise StepStopped(f"step {name} stopped before the end (preempted); it resumes when the graph is rerun")
    seconds = time.perf_counter() - t0
    _release(lease, status.SUCCESS, seconds=seconds, node=_node())
  sys.stdout.flush()
  sys.stderr.flush()
  return {"seconds": seconds, "host": socket.gethostname(), "node": _node()}


def _release(lease, state: str, **fields) -> None:
  if lease is not None:
    lease.release(state, **fields)


def _call(spec: dict, distributed: dict | None):
  fn = entry_point(spec["entry"])
  if distributed is None:
    return fn(spec["config"], spec["workdir"])
  from rewire.stages import multihost  # only a multi-host step joins a job
  multihost.join_job("on", coordinator=distributed.get("coordinator", ""),
                     num_processes=int(distributed.get("num_processes", 0)),
                     process_id=int(distributed.get("process_id", -1)))
  with multihost.PeerWatch():
    return fn(spec["config"], spec["workdir"])
