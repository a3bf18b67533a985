"""Reliability: one run per workdir, no checkpoint from a non-finite state, SIGTERM's own exit status."""

import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from rewire import workdir as rworkdir
from rewire.workdir import load_params
from rewire.errors import UserError
from rewire.telemetry import read_records

from conftest import TOTAL, run_tiny, tiny_cli as cli, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_opening_a_checkpointer_waits_for_its_temporary_folder_cleanup(tmp_path, monkeypatch):
  # orbax cleans up the temporary folders of killed saves in a background thread. A process that stops
  # right after opening (a refused resume) must not exit while it runs: its shutdown traceback would follow
  # the one error line. A slowed cleanup shows whether the constructor waits for it.
  import asyncio
  import threading
  from orbax.checkpoint._src.path import temporary_paths
  from rewire.checkpoint import Checkpointer
  done, original = threading.Event(), temporary_paths.cleanup_temporary_paths

  async def slow_cleanup(*args, **kwargs):
    await asyncio.sleep(0.2)
    await original(*args, **kwargs)
    done.set()

  monkeypatch.setattr(temporary_paths, "cleanup_temporary_paths", slow_cleanup)
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=1, async_save=False)
  assert done.is_set()
  ckpt.close()


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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_saves_a_sealed_checkpoint_and_exits_with_one_line(sig, tmp_path):
  total = TOTAL * 5  # long enough that the signal comes first (it follows update 3 within a poll)
  cmd, env = cli(tmp_path / "w", f"--config.total_steps={total}", "--config.eval_every=100",
                 "--config.checkpoint_every=100")
  metrics = tmp_path / "w" / "metrics.jsonl"
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and not any(r.get("step", 0) >= 3 and "loss" in r for r in read_records(str(metrics))
                                            if metrics.exists()):
    time.sleep(0.02)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err[-2000:]
  assert "done:" not in out and "Traceback" not in err
  line = err.strip().splitlines()[-1]
  word = "preempted" if sig == signal.SIGTERM else "interrupted"
  assert line.startswith(f"rewire: {word} at step ") and "run the same command to resume" in line
  stopped = int(line.split("step ")[1].split(":")[0])
  assert rworkdir.read_summary(str(tmp_path / "w"))["finished"] is False
  logged = [r["step"] for r in read_records(str(metrics)) if "loss" in r and "event" not in r]
  assert logged == list(range(1, stopped + 1))  # every step up to the stop, each once
  assert os.path.isfile(tmp_path / "w" / "checkpoint_checksums" / f"{stopped}.json")  # saved and sealed
  # The resume from such a stop: in-process below (metrics equal an uninterrupted run's), and from a real
  # SIGTERM in a 2-process job (test_multihost, params bit-identical).


def test_a_run_stopped_between_two_log_steps_resumes_to_the_metrics_of_an_uninterrupted_one(tmp_path):
  """Logged every 4 updates, stopped after update 5: the checkpoint carries update 5's metrics, and the
  resumed run's records (losses averaged over 5..6, the resets, the evaluations) equal an uninterrupted
  run's, value for value."""
  c = tiny_config()
  c.log_every = 4
  one = jax.devices()[:1]
  timing = ("tokens_per_s", "tokens_per_s_per_device", "tflops_per_device", "mfu")
  records = lambda wd: [{k: v for k, v in r.items() if k not in timing} for r in read_records(str(wd / "metrics.jsonl"))]
  run_tiny(c, tmp_path / "uninterrupted", devices=one)
  stopped = run_tiny(c, tmp_path / "run", devices=one, stop_after=5)
  assert stopped["step"] == 5 and [r["step"] for r in records(tmp_path / "run") if "loss" in r] == [4]
  run_tiny(c, tmp_path / "run", devices=one)
  assert records(tmp_path / "run") == records(tmp_path / "uninterrupted")
  assert [r["step"] for r in records(tmp_path / "run") if "loss" in r and "valid_loss" not in r] == [4, 6, 8, 12]


