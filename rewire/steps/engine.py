"""The driver: runs a graph of steps on Ray, here or on a cluster, with a progress line and an ETA.

With no address (and no `RAY_ADDRESS`), Ray starts on this machine with `workers` CPUs (0: every core),
so the study runs as before after a plain install; with `ray_address` ("auto", "HOST:6379" or
"ray://HOST:10001") the steps go to that cluster. A step asks for its resources (`{"CPU": 1}` by default,
GPUs, or any custom resource a node was started with); steps run as soon as their inputs are done and some
node can take them, so `workers` is the machine's offer, not a pool. A step whose worker or node dies is
retried (`max_retries`; a multi-host step as a whole) and resumes from its checkpoint. A step no node can
take is named, with the missing resource, after `schedule_timeout_s`.

SIGTERM to the driver cancels the running steps (a training step saves a checkpoint, as when preempted)
and exits 143; rerunning the same command goes on.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
import uuid

from rewire.errors import UserError
from rewire.steps import graph as rgraph
from rewire.steps import hosts, status, worker
from rewire.steps.cluster import Settings, connect, missing
from rewire.steps.progress import eta
from rewire.telemetry import hms

PROGRESS_EVERY_S = 30.0
STOP_WAIT_S = 120   # after SIGTERM or a failure: how long the running steps get to save and stop


@dataclasses.dataclass
class _Attempt:
  launched: hosts.Launched
  start: float
  tries: int = 1


class _Terminated(Exception):
  pass


class Driver:
  """One run of a graph: pending, running and done steps, their timings, and the progress line."""

  def __init__(self, graph: rgraph.Graph, settings: Settings, stream=None):
    self.graph, self.settings, self.stream = graph, settings, stream or sys.stdout
    self.owner = uuid.uuid4().hex
    self.timings: dict[str, float] = {}
    self.nodes: dict[str, list[str]] = {}  # the Ray node ids each step ran on (one per host)
    self.running: dict[str, _Attempt] = {}
    self._t0 = time.perf_counter()
    self._last_line = -math.inf
    self._terminated = False
    self.waiting: set[str] = set()  # steps whose live lease another driver holds
    self._unplaceable: dict[str, float] = {}  # step -> when it was first found that no node can take it

  def say(self, line: str) -> None:
    print(f"[{self.settings.label}] {line}", file=self.stream, flush=True)

  def run(self) -> dict:
    """Runs every step that is not done; returns {name: seconds} of those it ran."""
    g, s = self.graph, self.settings
    actions = {n: g.action(n, owner=self.owner, rerun_failed=s.rerun_failed) for n in g.order}
    stopped = [n for n, a in actions.items() if a == rgraph.STOP]
    if stopped:
      raise UserError(f"{g.failed_line(stopped[0])}; fix the cause and rerun with --config.rerun_failed=True")
    self.done = {n for n, a in actions.items() if a == rgraph.SKIP}
    self.pending = [n for n in g.order if n not in self.done]
    self.total = len(self.pending)
    if not self.pending:
      self.say(f"all {len(g.order)} steps already done")
      return {}
    what = connect(s.address, s.workers)
    cpus = max((g.steps[n].resources.get("CPU", 0) for n in self.pending), default=0) or 1
    self.slots = max(1, int(self._cluster_cpus() // cpus))
    self.say(f"{len(self.done)} of {len(g.order)} steps already done; {self.total} to run on {what}")
    self._remote = self._remote_fn()
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, self._on_sigterm) if main_thread else None
    try:
      self._loop()
      return self.timings
    except _Terminated:
      self.say(f"SIGTERM: stopping {', '.join(self.running) or 'nothing'} (a training step saves a checkpoint "
               "first); rerun the same command to go on")
      raise SystemExit(128 + signal.SIGTERM) from None
    finally:
      if main_thread:
        signal.signal(signal.SIGTERM, old)
      self._stop_running()

  def _on_sigterm(self, signum, frame):
    self._terminated = True  # seen by the loop within a few seconds (raising here would break out of Ray's C code)

  @staticmethod
  def _cluster_cpus() -> float:
    import ray
    return float(ray.cluster_resources().get("CPU", 1))

  @staticmethod
  def _remote_fn():
    import ray
    return ray.remote(max_calls=1)(worker.run_step)  # each step in a worker process of its own

  def _loop(self) -> None:
    while self.pending or self.running:
      if self._terminated:
        raise _Terminated()
      self._start_ready()
      now = time.perf_counter()
      if now - self._last_line >= PROGRESS_EVERY_S:
        self.say(self.progress_line(now))
        self._last_line = now
      if not (self.pending or self.running):
        break
      self._wait(PROGRESS_EVERY_S - (time.perf_counter() - self._last_line))
    self.say(self.progress_line(time.perf_counter()))

  def _start_ready(self) -> None:
    g = self.graph
    for name in list(self.pending):
      step = g.steps[name]
      if not all(d in self.done for d in step.inputs):
        continue
      action = g.action(name, owner=self.owner, rerun_failed=True)
      if action == rgraph.SKIP:  # another driver finished it meanwhile
        self.pending.remove(name)
        self.done.add(name)
        continue
      if action == rgraph.WAIT:
        self.waiting.add(name)
        continue  # its lease is live: another driver's attempt runs it
      self.waiting.discard(name)
      lacking = missing(step.resources, step.hosts)
      if lacking:
        first = self._unplaceable.setdefault(name, time.perf_counter())
        if time.perf_counter() - first > self.settings.schedule_timeout_s:
          need = ", ".join(f"{k}={v[0]:g} (the most any node has: {v[1]:g})" for k, v in lacking.items())
          raise UserError(f"step {name} asks for {need}{f' on each of {step.hosts} nodes' if step.hosts > 1 else ''}, "
                          f"which no node of the Ray cluster offers after {self.settings.schedule_timeout_s:.0f} s; "
                          "start a node with it (ray start --resources=...) or change the step's resources")
        continue
      record = g.record(name)
      if action == rgraph.TAKE_OVER and record and record.get("owner") != self.owner:
        self.say(f"taking over {name}: its lease expired (it ran as pid {record.get('pid')} on {record.get('host')})")
      self.pending.remove(name)
      self.running[name] = _Attempt(self._launch(name), time.perf_counter())

  def _spec(self, name: str) -> dict:
    g, step = self.graph, self.graph.steps[name]
    return dict(name=name, hash=g.hashes[name], entry=step.entry, config=g.config(name), workdir=g.dirs[name],
                log=g.log(name), owner=self.owner, lease_s=self.settings.lease_s, resumes=step.resumes,
                cwd=os.getcwd())

  def _launch(self, name: str) -> hosts.Launched:
    step = self.graph.steps[name]
    res = dict(step.resources)
    options = dict(num_cpus=res.pop("CPU", 0), num_gpus=res.pop("GPU", 0), resources=res,
                   name=name, retry_exceptions=False,
                   max_retries=self.settings.max_retries if step.hosts == 1 else 0)  # a multi-host step: as a whole
    env = {**self.settings.env, **step.env}
    if env:
      options["runtime_env"] = {"env_vars": env}
    if step.hosts == 1 and not (self.settings.tpu_slice and step.kind == "pretrain"):
      return hosts.Launched([self._remote.options(**options).remote(self._spec(name))], None)
    try:
      return hosts.launch(self._remote, self._spec(name), hosts=step.hosts, resources=step.resources,
                          options=options,
                          tpu_slice=self.settings.tpu_slice, timeout_s=self.settings.schedule_timeout_s)
    except TimeoutError as e:
      raise UserError(f"step {name}: {e}") from None

  def _wait(self, timeout: float) -> None:
    import ray
    refs = [r for a in self.running.values() for r in a.launched.refs]
    if not refs:  # waiting for a lease to expire or a node to join
      time.sleep(max(0.0, min(timeout, 1.0)))
      return
    ready, _ = ray.wait(refs, num_returns=1, timeout=max(0.05, min(timeout, 5.0)))
    if ready:
      self._reap()

  def _reap(self) -> None:
    import ray
    for name, attempt in list(self.running.items()):
      ready, _ = ray.wait(attempt.launched.refs, num_returns=len(attempt.launched.refs), timeout=0)
      results, errors = [], []
      for ref in ready:
        try:
          results.append(ray.get(ref))
        except Exception as e:  # noqa: BLE001 - Ray wraps whatever the worker raised
          errors.append(e)
      if not errors and len(ready) < len(attempt.launched.refs):
        continue  # a multi-host step: some hosts still run
      del self.running[name]
      hosts.release(attempt.launched)
      if errors:
        self._failed(name, attempt, errors[0])
        continue
      self.timings[name] = max(r["seconds"] for r in results)  # the step's own time, not its time in the queue
      self.nodes[name] = [r["node"] for r in results]
      self.done.add(name)

  def _failed(self, name: str, attempt: _Attempt, error: Exception) -> None:
    import ray
    cause = getattr(error, "cause", None) or error
    step = self.graph.steps[name]
    if isinstance(cause, worker.StepFailed):
      raise UserError(f"{cause}; fix the cause and rerun with --config.rerun_failed=True") from None
    if isinstance(cause, worker.StepStopped):
      raise UserError(f"{cause}") from None
    died = isinstance(error, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                              ray.exceptions.ActorDiedError, ray.exceptions.LocalRayletDiedError,
                              ray.exceptions.TaskCancelledError, ray.exceptions.OutOfMemoryError,
                              ray.exceptions.RayTaskError))
    if died and step.hosts > 1 and attempt.tries <= self.settings.max_retries:
      self.say(f"step {name}: a host's task ended ({type(error).__name__}); the others are stopped and the step "
               f"is retried from its checkpoint ({attempt.tries} of {self.settings.max_retries} retries)")
      self.running[name] = _Attempt(self._launch(name), time.perf_counter(), attempt.tries + 1)
      return
    line = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:300]
    record = self.graph.record(name) or {}
    if record.get("state") != status.FAILED:
      status.write(self.graph.dirs[name], status.FAILED, step=name, hash=self.graph.hashes[name],
                   error=f"its worker died ({line})", log=self.graph.log(name), owner=self.owner)
    raise UserError(f"step {name} failed: its worker died after {self.settings.max_retries} retries ({line}) -- "
                    f"see {self.graph.log(name)}")

  def _stop_running(self) -> None:
    """Cancels the running steps (a KeyboardInterrupt in each: a training step saves and hands back its lease)."""
    import ray
    if not self.running:
      return
    every = [r for a in self.running.values() for r in a.launched.refs]
    _, refs = ray.wait(every, num_returns=len(every), timeout=0)
    for ref in refs:
      ray.cancel(ref, force=False)
    if refs:
      ray.wait(refs, num_returns=len(refs), timeout=STOP_WAIT_S)
    for attempt in self.running.values():
      hosts.release(attempt.launched)
    self.running.clear()

  def progress_line(self, now: float) -> str:
    """Steps run, running (their worker has started) and queued (waiting for a node), and the ETA."""
    g, wall = self.graph, time.time()
    started = {}
    for name in self.running:
      record = g.record(name) or {}
      if record.get("state") == status.RUNNING and record.get("owner") == self.owner and record.get("heartbeat"):
        started[name] = wall - float(record.get("started", wall))
    queued = [n for n in self.running if n not in started]
    left = eta([(g.steps[n].kind, t) for n, t in self.timings.items()],
               [g.steps[n].kind for n in (*self.pending, *queued)],
               [(g.steps[n].kind, t) for n, t in started.items()], max(self.slots, len(started)))
    return (f"{len(self.timings)}/{self.total} steps run | running: {', '.join(started) or '-'}"
            + (f" | queued: {len(queued)}" if queued else "")
            + (f" | waiting for another driver's lease: {', '.join(sorted(self.waiting))}" if self.waiting else "")
            + f" | elapsed {hms(now - self._t0)}"
            + ("" if left is None else f" | ETA {hms(left)}"))


def run_graph(graph: rgraph.Graph, settings: Settings, *, dry_run: bool = False, stream=None) -> dict:
  """Runs `graph` (or with `dry_run` prints what a run would do); returns {name: seconds} of the steps run."""
  stream = stream or sys.stdout
  if dry_run:
    for line in graph.table(rerun_failed=settings.rerun_failed):
      print(line, file=stream, flush=True)
    return {}
  os.makedirs(graph.root, exist_ok=True)
  try:
    return Driver(graph, settings, stream).run()
  finally:
    graph.write_index()
