"""Llama's heads (flax.linen): the causal LM and sequence classification on the last real token.

Why: pretraining, language adaptation and the probe train through the causal LM, task adaptation trains
the body plus a small head, and every result converts to Hugging Face. Each model reuses
`rewire.models.llama.LlamaModel` (the subtree is named `model`, as in HF):

* `LlamaForCausalLM(config)` = HF `(Flax)LlamaForCausalLM`: next-token logits float32[B, T, V] at every
  position. With `tie_word_embeddings` the output projection is the transposed `model/embed_tokens`
  matrix and there is no `lm_head`; untied, `lm_head/kernel` [H, V] is its own leaf (what
  `forget.pattern=output` resets). `decode(ids, cache, index)` runs the same network over a
  key/value cache for sampling (`rewire.generate`).
* `LlamaForSequenceClassification(config, num_labels)` = HF `LlamaForSequenceClassification`: `model/...`
  + `score/kernel` [H, num_labels] (no bias) applied to the hidden state of each row's last non-padding
  token (right padding: position `sum(attention_mask) - 1`). Returns logits float32[B, num_labels].

Both take `(input_ids, attention_mask, *, deterministic)` like RoBERTa's heads, so the stages call any
family the same way (a causal model needs no key mask for right-padded rows; the classifier reads the
mask to find the last token).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rewire.errors import UserError
from rewire.models.layers import Dense
from rewire.models.llama import Cache, LlamaConfig, LlamaModel

Array = jax.Array


class LlamaForCausalLM(nn.Module):
  """Llama with its LM head: ids [B, T] -> next-token logits float32[B, T, V]."""

  config: LlamaConfig

  def setup(self):
    cfg = self.config
    self.model = LlamaModel(cfg)
    if not cfg.tie_word_embeddings:
      self.lm_head = Dense(cfg.hidden_size, cfg.vocab_size, ("embed", "vocab"), (None,), cfg.init_std,
                           cfg.compute_dtype, use_bias=False)

  def _head_kernel(self) -> Array:
    """The output projection float32[H, V]: the transposed `model/embed_tokens` when tied, else `lm_head`."""
    if self.config.tie_word_embeddings:
      return nn.unbox(self.model.variables["params"]["embed_tokens"]["embedding"]).T
    return self.lm_head.kernel

  def _logits(self, h: Array) -> Array:
    return jnp.dot(h, self._head_kernel().astype(self.config.compute_dtype)).astype(jnp.float32)

  def __call__(self, input_ids: Array, attention_mask: Array | None = None, *, deterministic: bool) -> Array:
    del attention_mask  # causal attention over right-padded rows: no real token sees a pad
    h, _ = self.model(input_ids, deterministic=deterministic)
    return self._logits(h)

  def hidden_and_head(self, input_ids: Array, *, deterministic: bool) -> tuple[Array, Array]:
    """The final hidden states [B, T, H] (compute dtype) and the output kernel float32[H, V] (the transposed
    embedding when tied): what `rewire.models.head_xent` turns into the loss without the logits."""
    h, _ = self.model(input_ids, deterministic=deterministic)
    return h, self._head_kernel()

  def decode(self, input_ids: Array, cache: Cache, index: Array) -> tuple[Array, Cache]:
    """Logits [B, T, V] of `input_ids` at positions index.., and the cache with their keys and values."""
    h, cache = self.model(input_ids, deterministic=True, cache=cache, index=index)
    return self._logits(h), cache


class LlamaForSequenceClassification(nn.Module):
  """Llama + `score` on the last non-padding token: ids [B, T], mask [B, T] -> logits float32[B, num_labels]."""

  config: LlamaConfig
  num_labels: int

  def setup(self):
    if self.num_labels < 1:
      raise UserError(f"num_labels must be >= 1, got {self.num_labels}")
    cfg = self.config
    self.model = LlamaModel(cfg)
    self.score = Dense(cfg.hidden_size, self.num_labels, ("embed", None), (None,), cfg.init_std,
                       cfg.compute_dtype, use_bias=False)

  def __call__(self, input_ids: Array, attention_mask: Array, *, deterministic: bool) -> Array:
    h, _ = self.model(input_ids, deterministic=deterministic)
    last = jnp.maximum(attention_mask.astype(jnp.int32).sum(-1) - 1, 0)  # [B]
    h_last = jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]  # [B, H]
    return self.score(h_last).astype(jnp.float32)