def test_resuming_with_other_settings_is_refused_and_a_torn_metrics_line_is_harmless(tmp_path):
  c = tiny_config()
  run_tiny(c, tmp_path, devices=jax.devices()[:1], stop_after=6)
  snapshot = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
  for key, value in (("optim.lr", 0.01), ("forget_every", 3), ("model.hidden_size", 64), ("data.vocab_size", 999),
                     ("model.dropout", 0.2)):
    changed = tiny_config()
    group, _, leaf = key.rpartition(".")
    (changed[group] if group else changed)[leaf] = value
    with pytest.raises(UserError, match=rf"holds a run with other settings: {key} .* -> {value!r}"):
      run_tiny(changed, tmp_path, devices=jax.devices()[:1])
  assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()} == snapshot
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 7, "loss": 5.1')  # a crash in the middle of a write
  # A change the checkpoint can take (cadence) resumes, and is recorded.
  c.log_every = 2
  summary = run_tiny(c, tmp_path, devices=jax.devices()[:1])
  assert summary["finished"]
  history = [json.loads(line) for line in open(tmp_path / "config_history.jsonl")]
  assert history == [{"resumed_at_step": 6, "changed": {"log_every": [1, 2]}}]
  steps = [r["step"] for r in read_records(str(tmp_path / "metrics.jsonl")) if "loss" in r and "event" not in r]
  assert steps == [*range(1, 7), *range(8, TOTAL + 1, 2)]


def test_assemble_names_the_missing_key(tmp_path):
  from rewire.stages.assemble import assemble
  with pytest.raises(UserError, match=r"assemble needs config\.task_from"):
    assemble("", str(tmp_path), str(tmp_path / "out"))
  with pytest.raises(UserError, match=r"assemble needs config\.embeddings_from"):
    assemble(str(tmp_path), "", str(tmp_path / "out"))


def test_export_refuses_a_file_and_another_runs_export(tiny_runs, tmp_path):
  from rewire import hf
  workdir, _ = tiny_runs("one_device")
  (tmp_path / "file").write_text("x")
  with pytest.raises(UserError, match="is a file"):
    hf.export_checkpoint(str(workdir), str(tmp_path / "file"))
  out = tmp_path / "export"
  hf.export_checkpoint(str(workdir), str(out))
  hf.export_checkpoint(str(workdir), str(out))  # the same run again: replaced
  other = tmp_path / "other_run"
  import shutil
  shutil.copytree(workdir, other, ignore=shutil.ignore_patterns(".lock"))
  with pytest.raises(UserError, match=rf"already holds an export of {workdir}"):
    hf.export_checkpoint(str(other), str(out))
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "notes.txt").write_text("mine")
  with pytest.raises(UserError, match="already holds other files"):
    hf.export_checkpoint(str(workdir), str(tmp_path / "junk"))


