"""The building blocks of rewire's models (RoBERTa and Llama), with Hugging Face parameter names and logical axis names.

Dense, LayerNorm and RMSNorm layers, the token-embedding initialiser, dropout with cheap Threefry bits, exact GELU
with an explicit derivative, and attention. Each is tuned for a fast train step on any backend (the
measurements are in `benchmarks/README.md`); `rewire.models.roberta` assembles them into the encoder and heads.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p

Array = jax.Array
Initializer = Callable[..., Array]


# ----------------------------------------------------------------------------------------------------------
# Initialisers.


def word_embedding_init(init_std: float, pad_token_id: int) -> Initializer:
  """N(0, init_std) with the padding row zeroed: the token-embedding init (as fairseq's)."""

  def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    emb = nn.initializers.normal(init_std)(key, shape, dtype)
    return emb.at[pad_token_id].set(0)

  return init


def logical_param(module: nn.Module, name: str, init: Initializer, shape: tuple[int, ...],
           axes: tuple[str | None, ...]) -> Array:
  """A float32 parameter with logical axis names."""
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


# ----------------------------------------------------------------------------------------------------------
# Small building blocks with HF parameter names.


class Dense(nn.Module):
  """`y = x @ kernel + bias`, params named like `nn.Dense`, with logical axes; `.weights()` exposes them."""

  in_features: int
  features: int
  kernel_axes: tuple[str | None, ...]
  bias_axes: tuple[str | None, ...]
  init_std: float
  dtype: Any = jnp.float32
  use_bias: bool = True  # False: a `kernel` only (Llama's projections)

  def setup(self):
    self.kernel = logical_param(self, "kernel", nn.initializers.normal(self.init_std),
                         (self.in_features, self.features), self.kernel_axes)
    if self.use_bias:
      self.bias = logical_param(self, "bias", nn.initializers.zeros, (self.features,), self.bias_axes)

  def weights(self) -> tuple[Array, Array]:
    return self.kernel, self.bias

  def __call__(self, x: Array) -> Array:
    y = jnp.dot(x, self.kernel.astype(self.dtype))
    return y + self.bias.astype(self.dtype) if self.use_bias else y


class LayerNorm(nn.Module):
  """Post-LN LayerNorm with `scale`/`bias` params (HF name `LayerNorm` or `layer_norm`), stats in float32."""

  features: int
  eps: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = logical_param(self, "scale", nn.initializers.ones, (self.features,), ("embed",))
    bias = logical_param(self, "bias", nn.initializers.zeros, (self.features,), ("embed",))
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centred = x32 - mean
    var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
    y = centred * jax.lax.rsqrt(var + self.eps)
    return (y * scale + bias).astype(self.dtype)


class RMSNorm(nn.Module):
  """Root-mean-square norm with a `weight` param (HF Llama's `input_layernorm`, `norm`), stats in float32."""

  features: int
  eps: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    weight = logical_param(self, "weight", nn.initializers.ones, (self.features,), ("embed",))
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (weight * y).astype(self.dtype)


def _keep_mask(rng: Array, shape: tuple[int, ...], rate: float, axis: int) -> Array:
  """Bernoulli(1 - rate) keep mask, four decisions per Threefry-2x32 block.

  `jax.random.bits` (partitionable Threefry) spends a whole 2x32 block on each 32-bit word and then XORs
  the two output words. Here both words are kept and each is split into two 16-bit uniforms, so the mask
  costs a quarter of the hashing (the rate is quantised to 1/65536). The quarters are stacked along
  `axis` (shape[axis] % 4 == 0), which must not be a sharded axis; counters are iotas over the array's own
  shape, so under SPMD each shard hashes only its own slice.
  """
  q_shape = shape[:axis] + (shape[axis] // 4,) + shape[axis + 1:]
  key = jax.random.bits(rng, (2,), jnp.uint32)  # works for any key impl; one block
  hi = jax.lax.broadcasted_iota(jnp.uint32, q_shape, 0)
  lo = jnp.zeros(q_shape, jnp.uint32)
  stride = 1
  for ax in range(len(q_shape) - 1, 0, -1):
    lo = lo + jax.lax.broadcasted_iota(jnp.uint32, q_shape, ax) * np.uint32(stride)
    stride *= q_shape[ax]
  w1, w2 = threefry2x32_p.bind(key[0], key[1], hi, lo)
  u16 = jnp.concatenate([w1 & 0xFFFF, w1 >> 16, w2 & 0xFFFF, w2 >> 16], axis=axis)
  return u16 >= np.uint32(round(rate * 65536))


def dropout(x: Array, rate: float, rng: Array | None) -> Array:
  """Inverted dropout; `rng=None` (deterministic) or `rate == 0` is the identity."""
  if rng is None or rate == 0.0:
    return x
  if rate >= 1.0:
    return jnp.zeros_like(x)
  # Stack the quarters along the second-to-last axis (length, or query position): contiguous blocks,
  # cheaper than the last axis, and unsharded under rewire's rules, unlike the leading (batch) axis.
  axis = next((a for a in (x.ndim - 2, x.ndim - 1) if a >= 1 and x.shape[a] % 4 == 0), None)
  if axis is not None and math.prod(x.shape[1:]) < 2**32:
    keep = _keep_mask(rng, x.shape, rate, axis)
  else:
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  # `where` (not `x * mask_scale`): autodiff then keeps the boolean mask, not a float one, for backward.
  return jnp.where(keep, x * np.asarray(1.0 / (1.0 - rate), x.dtype), np.zeros((), x.dtype))


def qkv_projection(x: Array, weights: list[tuple[Array, Array]], num_heads: int, q_scale: float,
                   dtype: Any) -> tuple[Array, Array, Array]:
  """x [B, L, H] -> q, k, v [B, L, N, D], q pre-scaled by `q_scale` (folded into its kernel and bias).

  Three matmuls, not one over the concatenated kernels: on XLA:CPU the fused form measured 4.6% slower
  per train step (slicing its output and the gradient's pad/concat cost more than the bigger matmul
  saves).
  """
  shape = x.shape[:-1] + (num_heads, -1)
  scales = (q_scale, 1.0, 1.0)
  return tuple((jnp.dot(x, (w * s).astype(dtype)) + (b * s).astype(dtype)).reshape(shape)
               for (w, b), s in zip(weights, scales))


@jax.custom_jvp
def gelu(x: Array) -> Array:
  """Exact GELU, x * Phi(x), as HF's "gelu".

  Written with `erf` rather than `jax.nn.gelu(approximate=False)`'s `erfc`: XLA's f32 erf is a short
  rational polynomial while erfc needs an exp, so the forward is ~2.7x cheaper on CPU (<1e-6 apart).
  The derivative Phi(x) + x * phi(x) is given explicitly: autodiff of the product materialises a
  broadcast constant of the activation's full shape on XLA:CPU.
  """
  return x * (0.5 + 0.5 * jax.lax.erf(x * np.asarray(1.0 / math.sqrt(2.0), x.dtype)))


@gelu.defjvp
def _gelu_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  cdf = 0.5 + 0.5 * jax.lax.erf(x * np.asarray(1.0 / math.sqrt(2.0), x.dtype))
  pdf = jnp.exp(-0.5 * x * x) * np.asarray(1.0 / math.sqrt(2.0 * math.pi), x.dtype)
  return x * cdf, t * (cdf + x * pdf)


def attention(q: Array, k: Array, v: Array, bias: Array, dropout_rate: float,
              dropout_rng: Array | None) -> Array:
  """Softmax attention. q, k, v: [B, L, N, D] (q already scaled); bias: [B, 1, 1, L] additive.

  Returns [B, L, N, D]. Without attention dropout this is `jax.nn.dot_product_attention` (cuDNN flash
  attention on GPU where it applies); with dropout it is written out, since that API has no dropout.
  """
  if dropout_rng is None or dropout_rate == 0.0:
    return jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype), scale=1.0)
  scores = jnp.einsum("bqnd,bknd->bnqk", q, k) + bias.astype(q.dtype)
  probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)
  probs = dropout(probs, dropout_rate, dropout_rng)
  return jnp.einsum("bnqk,bknd->bqnd", probs, v)
