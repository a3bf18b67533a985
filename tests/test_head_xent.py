"""The decoder's fused head + cross-entropy: the loss and gradients of plain autodiff, without the logits."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rewire.models import head_xent as head_xent_module
from rewire.models.head_xent import chunk_count, head_xent


def plain(h, kernel, labels, weights):
  logits = jnp.einsum("bth,hv->btv", h, kernel.astype(h.dtype)).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  label_logit = jnp.take_along_axis(logits, labels[..., None], -1)[..., 0]
  return (ce * weights).sum(), ((label_logit >= logits.max(-1)) * weights).sum()


def example(b=4, t=12, h=16, v=50, seed=0):
  r = np.random.default_rng(seed)
  hidden, kernel = r.normal(size=(b, t, h)).astype(np.float32), (r.normal(size=(h, v)) * 0.3).astype(np.float32)
  # Half the labels are the top logit, so the correct count is neither 0 nor everything.
  labels = np.where(r.random((b, t)) < 0.5, (hidden @ kernel).argmax(-1), r.integers(0, v, (b, t)))
  return (jnp.asarray(hidden), jnp.asarray(kernel), jnp.asarray(labels, jnp.int32),
          jnp.asarray(r.random((b, t)) > 0.3, jnp.float32))


@pytest.mark.parametrize("chunks", [1, 3, 12])
def test_loss_and_gradients_equal_plain_autodiff(chunks):
  h, k, labels, w = example()
  fused = lambda h, k: head_xent(h, k, labels, w, chunks=chunks)
  ce, correct = jax.jit(fused)(h, k)
  ce_ref, correct_ref = plain(h, k, labels, w)
  np.testing.assert_allclose(ce, ce_ref, rtol=1e-6)
  assert correct == correct_ref and 0 < correct < w.sum()
  # A cotangent other than 1 (the loss is divided by the prediction count in the objective).
  grads = jax.jit(jax.grad(lambda h, k: fused(h, k)[0] / 7.0, (0, 1)))(h, k)
  grads_ref = jax.grad(lambda h, k: plain(h, k, labels, w)[0] / 7.0, (0, 1))(h, k)
  for g, g_ref in zip(grads, grads_ref):
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6)
  # Weight-0 positions get no gradient.
  assert np.all(np.asarray(grads[0])[np.asarray(w) == 0] == 0)


def test_bf16_hidden_states_give_bf16_gradients_close_to_float32():
  h, k, labels, w = example()
  grad_h, grad_k = jax.grad(lambda h, k: head_xent(h, k, labels, w, chunks=4)[0], (0, 1))(h.astype(jnp.bfloat16), k)
  assert grad_h.dtype == jnp.bfloat16 and grad_k.dtype == jnp.float32
  ref_h, ref_k = jax.grad(lambda h, k: plain(h, k, labels, w)[0], (0, 1))(h, k)
  np.testing.assert_allclose(grad_h.astype(jnp.float32), ref_h, atol=3e-2)
  np.testing.assert_allclose(grad_k, ref_k, rtol=3e-2, atol=3e-2)


def test_chunking_bounds_the_memory_of_the_gradient():
  b, t, hid, v = 4, 256, 32, 4096  # logits: 16 MiB in float32
  h, k = jnp.zeros((b, t, hid)), jnp.zeros((hid, v))
  labels, w = jnp.zeros((b, t), jnp.int32), jnp.ones((b, t))
  temp = lambda fn: jax.jit(jax.grad(fn, (0, 1))).lower(h, k).compile().memory_analysis().temp_size_in_bytes
  fused = temp(lambda h, k: head_xent(h, k, labels, w, chunks=8)[0])
  reference = temp(lambda h, k: plain(h, k, labels, w)[0])
  logits = b * t * v * 4
  assert fused < logits / 2 and reference > logits, (fused, reference)


def test_chunk_count_divides_the_sequence_and_fits_the_budget():
  assert chunk_count(128, 8192, 1 << 18) == 4 and chunk_count(512, 32000, 1 << 21) == 8
  assert chunk_count(127, 1 << 22, 1 << 18) == 127 and chunk_count(64, 100, 1 << 18) == 1
  for t, v in [(512, 128256), (96, 50000), (2048, 32000)]:
    n, budget = chunk_count(t, v), head_xent_module.CHUNK_LOGITS
    # A divisor of t within the budget, and no smaller count within it.
    assert t % n == 0 and (t // n) * v <= budget
    assert all(t % m or (t // m) * v > budget for m in range(1, n))


def test_a_batch_sharded_over_devices_and_a_vocab_sharded_kernel_give_the_one_device_result():
  devices = np.array(jax.devices()[:8])
  if devices.size < 8:
    pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
  mesh = Mesh(devices.reshape(4, 2), ("data", "model"))
  h, k, labels, w = example(b=8, t=12, v=64)
  fn = jax.jit(jax.value_and_grad(lambda h, k: head_xent(h, k, labels, w, chunks=3)[0], (0, 1)))
  ref = fn(h, k)
  out = fn(jax.device_put(h, NamedSharding(mesh, P("data"))), jax.device_put(k, NamedSharding(mesh, P(None, "model"))))
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
