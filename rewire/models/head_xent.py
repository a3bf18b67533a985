"""The LM head and its softmax cross-entropy as one op that never holds the [B, T, V] logits.

Why: a decoder predicts at every position, so its logits are batch x length x vocab floats (32 x 512 x
32k in float32 is 2.1 GB, and autodiff keeps their gradient too). `head_xent` computes the head matmul,
the cross-entropy and its gradients chunk by chunk along the sequence, in one pass: the forward of a chunk
already forms `softmax - onehot`, so the backward pass only scales what the forward left (the gradients
of the hidden states and of the head kernel) by the loss's cotangent. Peak memory is one chunk's logits;
the head costs its three matmuls (logits, and the two gradients), as in plain autodiff.

Chunks run along the sequence axis, so a batch sharded over the data axes stays sharded; the vocabulary
axis of the kernel may be sharded too (XLA adds the reductions).

`labels` and `weights` are constants of the loss: their cotangents are zero.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Positions per chunk: the largest divisor of the sequence length with chunk x vocab <= this many logits
# per row (2^18 float32: 1 MiB per row, 32 MiB for 32 rows on a device). On 2 CPU cores, at vocab 8192,
# 2^17-2^18 was fastest (chunks that stay in cache: 1.35x HF's step, against 1.22x for one chunk).
CHUNK_LOGITS = 1 << 18


def chunk_count(length: int, vocab: int, budget: int | None = None) -> int:
  """The fewest chunks of `length` positions whose logits per row fit in `budget` (default `CHUNK_LOGITS`);
  the count divides `length`."""
  budget = CHUNK_LOGITS if budget is None else budget
  for n in range(1, length + 1):
    if length % n == 0 and (length // n) * vocab <= budget:
      return n
  return length


def head_xent(h: jax.Array, kernel: jax.Array, labels: jax.Array, weights: jax.Array, *,
              chunks: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Sums of the weighted cross-entropy and of the weighted "label is the top logit" over [B, T] positions.

  `h` [B, T, H] (in the compute dtype, which the matmuls use), `kernel` [H, V] (any float dtype; its
  gradient comes back in it), `labels` int[B, T], `weights` float[B, T]. The logits accumulate in float32.
  """
  n = chunk_count(h.shape[1], kernel.shape[1]) if chunks is None else chunks
  if h.shape[1] % n:
    raise ValueError(f"{n} chunks do not divide a sequence of {h.shape[1]}")
  return _head_xent(h, kernel, labels, weights.astype(jnp.float32), n)


def _split(x: jax.Array, n: int) -> jax.Array:
  """[B, T, ...] -> [n, B, T / n, ...]: the scan runs over the chunk axis, the batch axis keeps its sharding."""
  b, t = x.shape[:2]
  return jnp.moveaxis(x.reshape(b, n, t // n, *x.shape[2:]), 1, 0)


def _merge(x: jax.Array) -> jax.Array:
  x = jnp.moveaxis(x, 0, 1)
  return x.reshape(x.shape[0], -1, *x.shape[3:])


def _chunk_terms(h, kernel, labels, weights):
  """One chunk's logits float32 [B, t, V], their log-sum-exp, and its cross-entropy and correct sums."""
  logits = jnp.einsum("bth,hv->btv", h, kernel.astype(h.dtype), preferred_element_type=jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  ce = ((lse - label_logit) * weights).sum()
  correct = ((label_logit >= logits.max(-1)).astype(jnp.float32) * weights).sum()
  return logits, lse, ce, correct


def _scan(h, kernel, labels, weights, n, with_grads):
  xs = (_split(h, n), _split(labels, n), _split(weights, n))
  vocab = jnp.arange(kernel.shape[1], dtype=labels.dtype)

  def body(carry, x):
    ce_sum, correct_sum, dk = carry
    hc, lc, wc = x
    logits, lse, ce, correct = _chunk_terms(hc, kernel, lc, wc)
    if not with_grads:
      return (ce_sum + ce, correct_sum + correct, dk), None
    # d(sum of weighted CE)/d logits = weight * (softmax - onehot(label)).
    g = (jnp.exp(logits - lse[..., None]) - (vocab == lc[..., None])) * wc[..., None]
    g = g.astype(hc.dtype)
    dh = jnp.einsum("btv,hv->bth", g, kernel.astype(hc.dtype))
    dk = dk + jnp.einsum("bth,btv->hv", hc, g, preferred_element_type=jnp.float32)
    return (ce_sum + ce, correct_sum + correct, dk), dh

  zero = jnp.zeros((), jnp.float32)
  dk0 = jnp.zeros(kernel.shape, jnp.float32) if with_grads else None
  (ce_sum, correct_sum, dk), dh = jax.lax.scan(body, (zero, zero, dk0), xs)
  return ce_sum, correct_sum, (None if dh is None else _merge(dh)), dk


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _head_xent(h, kernel, labels, weights, n):
  ce_sum, correct_sum, _, _ = _scan(h, kernel, labels, weights, n, with_grads=False)
  return ce_sum, correct_sum


def _head_xent_fwd(h, kernel, labels, weights, n):
  ce_sum, correct_sum, dh, dk = _scan(h, kernel, labels, weights, n, with_grads=True)
  return (ce_sum, correct_sum), (dh, dk.astype(kernel.dtype))


def _head_xent_bwd(n, residuals, cotangents):
  del n
  dh, dk = residuals
  g_ce, _ = cotangents  # the correct count is a step function: no gradient
  return dh * g_ce.astype(dh.dtype), dk * g_ce.astype(dk.dtype), None, None


_head_xent.defvjp(_head_xent_fwd, _head_xent_bwd)
