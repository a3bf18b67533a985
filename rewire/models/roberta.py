"""The RoBERTa encoder (flax.linen) and its config: the body of every RoBERTa-family model.

Why this module exists rather than reusing `transformers.FlaxRobertaModel`:

* Every weight carries logical axis names (`nn.with_logical_partitioning`), so `rewire.sharding` can map
  them onto a `data`/`fsdp`/`tensor` mesh with a rules table.
* The hot path is tuned for a fast train step (cheap dropout bits, erf GELU, scale folded into the query
  kernel); see `benchmarks/README.md` for the measurements.

The parameter tree is *exactly* Hugging Face's `FlaxRobertaModel` tree under `roberta/` (names, nesting,
shapes), and the numerics match it (position ids offset past the pad index, post-LayerNorm, exact GELU,
additive attention mask), so checkpoints convert both ways by renaming nothing. The heads on top (masked
LM, classification, QA) are in `rewire.models.roberta_heads`; the family's paths and builders in
`rewire.models.registry`.

  hidden = RobertaModel(cfg).apply({"params": params["roberta"]}, ids, mask, deterministic=True)  # [B, L, H]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rewire.errors import UserError
from rewire.models.config_base import ConfigBase
from rewire.models.layers import Dense, LayerNorm, attention, dropout, gelu, qkv_projection, word_embedding_init

Array = jax.Array

# Logical axis names of activations; harmless no-ops unless logical axis rules are active.
_ACT_AXES = ("batch", "length", "embed")


@dataclasses.dataclass(frozen=True)
class RobertaConfig(ConfigBase):
  """Shape and regularisation of a RoBERTa model. Defaults are RoBERTa-base."""

  family_name = "roberta"

  vocab_size: int
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 514  # seq_len + 2: positions are offset past the pad index
  type_vocab_size: int = 1
  layer_norm_eps: float = 1e-5
  dropout: float = 0.1
  attention_dropout: float = 0.1
  init_std: float = 0.02
  pad_token_id: int = 1
  dtype: str = "float32"  # activation/compute dtype ("bfloat16" on accelerators); params stay float32
  remat: bool = False  # jax.checkpoint each layer

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise UserError(
          f"model.hidden_size={self.hidden_size} is not a multiple of model.num_heads={self.num_heads}")
    self.check_common()

  def to_hf_dict(self) -> dict[str, Any]:
    """Keyword arguments for `transformers.RobertaConfig` describing the same network."""
    return dict(
        vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
        num_attention_heads=self.num_heads, intermediate_size=self.intermediate_size,
        max_position_embeddings=self.max_position_embeddings, type_vocab_size=self.type_vocab_size,
        layer_norm_eps=self.layer_norm_eps, hidden_dropout_prob=self.dropout,
        attention_probs_dropout_prob=self.attention_dropout, initializer_range=self.init_std,
        pad_token_id=self.pad_token_id, hidden_act="gelu", tie_word_embeddings=True)


# ----------------------------------------------------------------------------------------------------------
# Encoder.


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout (HF `roberta/embeddings`)."""

  config: RobertaConfig

  @nn.compact
  def __call__(self, input_ids: Array, deterministic: bool) -> Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    word = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=jnp.float32,
                    embedding_init=nn.with_logical_partitioning(
                        word_embedding_init(cfg.init_std, cfg.pad_token_id), ("vocab", "embed")),
                    name="word_embeddings")
    pos = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, dtype=dtype, param_dtype=jnp.float32,
                   embedding_init=nn.with_logical_partitioning(
                       nn.initializers.normal(cfg.init_std), (None, "embed")),
                   name="position_embeddings")
    token_type = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=jnp.float32,
                          embedding_init=nn.with_logical_partitioning(
                              nn.initializers.normal(cfg.init_std), (None, "embed")),
                          name="token_type_embeddings")
    # fairseq/HF positions: pads get pad_token_id, real tokens pad_token_id+1, +2, ... in order.
    not_pad = (input_ids != cfg.pad_token_id).astype(jnp.int32)
    position_ids = jnp.cumsum(not_pad, axis=1) * not_pad + cfg.pad_token_id
    # Token types are all zero: add row 0 as a broadcast bias instead of gathering it per token.
    h = word(input_ids) + pos(position_ids) + token_type.embedding[0].astype(dtype)
    h = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype, name="LayerNorm")(h)
    h = dropout(h, cfg.dropout, None if deterministic else self.make_rng("dropout"))
    return nn.with_logical_constraint(h, _ACT_AXES)


