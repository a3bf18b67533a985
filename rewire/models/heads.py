"""Task models on the rewire encoder: sequence classification (NLI) and extractive QA (flax.linen).

Why: task adaptation trains the RoBERTa body plus a small head, and assembly/evaluation must be able to
hand the result to Hugging Face. So these modules reuse `rewire.models.roberta.RobertaModel` (the subtree is named
`roberta`, as in HF) and give the heads Hugging Face's Flax names and numerics:

* `RobertaForSequenceClassification(config, num_labels)` = HF `FlaxRobertaForSequenceClassification`:
  `roberta/...` (no pooler) + `classifier/dense`, `classifier/out_proj`; the `<s>` hidden state goes
  through dropout, dense, tanh, dropout, out_proj. Returns logits [B, num_labels].
* `RobertaForQuestionAnswering(config)` = HF `FlaxRobertaForQuestionAnswering`: `roberta/...` +
  `qa_outputs` (2 logits per token). Returns (start_logits [B, L], end_logits [B, L]).

Both take `(input_ids, attention_mask, *, deterministic)`, carry logical axis names on every weight (for
`rewire.sharding`) and return float32 logits whatever the compute dtype. `make_model` builds any of the
three architectures from its `model.json` name, which `rewire.hf` uses for export and import.

  model = RobertaForSequenceClassification(cfg, num_labels=3)
  params = nn.unbox(init_variables(model, jax.random.key(0), seq_len=128))["params"]
  params["roberta"] = pretrained_mlm_params["roberta"]           # start the body from pretraining
  logits = model.apply({"params": params}, ids, mask, deterministic=True)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rewire.errors import UserError
from rewire.models.layers import Dense, dropout
from rewire.models.roberta import ModelConfig, RobertaForMaskedLM, RobertaModel, dummy_inputs

Array = jax.Array

MLM = "RobertaForMaskedLM"
SEQUENCE_CLASSIFICATION = "RobertaForSequenceClassification"
QUESTION_ANSWERING = "RobertaForQuestionAnswering"
ARCHITECTURES = (MLM, SEQUENCE_CLASSIFICATION, QUESTION_ANSWERING)


class ClassificationHead(nn.Module):
  """HF `classifier`: `<s>` state -> dropout -> dense -> tanh -> dropout -> out_proj."""

  config: ModelConfig
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

  config: ModelConfig
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

  config: ModelConfig

  def setup(self):
    self.roberta = RobertaModel(self.config)
    cfg = self.config
    self.qa_outputs = Dense(cfg.hidden_size, 2, ("embed", None), (None,), cfg.init_std, cfg.compute_dtype)

  def __call__(self, input_ids: Array, attention_mask: Array, *,
               deterministic: bool) -> tuple[Array, Array]:
    h = self.roberta(input_ids, attention_mask, deterministic=deterministic)
    logits = self.qa_outputs(h).astype(jnp.float32)  # [B, L, 2]
    return logits[..., 0], logits[..., 1]


def make_model(architecture: str, config: ModelConfig, num_labels: int | None = None) -> nn.Module:
  """The rewire module for a `model.json` architecture name.

  Raises:
    UserError: unknown architecture, or a classification model without `num_labels`.
  """
  if architecture == MLM:
    return RobertaForMaskedLM(config)
  if architecture == SEQUENCE_CLASSIFICATION:
    if not isinstance(num_labels, int) or num_labels < 1:
      raise UserError(f"{SEQUENCE_CLASSIFICATION} needs num_labels >= 1, got {num_labels!r}")
    return RobertaForSequenceClassification(config, num_labels)
  if architecture == QUESTION_ANSWERING:
    return RobertaForQuestionAnswering(config)
  raise UserError(f"unsupported architecture {architecture!r}; rewire has {', '.join(ARCHITECTURES)}")


def init_variables(model: nn.Module, rng: Array, seq_len: int = 8) -> dict[str, Any]:
  """Boxed variables `{"params": ...}` of any of the three models (works under `jax.eval_shape`)."""
  ids, mask, positions = dummy_inputs(seq_len)
  args = (ids, mask, positions) if isinstance(model, RobertaForMaskedLM) else (ids, mask)
  return model.init({"params": rng}, *args, deterministic=True)


def abstract_params(model: nn.Module) -> dict[str, Any]:
  """The unboxed param tree of `model` as `jax.ShapeDtypeStruct`s, without allocating anything."""
  return nn.unbox(jax.eval_shape(lambda k: init_variables(model, k), jax.random.key(0)))["params"]
