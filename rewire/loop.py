"""One training loop for every stage: steps, metrics, evaluation, checkpoints, preemption, the summary.

A stage builds a jitted, donated `train_step(state, batch) -> (state, metrics)`, a batch iterator and
its callbacks, and hands them to `Loop.run`, in the spirit of the Flax examples' `train_and_evaluate`.
The loop owns everything around the step:

* metrics: device values are fetched only every `log_every` steps (no host sync per step); `lr_*` keys are
  reported at the interval's last step, event flags (e.g. `forgot`) become event records, the rest are
  averaged; throughput (per second, per device, TFLOP/s and MFU when FLOPs are known) is measured without
  the first step's compilation and without evaluation time;
* divergence: a non-finite loss or gradient norm stops the run with one line, and no checkpoint is written
  from a state after a step whose `finite` flag is false;
* evaluation every `eval_every` steps and at the end; checkpoints every `checkpoint_every` steps, at the
  end and when stopping;
* preemption: SIGTERM (what TPU/GPU schedulers send) saves at the next step and returns. A stop between two
  log steps writes no record of its own: every checkpoint holds the per-step metrics of the steps since
  the last record (`carried`), and a run resumed from it averages them with the rest of the interval, so
  its `metrics.jsonl` reads exactly like an uninterrupted run's, whether it stopped or was killed;
* the progress line with its ETA, and `summary.json` (through `rewire.workdir`) when the stage finishes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np

from rewire import workdir as rworkdir
from rewire.errors import UserError
from rewire.telemetry import MetricsWriter, Progress


class Preemption:
  """Turns SIGTERM, and a first Ctrl-C, into a request to save and exit at the next step.

  `signal_name` says which one came ("SIGTERM" or "SIGINT"); a second Ctrl-C interrupts at once.

  In a job of several processes, SIGTERM is left to JAX's preemption service, which tells every process
  (`Hooks.preempted`, orbax's `reached_preemption`) to stop at the same step however few of them were
  signalled; a Ctrl-C there is turned into a SIGTERM of this process, so that it takes the same path. A
  process that stopped alone would leave the others waiting in a collective for ever.
  """

  def __init__(self, *, multiprocess: bool = False):
    self.requested = False
    self.signal_name = ""
    self.multiprocess = multiprocess
    self._old: dict = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in ((signal.SIGINT,) if self.multiprocess else (signal.SIGTERM, signal.SIGINT)):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    if signum == signal.SIGINT and self.requested:
      raise KeyboardInterrupt
    self.requested = True
    if self.multiprocess:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier: every process stops together
      return
    self.signal_name = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


@dataclasses.dataclass(frozen=True)
class Throughput:
  """What one step processes, for the per-second figures: `units` like {"tokens": B*L} or {"examples": B}."""
  units: Mapping[str, int]
  num_devices: int = 1
  step_flops: float = 0.0
  peak_flops: float | None = None

  def record(self, steps: int, seconds: float) -> dict[str, float]:
    seconds = max(seconds, 1e-9)
    rec: dict[str, float] = {}
    for unit, per_step in self.units.items():
      rec[f"{unit}_per_s"] = steps * per_step / seconds
      rec[f"{unit}_per_s_per_device"] = rec[f"{unit}_per_s"] / self.num_devices
    if self.step_flops:
      rec["tflops_per_device"] = steps * self.step_flops / seconds / self.num_devices / 1e12
      if self.peak_flops:
        rec["mfu"] = rec["tflops_per_device"] * 1e12 / self.peak_flops
    return rec


@dataclasses.dataclass
class Result:
  state: Any
  step: int
  last_eval: dict | None
  finished: bool
  preempted: bool = False   # stopped by SIGTERM (or the multi-host preemption sync point)
  interrupted: bool = False  # stopped by Ctrl-C (after saving)


@dataclasses.dataclass(frozen=True)
class Hooks:
  """What a stage plugs into the loop; every hook is optional."""
  evaluate: Callable[[Any, int], dict] | None = None    # (state, step) -> metrics, every eval_every and at the end
  after_eval: Callable[[int, Any, dict], None] | None = None  # (step, state, metrics), e.g. keep the best
  save: Callable[[int, Any], None] | None = None        # (step, state): a checkpoint
  extra: Callable[[int], dict] = lambda step: {}        # fields added to every record (e.g. the epoch)
  # (every, fn) pairs: fn(step, state) after every `every`-th update (after the evaluation, before the
  # checkpoint), e.g. a plasticity probe; it must not change `state`.
  periodic: Sequence[tuple[int, Callable[[int, Any], None]]] = ()
  # Replaces the local SIGTERM flag: a multi-host job passes orbax's `reached_preemption`, so that every
  # host stops at the same step.
  preempted: Callable[[int], bool] | None = None


@dataclasses.dataclass
class Loop:
  """The cadence and the sinks of one run (see the module docstring)."""
  total_steps: int
  log_every: int
  eval_every: int                     # 0: evaluate only at the end
  checkpoint_every: int               # 0: no periodic checkpoints
  writer: MetricsWriter
  progress: Progress
  throughput: Throughput
  events: Mapping[str, str] = dataclasses.field(default_factory=dict)  # metric flag -> event name
  what: str = "training"
  hint: Callable[[], str] = lambda: "lower optim.lr"
  on_log: Callable[[], None] = lambda: None  # after every metrics flush (e.g. sealing finished checkpoints)

  def run(self, state: Any, train_step: Callable, batches: Iterator, place: Callable, *, start: int = 0,
          hooks: Hooks = Hooks(), stop_after: int | None = None, carried: Sequence[dict] = ()) -> Result:
    """Steps from `start` to `total_steps` (or until preempted / `stop_after`), calling the stage's `hooks`.

    A `finite` metric (the step's loss, gradient norm and new params all finite) is read with the other
    metrics at each flush, and for the steps since the last flush before a checkpoint; no checkpoint is
    written from a state after a non-finite step. `carried`: the stopped run's unlogged steps (`carry`).
    """
    self._pending: list[tuple[int, Any]] = [(c["step"], _from_json(c["metrics"])) for c in carried]
    self.carry: list[dict] = []  # the unflushed steps at the newest checkpoint, saved with it
    self._finite = True  # every flushed step so far had a finite state
    self._timed_steps, self._t_last = 0, time.perf_counter()
    step, last_eval, total = start, None, self.total_steps
    with Preemption(multiprocess=hooks.preempted is not None) as preempt:
      while step < total:
        state, metrics = train_step(state, place(next(batches)))
        step += 1
        self._pending.append((step, metrics))
        if step == start + 1:
          jax.block_until_ready(metrics)  # the first step compiles; time from here on
          self.progress.mark_compiled(step)
          self._t_last = time.perf_counter()
        else:
          self._timed_steps += 1
        signalled = hooks.preempted(step) if hooks.preempted is not None else preempt.requested
        stopping = signalled or (stop_after is not None and step >= stop_after)
        if step % self.log_every == 0 or step == total:
          self.flush(hooks.extra(step))
        if hooks.evaluate is not None and ((self.eval_every and step % self.eval_every == 0) or step == total):
          self.flush(hooks.extra(step))  # so the steps before the evaluation are timed without it
          last_eval = {**hooks.extra(step), **hooks.evaluate(state, step)}
          self.writer.write({"step": step, **last_eval})
          self.progress.log(step, last_eval)
          if hooks.after_eval is not None:
            hooks.after_eval(step, state, last_eval)
          self._t_last, self._timed_steps = time.perf_counter(), 0
        for every, fn in hooks.periodic:
          if every and step % every == 0:
            self.flush(hooks.extra(step))
            fn(step, state)
            self._t_last, self._timed_steps = time.perf_counter(), 0
        if hooks.save is not None and ((self.checkpoint_every and step % self.checkpoint_every == 0)
                                 or step == total or stopping):
          fetched = jax.device_get([m for _, m in self._pending])  # a sync at checkpoint cadence only
          if not (self._finite and all(bool(m.get("finite", True)) for m in fetched)):
            self.flush(hooks.extra(step))
            raise UserError(f"{self.what} diverged by step {step}: the state is not finite, so no checkpoint "
                            f"was written from it; {self.hint()}")
          # The unflushed steps go into the checkpoint: a run resumed from it averages them into its next
          # record and writes their events then, as this run does if it goes on.
          self.carry = [{"step": s, "metrics": _to_json(m)} for (s, _), m in zip(self._pending, fetched)]
          hooks.save(step, state)
        if stopping and step < total:
          break
    stopped = stopping and step < total and signalled
    return Result(state=state, step=step, last_eval=last_eval, finished=step >= total,
                  preempted=stopped and preempt.signal_name != "SIGINT",
                  interrupted=stopped and preempt.signal_name == "SIGINT")

  def flush(self, extra: dict) -> None:
    """Fetches the pending metrics, writes one averaged record (and the events), logs the progress line."""
    if not self._pending:
      return
    fetched = jax.device_get([m for _, m in self._pending])
    now = time.perf_counter()
    self._finite = self._finite and all(bool(m.get("finite", True)) for m in fetched)
    for (s, _), m in zip(self._pending, fetched):
      for flag, event in self.events.items():
        if bool(m[flag]):
          self.writer.write({"event": event, "step": s})
    last_step = self._pending[-1][0]
    rec: dict[str, Any] = {"step": last_step, **extra}
    for k in fetched[-1]:
      if k.startswith("lr_"):
        rec[k] = float(fetched[-1][k])
      elif k not in self.events and k != "finite":
        rec[k] = float(np.mean([m[k] for m in fetched]))
    if self._timed_steps > 0:
      rec.update(self.throughput.record(self._timed_steps, now - self._t_last))
    for k in ("loss", "grad_norm"):
      if k in rec and not math.isfinite(rec[k]):
        raise UserError(f"{self.what} diverged: {k} {rec[k]} at step {last_step}; {self.hint()}")
    self.writer.write(rec)
    self.progress.log(last_step, rec)
    self.on_log()
    self._pending, self._t_last, self._timed_steps = [], time.perf_counter(), 0


def _to_json(metrics: dict) -> dict:
  """Host metric scalars as JSON: {key: [value, dtype]} (a float32 goes through a float exactly)."""
  return {k: [np.asarray(v).item(), np.asarray(v).dtype.str] for k, v in metrics.items()}


def _from_json(metrics: dict) -> dict:
  return {k: np.asarray(v, dtype=np.dtype(dtype)) for k, (v, dtype) in metrics.items()}


def finish(workdir: str, summary: dict, *, is_main: bool) -> dict:
  """Writes `summary.json` (process 0) as the stage's last act; returns the summary."""
  if is_main:
    rworkdir.write_summary(workdir, summary)
  return summary