class SelfAttention(nn.Module):
  """Multi-head self-attention (HF `attention/self`)."""

  config: RobertaConfig

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool) -> Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    h, n = cfg.hidden_size, cfg.num_heads
    d = h // n
    dense = lambda name: Dense(h, h, ("embed", "heads"), ("heads",), cfg.init_std, dtype, name=name)
    weights = [dense(nm).weights() for nm in ("query", "key", "value")]
    q, k, v = qkv_projection(x, weights, n, 1.0 / math.sqrt(d), dtype)
    rng = None
    if not deterministic and cfg.attention_dropout > 0.0:
      rng = self.make_rng("dropout")
    out = attention(q, k, v, bias, cfg.attention_dropout, rng)
    return out.reshape(x.shape[:2] + (h,))


class _ResidualOutput(nn.Module):
  """HF `attention/output` and `output`: dense, dropout, residual add, post-LayerNorm."""

  config: RobertaConfig
  in_features: int
  kernel_axes: tuple[str | None, ...]

  @nn.compact
  def __call__(self, y: Array, residual: Array, rng: Array | None) -> Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    y = Dense(self.in_features, cfg.hidden_size, self.kernel_axes, ("embed",), cfg.init_std, dtype,
              name="dense")(y)
    y = dropout(y, cfg.dropout, rng)
    return LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype, name="LayerNorm")(y + residual)


class Attention(nn.Module):
  """HF `attention`: `self` (multi-head attention) then `output` (dense, dropout, residual, LN)."""

  config: RobertaConfig

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool) -> Array:
    cfg = self.config
    a = SelfAttention(cfg, name="self")(x, bias, deterministic)
    rng = None if deterministic else self.make_rng("dropout")
    return _ResidualOutput(cfg, cfg.hidden_size, ("heads", "embed"), name="output")(a, x, rng)


class Intermediate(nn.Module):
  """HF `intermediate`: dense to the FFN width and exact (erf) GELU."""

  config: RobertaConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    y = Dense(cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), ("mlp",), cfg.init_std,
              cfg.compute_dtype, name="dense")(x)
    return gelu(y)


class Layer(nn.Module):
  """One post-LN transformer layer (HF `encoder/layer/{i}`)."""

  config: RobertaConfig

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool) -> Array:
    cfg = self.config
    a = Attention(cfg, name="attention")(x, bias, deterministic)
    y = Intermediate(cfg, name="intermediate")(a)
    rng = None if deterministic else self.make_rng("dropout")
    y = _ResidualOutput(cfg, cfg.intermediate_size, ("mlp", "embed"), name="output")(y, a, rng)
    return nn.with_logical_constraint(y, _ACT_AXES)


class LayerStack(nn.Module):
  """HF `encoder/layer`: layers named "0", "1", ... (a Python loop, not `nn.scan`, to keep HF's tree)."""

  config: RobertaConfig

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool) -> Array:
    cfg = self.config
    # static_argnums counts `self` as argument 0: (x=1, bias=2, deterministic=3).
    layer_cls = nn.remat(Layer, static_argnums=(3,)) if cfg.remat else Layer
    for i in range(cfg.num_layers):
      x = layer_cls(cfg, name=str(i))(x, bias, deterministic)
    return x


class Encoder(nn.Module):
  """HF `encoder`."""

  config: RobertaConfig

  @nn.compact
  def __call__(self, x: Array, bias: Array, deterministic: bool) -> Array:
    return LayerStack(self.config, name="layer")(x, bias, deterministic)


def attention_bias(attention_mask: Array, dtype: Any) -> Array:
  """[B, L] 0/1 key mask -> [B, 1, 1, L] additive bias (0 or the dtype's most negative value, as HF)."""
  neg = jnp.finfo(dtype).min
  return jnp.where(attention_mask[:, None, None, :] > 0, jnp.zeros((), dtype), jnp.asarray(neg, dtype))


class RobertaModel(nn.Module):
  """The RoBERTa encoder (HF `roberta`): ids [B, L] and 0/1 mask [B, L] -> hidden states [B, L, H]."""

  config: RobertaConfig

  def setup(self):
    self.embeddings = Embeddings(self.config)
    self.encoder = Encoder(self.config)

  def __call__(self, input_ids: Array, attention_mask: Array, *, deterministic: bool) -> Array:
    h = self.embeddings(input_ids, deterministic)
    bias = attention_bias(attention_mask, self.config.compute_dtype)
    return self.encoder(h, bias, deterministic)
