"""RoBERTa's three heads (flax.linen): masked LM at masked positions only, sequence classification, QA.

Why: pretraining and language adaptation train through the MLM head, task adaptation trains the body plus a
small task head, and every result must convert to Hugging Face. So each model reuses
`rewire.models.roberta.RobertaModel` (the subtree is named `roberta`, as in HF) and gives its head Hugging
Face's Flax names and numerics:

* `RobertaForMaskedLM(config)` = HF `FlaxRobertaForMaskedLM`, except that the head (dense, GELU,
  LayerNorm, decoder tied to the word embeddings, plus `lm_head/bias`) runs only at the gathered
  `masked_positions int32[B, M]`, as fairseq does, instead of projecting all `B*L` positions onto the
  vocabulary (with a 50k vocabulary that projection is most of a small model's compute). Returns logits
  [B, M, V]; `encode` returns the hidden states [B, L, H]. The tied decoder has no `lm_head/decoder` entry.

* `RobertaForSequenceClassification(config, num_labels)` = HF `FlaxRobertaForSequenceClassification`:
  `roberta/...` (no pooler) + `classifier/dense`, `classifier/out_proj`; the `<s>` hidden state goes
  through dropout, dense, tanh, dropout, out_proj. Returns logits [B, num_labels].
* `RobertaForQuestionAnswering(config)` = HF `FlaxRobertaForQuestionAnswering`: `roberta/...` +
  `qa_outputs` (2 logits per token). Returns (start_logits [B, L], end_logits [B, L]).

Both take `(input_ids, attention_mask, *, deterministic)`, carry logical axis names on every weight (for
`rewire.sharding`) and return float32 logits whatever the compute dtype. The registry builds any
architecture by its `model.json` name (`rewire.models.registry.make_model`).

  model = RobertaForSequenceClassification(cfg, num_labels=3)
  params = nn.unbox(registry.init_variables(model, jax.random.key(0), seq_len=128))["params"]
  params["roberta"] = pretrained_mlm_params["roberta"]           # start the body from pretraining
  logits = model.apply({"params": params}, ids, mask, deterministic=True)
"""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp

from rewire.errors import UserError
from rewire.models.layers import Dense, LayerNorm, dropout, gelu, logical_param
from rewire.models.roberta import RobertaConfig, RobertaModel

Array = jax.Array



class LMHead(nn.Module):
  """HF `lm_head`: dense, GELU, LayerNorm, decoder tied to the word embeddings, plus `bias` [V]."""

  config: RobertaConfig

  @nn.compact
  def __call__(self, h: Array, word_embeddings: Array) -> Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    h = Dense(cfg.hidden_size, cfg.hidden_size, ("embed", None), ("embed",), cfg.init_std, dtype,
              name="dense")(h)
    h = gelu(h)
    h = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype, name="layer_norm")(h)
    bias = logical_param(self, "bias", nn.initializers.zeros, (cfg.vocab_size,), ("vocab",))
    logits = jnp.einsum("...h,vh->...v", h, word_embeddings.astype(dtype))
    return logits + bias.astype(dtype)


class RobertaForMaskedLM(nn.Module):
  """RoBERTa with the MLM head evaluated only at `masked_positions`.

  `__call__(input_ids int[B, L], attention_mask int[B, L], masked_positions int32[B, M], *, deterministic)`
  returns logits [B, M, V] (float32 when the compute dtype is float32). Padding slots of
  `masked_positions` may hold any in-range index (e.g. 0); mask them out in the loss.
  `encode(input_ids, attention_mask, *, deterministic)` returns the hidden states [B, L, H].
  """

  config: RobertaConfig

  def setup(self):
    self.roberta = RobertaModel(self.config)
    self.lm_head = LMHead(self.config)

  def encode(self, input_ids: Array, attention_mask: Array, *, deterministic: bool) -> Array:
    return self.roberta(input_ids, attention_mask, deterministic=deterministic)

  def __call__(self, input_ids: Array, attention_mask: Array, masked_positions: Array, *,
               deterministic: bool) -> Array:
    h = self.roberta(input_ids, attention_mask, deterministic=deterministic)
    positions = masked_positions[..., None].astype(jnp.int32)
    h = jnp.take_along_axis(h, positions, axis=1, mode="clip")  # [B, M, H]
    emb = self.roberta.embeddings.variables["params"]["word_embeddings"]["embedding"]
    return self.lm_head(h, nn.unbox(emb))


class ClassificationHead(nn.Module):
  """HF `classifier`: `<s>` state -> dropout -> dense -> tanh -> dropout -> out_proj."""

  config: RobertaConfig
  num_labels: int
  classifier_dropout: float | None = None  # None: config.dropout (HF: hidden_dropout_prob)

  @nn.compact
  def __call__(self, h: Array, deterministic: bool) -> Array:
    cfg = self.config
    dtype = cfg.compute_dtype
    rate = cfg.dropout if self.classifier_dropout is None else self.classifier_dropout
    rng = (lambda: None) if deterministic else (lambda: self.make_rng("dropout"))
    x = h[:, 0, :]  # <s>, RoBERTa's [CLS]
    x = dropout(x, rate, rng())
    x = Dense(cfg.hidden_size, cfg.hidden_size, ("embed", None), ("embed",), cfg.init_std, dtype,
              name="dense")(x)
    x = jnp.tanh(x)
    x = dropout(x, rate, rng())
    x = Dense(cfg.hidden_size, self.num_labels, ("embed", None), (None,), cfg.init_std, dtype,
              name="out_proj")(x)
    return x.astype(jnp.float32)


class RobertaForSequenceClassification(nn.Module):
  """RoBERTa + classification head on `<s>`: ids [B, L], mask [B, L] -> logits float32[B, num_labels]."""

  config: RobertaConfig
  num_labels: int
  classifier_dropout: float | None = None

  def setup(self):
    if self.num_labels < 1:
      raise UserError(f"num_labels must be >= 1, got {self.num_labels}")
    self.roberta = RobertaModel(self.config)
    self.classifier = ClassificationHead(self.config, self.num_labels, self.classifier_dropout)

  def __call__(self, input_ids: Array, attention_mask: Array, *, deterministic: bool) -> Array:
    h = self.roberta(input_ids, attention_mask, deterministic=deterministic)
    return self.classifier(h, deterministic)


class RobertaForQuestionAnswering(nn.Module):
  """RoBERTa + span head: ids [B, L], mask [B, L] -> (start_logits, end_logits), each float32[B, L].

  Like HF, no mask is applied to the logits: callers mask out padding and question tokens.
  """

  config: RobertaConfig

  def setup(self):
    self.roberta = RobertaModel(self.config)
    cfg = self.config
    self.qa_outputs = Dense(cfg.hidden_size, 2, ("embed", None), (None,), cfg.init_std, cfg.compute_dtype)

  def __call__(self, input_ids: Array, attention_mask: Array, *,
               deterministic: bool) -> tuple[Array, Array]:
    h = self.roberta(input_ids, attention_mask, deterministic=deterministic)
    logits = self.qa_outputs(h).astype(jnp.float32)  # [B, L, 2]
    return logits[..., 0], logits[..., 1]