def _largest(root):
  files = [p for p in root.rglob("*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def _damage(step_dir, kind):
  state = step_dir / "state"
  if kind == "truncated_file":
    f = _largest(state)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  elif kind == "truncated_metadata":
    f = state / "_METADATA"
    f.write_bytes(f.read_bytes()[:10])
  elif kind == "empty_manifest":
    (state / "manifest.ocdbt").write_bytes(b"")
  elif kind == "deleted_data_file":
    _largest(state).unlink()
  elif kind == "emptied_folder":
    import shutil
    for p in step_dir.iterdir():
      shutil.rmtree(p) if p.is_dir() else p.unlink()
  elif kind in ("flipped_bytes", "unsealed_flipped"):
    if kind == "unsealed_flipped":  # killed after the save finished but before its checksums were written
      (step_dir.parent.parent / "checkpoint_checksums" / f"{step_dir.name}.json").unlink()
    f = _largest(state)
    data = bytearray(f.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 8):
      data[i] ^= 0x5A
    f.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["truncated_file", "truncated_metadata", "empty_manifest", "deleted_data_file",
                                  "emptied_folder", "flipped_bytes", "unsealed_flipped"])
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_last_intact_one(
    kind, tiny_runs, tmp_path, capsys):
  import shutil
  source, summary = tiny_runs("one_device")
  workdir = tmp_path / "w"
  shutil.copytree(source, workdir)
  assert sorted(p.name for p in (workdir / "checkpoint_checksums").iterdir()) == ["12.json", "6.json"]
  _damage(workdir / "checkpoints" / "12", kind)
  capsys.readouterr()
  resumed = run_tiny(tiny_config(), workdir, devices=jax.devices()[:1])
  lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("rewire:")]
  assert len(lines) == 1 and lines[0].startswith(f"rewire: checkpoint 12 in {workdir / 'checkpoints'} is damaged")
  assert "trying checkpoint 6" in lines[0]
  aside = list((workdir / "damaged_checkpoints").iterdir())
  assert [p.name.split("-")[0] for p in aside if p.is_dir()] == ["12"]  # kept, not deleted
  assert resumed["finished"] and resumed["step"] == TOTAL
  want = jax.tree.leaves(jax.device_get(summary["state"]["params"]))
  got = jax.tree.leaves(jax.device_get(resumed["state"]["params"]))
  for a, b in zip(want, got):
    np.testing.assert_array_equal(a, b)  # retrained from step 6: bit-identical to the uninterrupted run


@pytest.mark.parametrize("how", ["raises", "lost_in_background"])
def test_a_failed_save_stops_the_run_with_one_line(how, tmp_path, monkeypatch):
  import orbax.checkpoint as ocp
  real_save = ocp.CheckpointManager.save

  def save(self, step, *a, **k):
    if step == 12:
      if how == "raises":
        raise OSError(28, "No space left on device")
      return False  # as when orbax logs a failed background write and skips finalising the step
    return real_save(self, step, *a, **k)

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  with pytest.raises(UserError, match=r"saving checkpoint 12 in .* failed.*is the disk full\? The run stopped; "
                                      r"checkpoint 6 is intact"):
    run_tiny(tiny_config(), tmp_path, devices=jax.devices()[:1])
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["6"]  # no temporary folder left


def test_export_of_a_damaged_checkpoint_is_one_line(tiny_runs, tmp_path, capsys):
  import shutil
  from rewire import hf
  source, _ = tiny_runs("one_device")
  workdir = tmp_path / "w"
  shutil.copytree(source, workdir)
  _damage(workdir / "checkpoints" / "12", "truncated_metadata")
  assert hf.main(["export", f"--checkpoint={workdir}", f"--out={tmp_path / 'out'}"]) == 2
  lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("rewire: error: cannot read checkpoint 12") and "damaged" in lines[0]
  assert not (tmp_path / "out").exists()


def test_export_without_transformers_is_one_line_and_writes_nothing(tiny_runs, tmp_path, monkeypatch):
  import importlib.util
  from rewire import hf
  workdir, _ = tiny_runs("one_device")
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
  with pytest.raises(UserError, match=r"export needs transformers .*\.\[hf\]"):
    hf.export_checkpoint(str(workdir), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_a_divergence_with_an_async_save_in_flight_is_one_line_and_leaves_a_sealed_checkpoint(tmp_path):
  """lr 1e9 with a checkpoint every 2 updates: the run diverges while a save is still being written. The save
  completes (or goes), orbax's threads stop, and the one line names a checkpoint that is sealed."""
  workdir = tmp_path / "w"
  cmd, env = cli(workdir, "--config.optim.lr=1e9", "--config.checkpoint_every=2", "--config.async_checkpoints=True")
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and "diverged" in lines[0], out.stderr[-3000:]
  named = lines[0].split("last checkpoint: ")[1].rstrip(")")
  assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
  if named != "None":
    assert (workdir / "checkpoint_checksums" / f"{named}.json").is_file()
    assert (workdir / "checkpoints" / named).is_dir()
