"""A step's status record, `step.json` in its directory, written atomically (a temporary file and a rename).

    RUNNING  an attempt holds the step: its owner (the driver run that sent it), host, pid, and a heartbeat
             refreshed every `lease_s / 4`; once the heartbeat is older than `lease_s` the lease has expired
             (the worker, its node or its driver died) and any driver may take the step over
    SUCCESS  the step finished; it is skipped
    FAILED   the step raised; the graph stops, naming it and its `log`, until it is rerun on purpose

Leases compare wall clocks of different machines: keep the nodes' clocks in sync (NTP), and `lease_s` far
above their skew.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from rewire.fileio import write_json_atomic

RECORD = "step.json"
RUNNING, SUCCESS, FAILED = "RUNNING", "SUCCESS", "FAILED"
PENDING = "PENDING"  # no record yet (never written: only what the driver calls a step without one)


def path(directory: str) -> str:
  return os.path.join(directory, RECORD)


def read(directory: str) -> dict | None:
  """The record, or None if the step never started (or its record is unreadable)."""
  try:
    with open(path(directory)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def state(record: dict | None) -> str:
  return record["state"] if record else PENDING


def expired(record: dict, now: float | None = None) -> bool:
  """Whether a RUNNING record's lease has run out."""
  return (now if now is not None else time.time()) > float(record["heartbeat"]) + float(record["lease_s"])


def write(directory: str, state_: str, **fields) -> dict:
  os.makedirs(directory, exist_ok=True)
  record = {"state": state_, "updated": time.time(), **fields}
  write_json_atomic(path(directory), record)
  return record


class Lease:
  """Holds a step RUNNING while its attempt runs: writes the record, then refreshes its heartbeat from a
  thread until `release` writes the outcome (SUCCESS, FAILED, or an expired RUNNING to hand it back)."""

  def __init__(self, directory: str, *, step: str, digest: str, owner: str, lease_s: float, log: str):
    self.directory, self.lease_s = directory, float(lease_s)
    self.fields = dict(step=step, hash=digest, owner=owner, lease_s=self.lease_s, log=log,
                       host=socket.gethostname(), pid=os.getpid(), started=time.time())
    self._stop = threading.Event()
    self._lock = threading.Lock()
    self._thread = threading.Thread(target=self._beat, name="rewire-step-heartbeat", daemon=True)

  def _write_running(self, heartbeat: float) -> None:
    with self._lock:
      if not self._stop.is_set():
        write(self.directory, RUNNING, heartbeat=heartbeat, **self.fields)

  def _beat(self) -> None:
    while not self._stop.wait(self.lease_s / 4):
      self._write_running(time.time())

  def __enter__(self) -> "Lease":
    self._write_running(time.time())
    self._thread.start()
    return self

  def release(self, state_: str, **fields) -> None:
    """Stops the heartbeat and writes the outcome (RUNNING here hands the step back: an expired lease)."""
    with self._lock:
      self._stop.set()
      if state_ == RUNNING:
        write(self.directory, RUNNING, heartbeat=0.0, **{**self.fields, **fields})
      else:
        write(self.directory, state_, **{**self.fields, **fields})

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join(timeout=5)
