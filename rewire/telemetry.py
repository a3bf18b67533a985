"""Run telemetry: `metrics.jsonl` (one JSON object per logged step or event), TensorBoard, the progress line.

`metrics.jsonl` is the source of truth; every record also goes to TensorBoard event files under
`<workdir>/tensorboard/` (written with tensorboardX, no TensorFlow needed), grouped into `train/`, `valid/`,
`dev/`, `lr/` and `throughput/` scalars, with each event (a forgetting reset: `events/forget`) as a series
of its own. Only process 0 writes. On resume the file is cut back to the restored step and TensorBoard is
told to purge what came later, so a resumed run reads exactly like an uninterrupted one.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import sys
import time
from typing import Any

import numpy as np

TENSORBOARD = "tensorboard"


def _plain(v: Any) -> Any:
  if isinstance(v, (np.floating, float)):
    v = float(v)
    return v if math.isfinite(v) else str(v)
  if isinstance(v, (np.integer,)):
    return int(v)
  if isinstance(v, np.bool_):
    return bool(v)
  if isinstance(v, np.ndarray) and v.ndim == 0:
    return _plain(v.item())
  return v


def read_records(path: str) -> list[dict]:
  """The records of a `metrics.jsonl`; a torn last line (a crash mid-write) is dropped."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  records = []
  for i, line in enumerate(lines):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i < len(lines) - 1:
        raise
  return records


def tensorboard_tag(key: str) -> str:
  """The TensorBoard tag of a record's field: `valid_loss` -> `valid/loss`, `lr_forget` -> `lr/forget`, ..."""
  for prefix in ("valid", "dev", "lr"):
    if key.startswith(prefix + "_"):
      return f"{prefix}/{key[len(prefix) + 1:]}"
  if "_per_s" in key or key in ("tflops_per_device", "mfu"):
    return f"throughput/{key}"
  return f"train/{key}"


def _summary_writer_class():
  """tensorboardX's `SummaryWriter`, imported here (it pulls in protobuf, which only writers need) and
  without PyTorch: its writer module imports torch when it can, only to accept torch tensors, which rewire
  never passes. Where torch is installed (the HF extras) that import alone took 3 s of every run's start-up."""
  if "torch" in sys.modules or "tensorboardX.writer" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None  # `import torch` raises ImportError while this is set
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]  # a later `import torch` (an HF export in this process) finds the real one
  return SummaryWriter


class MetricsWriter:
  """Appends records to `<workdir>/metrics.jsonl`, and their numbers to TensorBoard beside it."""

  def __init__(self, path: str, *, enabled: bool = True, resume_step: int | None = None):
    self.path = path
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    tb_dir = os.path.join(os.path.dirname(os.path.abspath(path)), TENSORBOARD)
    if resume_step is not None:
      kept = [r for r in read_records(path) if r.get("step", 0) <= resume_step]
      with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    else:
      if os.path.exists(path):
        os.remove(path)
      shutil.rmtree(tb_dir, ignore_errors=True)  # a fresh run: no events of an earlier one in its curves
    self._tb = _summary_writer_class()(tb_dir, purge_step=None if resume_step is None else resume_step + 1, flush_secs=30)

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    plain = {k: _plain(v) for k, v in record.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps(plain) + "\n")
    step = plain.get("step")
    if self._tb is None or not isinstance(step, int):
      return
    if "event" in plain:
      if plain["event"] != "start":
        self._tb.add_scalar(f"events/{plain['event']}", 1.0, step)
    else:
      for key, value in plain.items():
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
          self._tb.add_scalar(tensorboard_tag(key), value, step)
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def hms(seconds: float) -> str:
  return str(datetime.timedelta(seconds=int(max(0, seconds))))


class Progress:
  """One progress line per log interval: step, loss, throughput, elapsed time and ETA."""

  def __init__(self, total_steps: int, start_step: int, *, name: str, enabled: bool = True, stream=None):
    self.total = total_steps
    self.start_step = start_step
    self.name = name
    self.enabled = enabled
    self.stream = stream or sys.stdout
    self.t0 = time.perf_counter()
    self.first_timed: tuple[int, float] | None = None  # (step, time) after the first step (compile excluded)

  def mark_compiled(self, step: int) -> None:
    self.first_timed = (step, time.perf_counter())

  def eta_seconds(self, step: int) -> float | None:
    if self.first_timed is None or step <= self.first_timed[0]:
      return None
    s0, t0 = self.first_timed
    rate = (time.perf_counter() - t0) / (step - s0)
    return rate * (self.total - step)

  def line(self, step: int, record: dict) -> str:
    pct = 100.0 * step / self.total
    parts = [f"[{self.name}] step {step}/{self.total} ({pct:.0f}%)"]
    if "loss" in record:
      parts.append(f"loss {record['loss']:.3f}")
    if "accuracy" in record:
      parts.append(f"acc {record['accuracy']:.3f}")
    if "valid_loss" in record:
      parts.append(f"valid loss {record['valid_loss']:.3f} acc {record.get('valid_accuracy', float('nan')):.3f}")
    for k in sorted(record):
      if k.startswith("dev_"):
        parts.append(f"{k.replace('_', ' ')} {record[k]:.2f}")
    lrs = [f"{k[3:]} {record[k]:.2e}" for k in sorted(record) if k.startswith("lr_")]
    if lrs:
      parts.append("lr " + ", ".join(lrs))
    if "tokens_per_s" in record:
      parts.append(f"{record['tokens_per_s'] / 1e3:.1f}k tok/s")
    eta = self.eta_seconds(step)
    parts.append(f"elapsed {hms(time.perf_counter() - self.t0)}")
    parts.append("ETA " + (hms(eta) if eta is not None else "--"))
    return " | ".join(parts)

  def log(self, step: int, record: dict) -> None:
    if self.enabled:
      print(self.line(step, record), file=self.stream, flush=True)
