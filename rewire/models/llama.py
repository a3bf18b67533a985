"""The Llama-family causal decoder (flax.linen) and its config: the body of every Llama-family model.

A sibling of `rewire.models.roberta`, built from the same blocks (`rewire.models.layers`): pre-RMSNorm
layers, rotary position embeddings (the rotate-half convention of Hugging Face checkpoints), a SwiGLU MLP,
grouped-query attention (`num_kv_heads` key/value heads shared by groups of query heads), and projections
without biases. Every weight carries logical axis names, so the mesh rules of `rewire.sharding` shard it
(FSDP over `embed`, tensor parallelism over `heads`/`mlp`/`vocab`).

The parameter tree is Hugging Face's `FlaxLlamaModel` tree under `model/` (`embed_tokens/embedding`,
`layers/{i}/self_attn/{q,k,v,o}_proj/kernel`, `layers/{i}/mlp/{gate,up,down}_proj/kernel`,
`layers/{i}/{input,post_attention}_layernorm/weight`, `norm/weight`), so checkpoints convert by renaming
nothing. Attention is `jax.nn.dot_product_attention` with `is_causal=True` (cuDNN flash attention on
GPU); the same layers run with a key/value cache for sampling (`rewire.generate`): a cache is a list of
`{"k", "v"}` arrays [B, S, num_kv_heads, head_dim], written at `index` and read up to it.

  h, _ = LlamaModel(cfg).apply({"params": params["model"]}, ids, deterministic=True)  # [B, L, H]
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rewire.errors import UserError
from rewire.models.config_base import ConfigBase
from rewire.models.layers import Dense, RMSNorm, dropout

Array = jax.Array
Cache = list  # one {"k": [B, S, K, D], "v": [B, S, K, D]} per layer

_ACT_AXES = ("batch", "length", "embed")


@dataclasses.dataclass(frozen=True)
class LlamaConfig(ConfigBase):
  """Shape and regularisation of a Llama-family decoder. Defaults are a ~160M-parameter Llama."""

  family_name = "llama"

  vocab_size: int
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  num_kv_heads: int = 0          # 0: num_heads (multi-head attention); fewer: grouped-query attention
  head_dim: int = 0              # 0: hidden_size // num_heads
  intermediate_size: int = 2048
  max_position_embeddings: int = 512
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  tie_word_embeddings: bool = False
  dropout: float = 0.0           # residual dropout after attention and MLP (Llama trains without)
  attention_dropout: float = 0.0
  init_std: float = 0.02
  pad_token_id: int = 1
  dtype: str = "float32"
  remat: bool = False

  def __post_init__(self):
    kv = self.kv_heads
    if kv < 1 or self.num_heads % kv:
      raise UserError(f"model.num_heads={self.num_heads} is not a multiple of model.num_kv_heads={kv}")
    if not self.head_dim and self.hidden_size % self.num_heads:
      raise UserError(f"model.hidden_size={self.hidden_size} is not a multiple of model.num_heads="
                      f"{self.num_heads}; set model.head_dim")
    if self.head_size % 2:
      raise UserError(f"the head dimension ({self.head_size}) must be even for rotary embeddings")
    self.check_common()

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  @property
  def head_size(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads


def rope_tables(config: LlamaConfig) -> tuple[np.ndarray, np.ndarray]:
  """sin, cos [max_position_embeddings, head_dim / 2] (computed in float64, stored in float32)."""
  d = config.head_size
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
  angles = np.arange(config.max_position_embeddings, dtype=np.float64)[:, None] * inv_freq[None, :]
  return np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)


def apply_rope(x: Array, sin: Array, cos: Array) -> Array:
  """Rotates x [B, T, N, D] by the angles of its positions (sin, cos [B, T, D/2]; rotate-half layout)."""
  half = x.shape[-1] // 2
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  s, c = sin[:, :, None, :], cos[:, :, None, :]
  return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x.dtype)


class Attention(nn.Module):
  """HF `self_attn`: q/k/v/o projections without bias, rotary embeddings, causal grouped-query attention."""

  config: LlamaConfig

  @nn.compact
  def __call__(self, x: Array, positions: Array, deterministic: bool, cache: dict | None = None,
               index: Array | None = None) -> tuple[Array, dict | None]:
    cfg = self.config
    dtype, n, kv, d = cfg.compute_dtype, cfg.num_heads, cfg.kv_heads, cfg.head_size
    proj = lambda out, name: Dense(cfg.hidden_size, out, ("embed", "heads"), (None,), cfg.init_std, dtype,
                                   use_bias=False, name=name)
    b, t = x.shape[:2]
    q = proj(n * d, "q_proj")(x).reshape(b, t, n, d)
    k = proj(kv * d, "k_proj")(x).reshape(b, t, kv, d)
    v = proj(kv * d, "v_proj")(x).reshape(b, t, kv, d)
    sin_t, cos_t = rope_tables(cfg)
    sin, cos = jnp.asarray(sin_t)[positions], jnp.asarray(cos_t)[positions]
    q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
    scale = 1.0 / math.sqrt(d)
    rng = None if deterministic or cfg.attention_dropout == 0.0 else self.make_rng("dropout")
    if cache is None:
      if rng is None:
        out = jax.nn.dot_product_attention(q, k, v, is_causal=True, scale=scale)
      else:
        out = _attention_with_dropout(q, k, v, jnp.tril(jnp.ones((t, t), bool)), scale, cfg.attention_dropout, rng)
      new_cache = None
    else:
      k_all = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), (0, index, 0, 0))
      v_all = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), (0, index, 0, 0))
      # Query t (at position index + t) sees the cached keys at positions <= index + t.
      visible = jnp.arange(k_all.shape[1])[None, :] <= (index + jnp.arange(t))[:, None]  # [T, S]
      out = jax.nn.dot_product_attention(q, k_all.astype(dtype), v_all.astype(dtype),
                                         mask=visible[None, None], scale=scale)
      new_cache = {"k": k_all, "v": v_all}
    out = out.reshape(b, t, n * d)
    o_proj = Dense(n * d, cfg.hidden_size, ("heads", "embed"), (None,), cfg.init_std, dtype, use_bias=False,
                   name="o_proj")
    return o_proj(out.astype(dtype)), new_cache


def _attention_with_dropout(q, k, v, visible, scale, rate, rng):
  """Causal GQA written out, for attention dropout (which `jax.nn.dot_product_attention` lacks)."""
  groups = q.shape[2] // k.shape[2]
  k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
  scores = jnp.einsum("bqnd,bknd->bnqk", q, k).astype(jnp.float32) * scale
  scores = jnp.where(visible[None, None], scores, jnp.finfo(jnp.float32).min)
  probs = dropout(jax.nn.softmax(scores, axis=-1).astype(q.dtype), rate, rng)
  return jnp.einsum("bnqk,bknd->bqnd", probs, v)


class MLP(nn.Module):
  """HF `mlp`: down_proj(silu(gate_proj(x)) * up_proj(x))."""

  config: LlamaConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    dense = lambda i, o, axes, name: Dense(i, o, axes, (None,), cfg.init_std, cfg.compute_dtype,
                                           use_bias=False, name=name)
    h, m = cfg.hidden_size, cfg.intermediate_size
    gate = dense(h, m, ("embed", "mlp"), "gate_proj")(x)
    up = dense(h, m, ("embed", "mlp"), "up_proj")(x)
    return dense(m, h, ("mlp", "embed"), "down_proj")(jax.nn.silu(gate) * up)


class Layer(nn.Module):
  """One pre-norm decoder layer (HF `layers/{i}`)."""

  config: LlamaConfig

  @nn.compact
  def __call__(self, x: Array, positions: Array, deterministic: bool, cache: dict | None = None,
               index: Array | None = None) -> tuple[Array, dict | None]:
    cfg = self.config
    dtype = cfg.compute_dtype
    rng = (lambda: None) if deterministic or cfg.dropout == 0.0 else (lambda: self.make_rng("dropout"))
    a, new_cache = Attention(cfg, name="self_attn")(
        RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, name="input_layernorm")(x), positions,
        deterministic, cache, index)
    x = x + dropout(a, cfg.dropout, rng())
    y = MLP(cfg, name="mlp")(RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, name="post_attention_layernorm")(x))
    x = x + dropout(y, cfg.dropout, rng())
    return nn.with_logical_constraint(x, _ACT_AXES), new_cache


class LayerStack(nn.Module):
  """HF `layers`: layers named "0", "1", ... (a Python loop, as HF's tree has them)."""

  config: LlamaConfig

  @nn.compact
  def __call__(self, x: Array, positions: Array, deterministic: bool, cache: Cache | None,
               index: Array | None) -> tuple[Array, Cache]:
    cfg = self.config
    # static_argnums counts `self` as argument 0: (x=1, positions=2, deterministic=3).
    layer_cls = nn.remat(Layer, static_argnums=(3,)) if cfg.remat and cache is None else Layer
    new_cache = []
    for i in range(cfg.num_layers):
      x, c = layer_cls(cfg, name=str(i))(x, positions, deterministic, None if cache is None else cache[i], index)
      new_cache.append(c)
    return x, new_cache


class LlamaModel(nn.Module):
  """The decoder (HF `model`): ids [B, T] -> final-normed hidden states [B, T, H] (and the updated cache).

  Without a cache, positions are 0..T-1 and attention is causal (right padding needs no key mask: no real
  token attends to a later pad). With `cache` (from `init_cache`) the tokens sit at positions
  `index .. index + T - 1`, their keys and values are written there, and each query sees the cache up to
  its own position: a prompt's prefill and each sampled token run through the same layers.
  """

  config: LlamaConfig

  @nn.compact
  def __call__(self, input_ids: Array, *, deterministic: bool, cache: Cache | None = None,
               index: Array | None = None) -> tuple[Array, Cache | None]:
    cfg = self.config
    dtype = cfg.compute_dtype
    embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=jnp.float32,
                     embedding_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std),
                                                                 ("vocab", "embed")),
                     name="embed_tokens")
    t = input_ids.shape[1]
    span = t if cache is None else cache[0]["k"].shape[1]
    if span > cfg.max_position_embeddings:
      raise UserError(f"{span} positions exceed the model's max_position_embeddings={cfg.max_position_embeddings}")
    start = 0 if cache is None else index
    positions = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), input_ids.shape)
    x = nn.with_logical_constraint(embed(input_ids), _ACT_AXES)
    x, new_cache = LayerStack(cfg, name="layers")(x, positions, deterministic, cache, index)
    x = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, name="norm")(x)
    return x, (None if cache is None else new_cache)


def init_cache(config: LlamaConfig, batch: int, length: int) -> Cache:
  """An empty key/value cache for `batch` rows of up to `length` positions, in the compute dtype."""
  shape = (batch, length, config.kv_heads, config.head_size)
  zeros = lambda: jnp.zeros(shape, config.compute_dtype)
  return [{"k": zeros(), "v": zeros()} for _ in range(config.num_layers)]
