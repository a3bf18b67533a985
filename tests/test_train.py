"""The pretraining loop end to end on a tiny config: resets, one compile, exact resume, 1 vs 8 devices."""

import json
import logging
import os

import jax
import numpy as np
import pytest

from rewire.errors import UserError
from rewire.telemetry import read_records

from conftest import K, TOTAL, losses, run_tiny, tiny_config

run = run_tiny


def params_of(summary):
  return jax.tree.map(np.asarray, jax.device_get(summary["state"]["params"]))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """An uninterrupted forgetting run on all 8 fake devices, with compile logging captured."""
  workdir = tmp_path_factory.mktemp("full")
  records = []

  class Catch(logging.Handler):
    def emit(self, record):
      records.append(record.getMessage())

  handler = Catch(level=logging.WARNING)
  logger = logging.getLogger("jax._src.interpreters.pxla")
  logger.addHandler(handler)
  jax.config.update("jax_log_compiles", True)
  try:
    summary = run(tiny_config(), workdir)
  finally:
    jax.config.update("jax_log_compiles", False)
    logger.removeHandler(handler)
  return workdir, summary, records


def test_metrics_record_every_reset_and_none_at_the_end(full_run):
  workdir, summary, _ = full_run
  records = read_records(os.path.join(workdir, "metrics.jsonl"))
  assert [r["step"] for r in records if r.get("event") == "forget"] == [4, 8]
  logged = [r for r in records if "loss" in r and "event" not in r]
  assert [r["step"] for r in logged] == list(range(1, TOTAL + 1))
  for key in ("loss", "accuracy", "grad_norm", "lr_forget", "lr_train"):
    assert all(np.isfinite(r[key]) for r in logged), key
  assert all("tokens_per_s" in r for r in logged[1:])
  # The embedding group replays its schedule each episode; the body follows the global one.
  lr_f = {r["step"]: r["lr_forget"] for r in logged}
  lr_b = {r["step"]: r["lr_train"] for r in logged}
  assert lr_f[1] == lr_f[5] == lr_f[9] and lr_b[1] != lr_b[5]
  valid = [r for r in records if "valid_loss" in r]
  assert [r["step"] for r in valid] == [6, 12]
  assert summary["finished"] and summary["resets"] == [4, 8]
  assert os.path.getsize(os.path.join(workdir, "loss.png")) > 1000
  assert json.load(open(os.path.join(workdir, "summary.json")))["step"] == TOTAL
  assert os.path.exists(os.path.join(workdir, "tokenizer.json"))
  assert json.load(open(os.path.join(workdir, "config.json")))["forget_every"] == K


def test_train_step_compiles_once(full_run):
  _, _, messages = full_run
  compiles = [m for m in messages if "Compiling jit(train_step)" in m]
  assert len(compiles) == 1, compiles


def test_state_keeps_its_shardings_across_resets(full_run):
  _, summary, _ = full_run
  emb = summary["state"]["params"]["roberta"]["embeddings"]["word_embeddings"]["embedding"]
  # 8 devices on the data axis: params are replicated on all of them, and stay so after the resets.
  assert len(emb.sharding.device_set) == 8 and emb.sharding.is_fully_replicated


def test_one_device_matches_eight_devices(full_run, tiny_runs):
  workdir, _, _ = full_run
  one_dir, one = tiny_runs("one_device")
  assert one["step"] == TOTAL
  l1, l8 = losses(one_dir), losses(workdir)
  assert [s for s, _ in l1] == [s for s, _ in l8]
  np.testing.assert_allclose([x for _, x in l1], [x for _, x in l8], rtol=2e-4)


def _snapshot(d):
  out = {}
  for root, _, files in os.walk(d):
    for f in files:
      p = os.path.join(root, f)
      out[p] = (os.path.getsize(p), os.path.getmtime(p))
  return out


def test_bad_inputs_fail_with_a_clear_error_and_leave_the_workdir_alone(full_run, tmp_path):
  workdir, _, _ = full_run
  before = _snapshot(workdir)

  c = tiny_config()
  c.unlock()
  c.forget_evry = 3
  with pytest.raises(UserError, match=r"unknown config key config\.forget_evry \(did you mean config\.forget_every\?\)"):
    run(c, workdir)

  c = tiny_config()
  c.data.source = f"files:{tmp_path}/missing/*.txt"
  with pytest.raises(UserError, match="missing"):
    run(c, workdir)
  (tmp_path / "empty.txt").write_text("\n\n")
  c.data.source = f"files:{tmp_path}/empty.txt"
  with pytest.raises(UserError, match="empty"):
    run(c, tmp_path / "fresh")
  assert not (tmp_path / "fresh").exists() or not os.listdir(tmp_path / "fresh")

  c = tiny_config()
  c.mesh.data = 3
  with pytest.raises(UserError, match="mesh"):
    run(c, workdir)

  from rewire.data.tokenizer import save_tokenizer, train_tokenizer
  other = tmp_path / "other_tokenizer.json"
  save_tokenizer(train_tokenizer(["a small corpus of words for another tokenizer"] * 20, 60), str(other))
  c = tiny_config()
  c.data.tokenizer = str(other)
  with pytest.raises(UserError, match="tokenizer"):
    run(c, workdir)

  assert _snapshot(workdir) == before



def test_sigterm_requests_a_save_and_exit_instead_of_killing():
  import signal
  from rewire.loop import Preemption as _Preemption
  before = signal.getsignal(signal.SIGTERM)
  with _Preemption() as p:
    assert not p.requested
    os.kill(os.getpid(), signal.SIGTERM)
    assert p.requested  # the loop saves a checkpoint at the next step and returns
  assert signal.getsignal(signal.SIGTERM) == before


def _scalars(workdir):
  """Every TensorBoard scalar series under <workdir>/tensorboard, read back with TensorBoard's own reader."""
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  acc = EventAccumulator(os.path.join(str(workdir), "tensorboard"), size_guidance={"scalars": 0})
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_holds_the_metrics_and_the_resets_as_their_own_series(full_run, tmp_path):
  workdir, _, _ = full_run
  series = _scalars(workdir)
  logged = losses(workdir)
  assert [s for s, _ in series["train/loss"]] == [s for s, _ in logged]
  np.testing.assert_allclose([v for _, v in series["train/loss"]], [v for _, v in logged], rtol=1e-6)
  assert [s for s, _ in series["events/forget"]] == [4, 8]
  evals = [r for r in read_records(os.path.join(workdir, "metrics.jsonl")) if "valid_loss" in r]
  assert [s for s, _ in series["valid/loss"]] == [r["step"] for r in evals]
  assert {"lr/forget", "lr/train", "train/grad_norm", "throughput/tokens_per_s"} <= set(series)
  # A resumed run's curves read like an uninterrupted one's: what the interrupted run logged after its
  # checkpoint is purged, not drawn twice.
  run(tiny_config(), tmp_path, stop_after=7)
  run(tiny_config(), tmp_path)
  resumed = _scalars(tmp_path)
  assert [s for s, _ in resumed["train/loss"]] == [s for s, _ in series["train/loss"]]
  assert [s for s, _ in resumed["events/forget"]] == [4, 8]
