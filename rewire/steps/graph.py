"""A graph of steps: their order, hashes, directories and states, what a run would do, and the dry run.

`Graph(steps, root)` checks the graph (unique names, known inputs, no cycle), orders it so that every step
comes after its inputs, and gives each step its hash and directory. `action` says what a driver does with a
step now, from its status record; the dry run prints that for every step.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Sequence

from rewire.fileio import write_json_atomic
from rewire.steps import status
from rewire.steps.step import Step, directory, log_path, resolve

# What a driver does with a step: skip it, run it, take it over (its lease expired, or this run's own
# attempt died), wait for the live attempt of another driver, or stop (it FAILED and is not to be rerun).
SKIP, RUN, TAKE_OVER, WAIT, STOP, RERUN = "skip", "run", "take over", "wait", "stop", "rerun"
INDEX = "graph.json"


class Graph:
  def __init__(self, steps: Sequence[Step], root: str):
    self.root = os.path.abspath(root)  # the steps' workers run elsewhere: they get absolute directories
    self.steps: dict[str, Step] = {}
    for s in steps:
      if s.name in self.steps:
        raise ValueError(f"two steps are named {s.name}")
      self.steps[s.name] = s
    for s in steps:
      unknown = [n for n in s.inputs if n not in self.steps]
      if unknown:
        raise ValueError(f"step {s.name} reads unknown steps {unknown}")
    self.order = self._ordered(steps)
    self.hashes: dict[str, str] = {}
    self.dirs: dict[str, str] = {}
    for name in self.order:
      self.hashes[name] = self.steps[name].hash(self.hashes)
      self.dirs[name] = directory(self.root, name, self.hashes[name])

  def _ordered(self, steps: Sequence[Step]) -> list[str]:
    """The names in the given order, each moved after its inputs (raises ValueError on a cycle)."""
    out, placed, visiting = [], set(), set()

    def visit(name: str):
      if name in placed:
        return
      if name in visiting:
        raise ValueError(f"steps wait for each other (a cycle through {name})")
      visiting.add(name)
      for dep in self.steps[name].inputs:
        visit(dep)
      visiting.discard(name)
      placed.add(name)
      out.append(name)

    for s in steps:
      visit(s.name)
    return out

  def log(self, name: str) -> str:
    return log_path(self.root, name, self.hashes[name])

  def record(self, name: str) -> dict | None:
    return status.read(self.dirs[name])

  def config(self, name: str):
    """The step's config with every reference replaced by its input's directory (a copy)."""
    config = self.steps[name].config
    if hasattr(config, "to_dict"):
      config = copy.deepcopy(config)
      _resolve_in_place(config, self.dirs)
      return config
    return resolve(config, self.dirs)

  def action(self, name: str, *, owner: str = "", rerun_failed: bool = False, now: float | None = None) -> str:
    record = self.record(name)
    state = status.state(record)
    if state == status.SUCCESS:
      return SKIP
    if state == status.FAILED:
      return RERUN if rerun_failed else STOP
    if state == status.RUNNING:
      return TAKE_OVER if record.get("owner") == owner or status.expired(record, now) else WAIT
    return RUN

  def failed_line(self, name: str) -> str:
    record = self.record(name) or {}
    return (f"step {name} failed: {record.get('error') or last_line(self.log(name))} -- see "
            f"{record.get('log') or self.log(name)}")

  def table(self, *, rerun_failed: bool = False) -> list[str]:
    """The dry run: every step, its hash, its state, and what a run would do."""
    now = time.time()
    rows = [("step", "hash", "state", "a run would", "directory")]
    for name in self.order:
      record = self.record(name)
      state = status.state(record)
      act = self.action(name, rerun_failed=rerun_failed, now=now)
      if act == WAIT:
        act = f"wait (lease held by {record.get('host')}:{record.get('pid')} for {_left(record, now)})"
      rows.append((name, self.hashes[name], state, act, self.dirs[name]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]

  def write_index(self) -> str:
    """`graph.json` in the root: every step's directory, hash, inputs and state, for tools and people."""
    path = os.path.join(self.root, INDEX)
    write_json_atomic(path, {name: {"dir": self.dirs[name], "hash": self.hashes[name],
                                    "inputs": list(self.steps[name].inputs), "kind": self.steps[name].kind,
                                    "state": status.state(self.record(name)), "log": self.log(name)}
                             for name in self.order})
    return path


def _left(record: dict, now: float) -> str:
  return f"{max(0.0, float(record['heartbeat']) + float(record['lease_s']) - now):.0f} s more"


def _resolve_in_place(config, dirs: dict[str, str]) -> None:
  for key in list(config.keys()):
    value = config[key]
    if hasattr(value, "to_dict"):
      _resolve_in_place(value, dirs)
    elif isinstance(value, (str, list, tuple)):
      new = resolve(value, dirs)
      if new != value:
        config[key] = new


def last_line(path: str) -> str:
  """The last non-empty line of a log (what a failure is named by), or a note that there is none."""
  try:
    with open(path, errors="replace") as f:
      lines = [l.strip() for l in f if l.strip()]
    return lines[-1][:300] if lines else "(no output)"
  except OSError:
    return "(no log)"

