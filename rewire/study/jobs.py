"""A small job graph runner: stage runs as child processes, several at once, each skipped when complete.

A study is dozens of independent stage runs (pretraining per variant and seed, a probe per model, ...).
On a 2-core CPU two single-core processes get more done than one process on two cores, and on an
accelerator host one process at a time is right; `workers` says how many run at once. Every job is a
(config, workdir) pair run by `rewire.stages.run` in a spawned child, with its output in `logs/<name>.log`;
a job whose workdir is complete (`summary.json`) is not run again, so an interrupted study resumes where
it stopped. A failed job stops the graph with one line naming it and its log.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import wait
from typing import Any, Callable, Sequence

from rewire import stages
from rewire import workdir as rworkdir
from rewire.errors import UserError
from rewire.telemetry import hms

PROGRESS_EVERY_S = 30.0
OVERRUN_DONE = 0.9  # a job still running is never taken to be more than this fraction done (see `eta`)


@dataclasses.dataclass
class Job:
  name: str                      # also the log file's name (slashes become '__')
  config: Any                    # a stage config (ml_collections), or None for `fn`
  workdir: str
  after: Sequence[str] = ()      # names of jobs that must finish first
  fn: Callable[[], None] | None = None  # a Python callable instead of a stage (run in the child)
  complete: Callable[[str], bool] = rworkdir.is_complete  # whether `workdir` holds the finished job
  kind: str = ""                 # jobs of one kind take about as long (the ETA's unit); "": the name's last part

  def __post_init__(self):
    self.kind = self.kind or self.name.rsplit("/", 1)[-1]

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
      stages.run(config, workdir)
  except UserError as e:
    print(f"rewire: error: {e}", file=sys.stderr, flush=True)
    raise SystemExit(2)
  finally:
    sys.stdout.flush()
    sys.stderr.flush()


def eta(finished: Sequence[tuple[str, float]], pending: Sequence[str], running: Sequence[tuple[str, float]],
        workers: int) -> float | None:
  """Seconds until every job has run, or None while no job has finished (nothing to go on).

  `finished`: (kind, seconds) of the jobs run so far; `pending`: the kinds of those not started;
  `running`: (kind, seconds so far) of those running. A job is expected to take the mean time of the
  finished jobs of its kind, or of all finished jobs if none of its kind has finished; a running job has
  that less its elapsed time left. No running job is taken to be more than OVERRUN_DONE done: one that
  outruns the expectation raises its kind's to elapsed / OVERRUN_DONE, so its remainder (and that of the
  pending jobs of its kind) grows with it instead of sticking at 0. The work left is shared by `workers`,
  but takes at least as long as its longest job.
  """
  if not finished:
    return None
  by_kind: dict[str, list[float]] = {}
  for kind, t in finished:
    by_kind.setdefault(kind, []).append(t)
  overall = sum(t for _, t in finished) / len(finished)
  expected = {kind: sum(ts) / len(ts) for kind, ts in by_kind.items()}
  for kind, elapsed in running:  # at least what a running job of the kind implies (> elapsed: never done)
    expected[kind] = max(expected.get(kind, overall), elapsed / OVERRUN_DONE)
  left = [expected.get(kind, overall) for kind in pending] + [expected[kind] - elapsed for kind, elapsed in running]
  return max(sum(left) / max(1, workers), max(left, default=0.0))


@dataclasses.dataclass
class _Running:
  proc: Any        # a multiprocessing Process
  start: float     # time.perf_counter() when it started
  core: int | None


class _Terminated(Exception):
  pass


class Runner:
  """One run of a job graph: which jobs are pending, running and done, how long each took, and the progress line."""

  def __init__(self, jobs: Sequence[Job], *, workers: int, log_dir: str, pin_cores: bool, stream):
    self.jobs = {j.name: j for j in jobs}
    self.workers, self.log_dir, self.pin_cores, self.stream = workers, log_dir, pin_cores, stream
    self.pending = [j for j in jobs if not j.is_complete()]
    self.done = set(self.jobs) - {j.name for j in self.pending}
    self.running: dict[str, _Running] = {}
    self.timings: dict[str, float] = {}  # {name: seconds} of the jobs this runner ran
    self.total = len(self.pending)
    self._ctx = multiprocessing.get_context("spawn")
    self._t0 = time.perf_counter()
    self._last_line = -math.inf

  def log_path(self, name: str) -> str:
    return os.path.join(self.log_dir, name.replace("/", "__") + ".log")

  def reap(self) -> None:
    """Moves the jobs that ended to `done`; a failed one (or one that left its workdir incomplete) raises."""
    for name, r in list(self.running.items()):
      if r.proc.exitcode is None:
        continue
      del self.running[name]
      if r.proc.exitcode != 0 or not self.jobs[name].is_complete():
        log = self.log_path(name)
        raise UserError(f"study job {name} failed (exit {r.proc.exitcode}): {_last_line(log)} -- see {log}; "
                        "rerun the same command to resume")
      self.timings[name] = time.perf_counter() - r.start
      self.done.add(name)

  def start_ready(self) -> None:
    """Starts pending jobs whose `after` are done, in order, while fewer than `workers` run."""
    free_cores = [c for c in range(self.workers) if c not in {r.core for r in self.running.values()}]
    for job in list(self.pending):
      if len(self.running) >= self.workers:
        break
      if all(d in self.done for d in job.after):
        self.pending.remove(job)
        core = free_cores.pop(0) if self.pin_cores else None
        proc = self._ctx.Process(target=_child, args=(job.config, job.workdir, self.log_path(job.name), core, job.fn),
                                 daemon=False)
        proc.start()
        self.running[job.name] = _Running(proc, time.perf_counter(), core)

  def eta(self, now: float) -> float | None:
    return eta([(self.jobs[n].kind, t) for n, t in self.timings.items()], [j.kind for j in self.pending],
               [(self.jobs[n].kind, now - r.start) for n, r in self.running.items()], self.workers)

  def progress_line(self, now: float) -> str:
    left = self.eta(now)
    return (f"[study] {len(self.timings)}/{self.total} jobs run | running: {', '.join(self.running) or '-'} | "
            f"elapsed {hms(now - self._t0)}" + ("" if left is None else f" | ETA {hms(left)}"))

  def run(self) -> dict:
    """Runs every pending job; returns `timings`. Raises ValueError on a cycle in `after`."""
    while self.pending or self.running:
      self.reap()
      self.start_ready()
      now = time.perf_counter()
      if now - self._last_line >= PROGRESS_EVERY_S or not (self.pending or self.running):
        print(self.progress_line(now), file=self.stream, flush=True)
        self._last_line = now
      if not self.running:
        if self.pending:
          raise ValueError(f"jobs {[j.name for j in self.pending]} wait for each other (a cycle in `after`)")
        break
      # Until a job ends, or it is time for a progress line.
      wait([r.proc.sentinel for r in self.running.values()], timeout=PROGRESS_EVERY_S)
    return self.timings

  def stop(self) -> None:
    """Stops the running jobs (SIGTERM: a training job saves a checkpoint and exits, as when preempted)."""
    for r in self.running.values():
      if r.proc.exitcode is None:
        r.proc.terminate()
        r.proc.join(120)


def run_jobs(jobs: Sequence[Job], *, workers: int, log_dir: str, pin_cores: bool, stream=None) -> dict:
  """Runs `jobs` respecting `after`, up to `workers` at a time; returns {name: seconds} of those run.

  SIGTERM stops the running jobs and exits 143; rerunning resumes.
  """
  stream = stream or sys.stdout
  names = {j.name for j in jobs}
  for j in jobs:
    for dep in j.after:
      if dep not in names:
        raise ValueError(f"job {j.name} waits for unknown job {dep}")
  os.makedirs(log_dir, exist_ok=True)
  runner = Runner(jobs, workers=workers, log_dir=log_dir, pin_cores=pin_cores, stream=stream)
  print(f"[study] {len(runner.done)} of {len(jobs)} jobs already complete; {runner.total} to run, "
        f"{workers} at a time", file=stream, flush=True)

  def on_sigterm(signum, frame):
    raise _Terminated()

  main_thread = threading.current_thread() is threading.main_thread()
  old = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
  try:
    return runner.run()
  except _Terminated:
    print(f"[study] SIGTERM: stopping {', '.join(runner.running) or 'nothing'} (a training job saves a "
          "checkpoint first); rerun the same command to resume", file=stream, flush=True)
    raise SystemExit(128 + signal.SIGTERM) from None
  finally:
    if main_thread:
      signal.signal(signal.SIGTERM, old)
    runner.stop()  # interrupted (Ctrl-C, SIGTERM, a failed job): stop the others


def _last_line(path: str) -> str:
  try:
    with open(path, errors="replace") as f:
      lines = [l.strip() for l in f if l.strip()]
    return lines[-1][:300] if lines else "(no output)"
  except OSError:
    return "(no log)"
