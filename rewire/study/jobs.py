"""A small job graph runner: stage runs as child processes, several at once, each skipped when complete.

A study is dozens of independent stage runs (pretraining per variant and seed, a probe per model, ...).
On a 2-core CPU two single-core processes get more done than one process on two cores, and on an
accelerator host one process at a time is right; `workers` says how many run at once. Every job is a
(config, workdir) pair run by `rewire.main.run` in a spawned child, with its output in `logs/<name>.log`;
a job whose workdir is complete (`summary.json`) is not run again, so an interrupted study resumes where
it stopped. A failed job stops the graph with one line naming it and its log.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Sequence

from rewire import workdir as rworkdir
from rewire.errors import UserError
from rewire.telemetry import hms


@dataclasses.dataclass
class Job:
  name: str                      # also the log file's name (slashes become '__')
  config: Any                    # a stage config (ml_collections), or None for `fn`
  workdir: str
  after: Sequence[str] = ()      # names of jobs that must finish first
  fn: Callable[[], None] | None = None  # a Python callable instead of a stage (run in the child)
  complete: Callable[[str], bool] = rworkdir.is_complete  # whether `workdir` holds the finished job

  def is_complete(self) -> bool:
    return self.complete(self.workdir)


def _child(config, workdir: str, log_path: str, core: int | None, fn) -> None:
  if core is not None and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {core % (os.cpu_count() or 1)})
  fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(fd, 1)  # the child's stdout and stderr (and any native library's) go to the job's log
  os.dup2(fd, 2)
  os.close(fd)
  try:
    if fn is not None:
      fn()
    else:
      from rewire.stages import run
      run(config, workdir)
  except BaseException as e:
    from rewire.errors import UserError
    if isinstance(e, UserError):
      print(f"rewire: error: {e}", file=sys.stderr, flush=True)
      raise SystemExit(2)
    raise
  finally:
    sys.stdout.flush()
    sys.stderr.flush()


def run_jobs(jobs: Sequence[Job], *, workers: int, log_dir: str, pin_cores: bool, stream=None) -> dict:
  """Runs `jobs` respecting `after`, up to `workers` at a time; returns {name: seconds} of those run."""
  stream = stream or sys.stdout
  names = {j.name for j in jobs}
  for j in jobs:
    for dep in j.after:
      if dep not in names:
        raise ValueError(f"job {j.name} waits for unknown job {dep}")
  os.makedirs(log_dir, exist_ok=True)
  ctx = multiprocessing.get_context("spawn")
  pending = [j for j in jobs if not j.is_complete()]
  done = {j.name for j in jobs} - {j.name for j in pending}
  running: dict[str, tuple[Any, float, int | None]] = {}
  timings: dict[str, float] = {}
  total = len(pending)
  print(f"[study] {len(done)} of {len(jobs)} jobs already complete; {total} to run, {workers} at a time",
        file=stream, flush=True)
  def on_sigterm(signum, frame):
    raise _Terminated()

  main_thread = threading.current_thread() is threading.main_thread()
  old = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
  try:
    _loop(jobs, pending, running, done, timings, ctx, workers, log_dir, pin_cores, total, stream)
  except _Terminated:
    print(f"[study] SIGTERM: stopping {', '.join(running) or 'nothing'} (a training job saves a checkpoint "
          "first); rerun the same command to resume", file=stream, flush=True)
    raise SystemExit(128 + signal.SIGTERM) from None
  finally:
    if main_thread:
      signal.signal(signal.SIGTERM, old)
    for proc, _, _ in running.values():  # interrupted (Ctrl-C, SIGTERM, a failed job): stop the others
      if proc.exitcode is None:
        proc.terminate()  # SIGTERM: a training job saves and exits, as when preempted
        proc.join(120)
  return timings


class _Terminated(Exception):
  pass


def _loop(jobs, pending, running, done, timings, ctx, workers, log_dir, pin_cores, total, stream) -> None:
  from multiprocessing.connection import wait
  t0, last_line = time.perf_counter(), 0.0
  while pending or running:
    for name, (proc, start, core) in list(running.items()):
      if proc.exitcode is None:
        continue
      del running[name]
      job = next(j for j in jobs if j.name == name)
      log = os.path.join(log_dir, name.replace("/", "__") + ".log")
      if proc.exitcode != 0 or not job.is_complete():
        last = _last_line(log)
        raise UserError(f"study job {name} failed (exit {proc.exitcode}): {last} -- see {log}; rerun the "
                        "same command to resume")
      timings[name] = time.perf_counter() - start
      done.add(name)
    free_cores = [c for c in range(workers) if c not in {core for _, _, core in running.values()}]
    for job in list(pending):
      if len(running) >= workers:
        break
      if all(d in done for d in job.after):
        pending.remove(job)
        core = free_cores.pop(0) if pin_cores else None
        log = os.path.join(log_dir, job.name.replace("/", "__") + ".log")
        proc = ctx.Process(target=_child, args=(job.config, job.workdir, log, core, job.fn), daemon=False)
        proc.start()
        running[job.name] = (proc, time.perf_counter(), core)
    now = time.perf_counter()
    if now - last_line > 30 or not (pending or running):
      finished = len(timings)
      eta = ""
      if finished:
        left = [j.name for j in pending] + list(running)
        eta = f" | ETA {hms(_eta(timings, left, {n: now - r[1] for n, r in running.items()}, workers))}"
      print(f"[study] {finished}/{total} jobs run | running: {', '.join(running) or '-'} | "
            f"elapsed {hms(now - t0)}{eta}", file=stream, flush=True)
      last_line = now
    if not running:
      if pending:
        raise ValueError(f"jobs {[j.name for j in pending]} wait for each other (a cycle in `after`)")
      break
    wait([proc.sentinel for proc, _, _ in running.values()], timeout=30)  # a job ends, or a progress line


def _kind(name: str) -> str:
  return name.rsplit("/", 1)[-1]


def _eta(timings: dict, left: Sequence[str], elapsed: dict, workers: int) -> float:
  """Seconds left: each remaining job costs the mean time of finished jobs of its kind (the part after the
  last '/'), or of all finished jobs if none of its kind has finished, less what a running one has done."""
  by_kind: dict[str, list[float]] = {}
  for name, t in timings.items():
    by_kind.setdefault(_kind(name), []).append(t)
  overall = sum(timings.values()) / len(timings)
  cost = 0.0
  for name in left:
    ts = by_kind.get(_kind(name))
    cost += max(0.0, (sum(ts) / len(ts) if ts else overall) - elapsed.get(name, 0.0))
  return cost / max(1, workers)


def _last_line(path: str) -> str:
  try:
    with open(path, errors="replace") as f:
      lines = [l.strip() for l in f if l.strip()]
    return lines[-1][:300] if lines else "(no output)"
  except OSError:
    return "(no log)"
