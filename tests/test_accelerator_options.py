"""Accelerator switches: bf16 compute with fp32 master weights and rematerialisation, and MFU logging."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rewire.models import flops
from rewire.telemetry import read_records

from conftest import losses, run_tiny, tiny_config


def _records(workdir):
  return [r for r in read_records(os.path.join(str(workdir), "metrics.jsonl")) if "loss" in r and "event" not in r]


def test_bf16_compute_with_remat_keeps_fp32_master_weights_and_logs_mfu(tiny_runs, tmp_path):
  """The accelerator switches together, as a TPU run sets them: bf16 compute, remat, and a known peak.
  (That remat alone changes no gradient is checked on each family's model: test_model, test_llama.)"""
  ref_dir, _ = tiny_runs("one_device")
  c = tiny_config()
  c.model.update(dtype="bfloat16", remat=True)
  c.peak_flops = 1e12  # pretend peak, so that MFU is logged on a CPU too
  summary = run_tiny(c, tmp_path, devices=jax.devices()[:1])
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(summary["state"]["params"]))
  got, ref = [x for _, x in losses(tmp_path)], [x for _, x in losses(ref_dir)]
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, ref, rtol=3e-2)  # same trajectory up to bf16 rounding
  assert got != ref  # and it really ran in bf16
  recs = _records(tmp_path)[1:]
  for r in recs:
    assert r["tflops_per_device"] > 0
    assert r["mfu"] == pytest.approx(r["tflops_per_device"] * 1e12 / 1e12)
  # With no known peak (a CPU), MFU is left out rather than made up.
  assert all("mfu" not in r and "tflops_per_device" in r for r in _records(ref_dir)[1:])


def test_step_flops_formula():
  # One layer, hidden 2, FFN 4, vocab 10, batch 1, length 3, 1 prediction: count the matmuls by hand.
  body = 2 * 3 * 1 * (4 * 2 * 2 + 2 * 2 * 4)  # QKV+out (4 H^2) and MLP (2 H F) per token
  attention = 2 * 2 * 1 * 1 * 3 * 3 * 2
  head = 2 * 1 * 1 * (2 * 2 + 2 * 10)
  assert flops.mlm_step_flops(hidden=2, layers=1, intermediate=4, vocab=10, batch=1, seq_len=3,
                              predictions=1) == 3 * (body + attention + head)
  assert flops.peak_flops(jax.devices()[0]) is None  # CPU
  assert flops.peak_flops(jax.devices()[0], 5e12) == 5e12
