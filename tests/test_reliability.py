"""Reliability: one run per workdir, no checkpoint from a non-finite state, SIGTERM's own exit status."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rewire import workdir as rworkdir
from rewire.checkpoint import load_params
from rewire.errors import UserError
from rewire.telemetry import read_records

from conftest import TOTAL, run_tiny, shared_corpus, shared_tokenizer, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(workdir, *overrides):
  """The tiny test config as command-line flags of `python -m rewire.main`."""
  c = tiny_config()
  flags = [f"--config.total_steps={c.total_steps}", f"--config.forget_every={c.forget_every}",
           f"--config.batch_size={c.batch_size}", "--config.log_every=1", "--config.eval_every=6",
           "--config.checkpoint_every=6", "--config.model.hidden_size=32", "--config.model.num_layers=1",
           "--config.model.num_heads=2", "--config.model.intermediate_size=64",
           f"--config.data.source=prepared:{shared_corpus()}", "--config.data.seq_len=32",
           "--config.data.max_valid_sequences=32", f"--config.data.tokenizer={shared_tokenizer()}",
           "--config.optim.lr=3e-3", "--config.optim.warmup_steps=4"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return [sys.executable, "-m", "rewire.main", "--config=configs/pretrain_forget.py", f"--workdir={workdir}",
          *flags, *overrides], env


def test_a_second_run_on_the_same_workdir_is_refused(tmp_path):
  workdir = tmp_path / "w"
  with rworkdir.locked(str(workdir)):
    with pytest.raises(UserError, match=rf"workdir {workdir} is in use by another rewire process"):
      run_tiny(tiny_config(), workdir, devices=jax.devices()[:1])
    cmd, env = cli(workdir)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rewire: error: workdir {workdir} is in use by another")
    assert os.listdir(workdir) == [".lock"]
  assert not workdir.exists()  # a new workdir that holds nothing but the lock is removed again


def test_no_checkpoint_is_written_from_a_non_finite_state(tmp_path):
  c = tiny_config()
  c.optim.lr = 1e9
  c.update(checkpoint_every=1, async_checkpoints=False, log_every=100)
  with pytest.raises(UserError, match=r"training diverged.*at step \d+.*lower optim\.lr"):
    run_tiny(c, tmp_path, devices=jax.devices()[:1])
  steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert steps, "the finite steps before the divergence are checkpointed"
  for step in steps:
    params, _ = load_params(str(tmp_path), step)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params)), step


def test_sigterm_saves_exits_143_and_the_rerun_reads_like_an_uninterrupted_run(tmp_path):
  total = TOTAL * 50
  cmd, env = cli(tmp_path / "w", f"--config.total_steps={total}")
  metrics = tmp_path / "w" / "metrics.jsonl"
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and not any(r.get("step", 0) >= 3 and "loss" in r for r in read_records(str(metrics))
                                            if metrics.exists()):
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 143, err[-2000:]
  assert "done:" not in out
  line = err.strip().splitlines()[-1]
  assert line.startswith("rewire: preempted at step ") and "run the same command to resume" in line
  stopped = int(line.split("step ")[1].split(":")[0])
  assert rworkdir.read_summary(str(tmp_path / "w"))["finished"] is False
  logged = [r["step"] for r in read_records(str(metrics)) if "loss" in r and "event" not in r]
  assert logged == list(range(1, stopped + 1))  # every step up to the stop, each once
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0 and "done:" in out.stdout
  logged = [r["step"] for r in read_records(str(metrics)) if "loss" in r and "event" not in r]
  assert logged == list(range(1, total + 1))
