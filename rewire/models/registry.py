"""The model registry: every model family's architectures, builders and the parameter paths stages need.

Stages, the probe, the study and the Hugging Face interop never import a family's modules or spell its
parameter paths; they ask the registry for "the model of this family". A `Family` says, once:

* which `model.json` architecture names it has, and which module class each one builds;
* which architecture is its language model (what pretraining, adaptation and the probe train through),
  and which architecture serves each task head (`TaskSpec.head`: "classification" or "span");
* the path of the token-embedding matrix (what forgetting resets, adaptation relearns and assembly swaps;
  the LM decoder is tied to it), of the vocabulary-sized LM bias, and of the body subtree that a task
  model takes over from pretraining.

A second family registers a second `Family` here and nothing else changes.

  family = family_of("RobertaForMaskedLM")
  model = make_model(family.lm, model_config)
  params = nn.unbox(init_variables(model, jax.random.key(0), seq_len=128))["params"]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from rewire.errors import UserError
from rewire.models.roberta import ModelConfig
from rewire.models.roberta_heads import (RobertaForMaskedLM, RobertaForQuestionAnswering,
                                         RobertaForSequenceClassification)

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Family:
  """One model family: its architectures and the parameter paths of its vocabulary-sized leaves."""
  name: str
  config_cls: type
  architectures: Mapping[str, type]   # model.json "architecture" -> flax module class
  lm: str                             # the language model's architecture
  task_heads: Mapping[str, str]       # TaskSpec.head -> architecture
  word_embedding: str                 # the token embeddings (tied to the LM decoder)
  vocab_bias: str                     # the LM head's vocabulary-sized bias
  body: str                           # path prefix of the body a task model takes from pretraining

  def word_embedding_path(self) -> tuple[str, ...]:
    return tuple(self.word_embedding.split("/"))

  def vocab_bias_path(self) -> tuple[str, ...]:
    return tuple(self.vocab_bias.split("/"))


ROBERTA = Family(
    name="roberta", config_cls=ModelConfig,
    architectures={"RobertaForMaskedLM": RobertaForMaskedLM,
                   "RobertaForSequenceClassification": RobertaForSequenceClassification,
                   "RobertaForQuestionAnswering": RobertaForQuestionAnswering},
    lm="RobertaForMaskedLM",
    task_heads={"classification": "RobertaForSequenceClassification", "span": "RobertaForQuestionAnswering"},
    word_embedding="roberta/embeddings/word_embeddings/embedding",
    vocab_bias="lm_head/bias",
    body="roberta/")

FAMILIES: dict[str, Family] = {f.name: f for f in (ROBERTA,)}
DEFAULT_FAMILY = "roberta"

# The RoBERTa names, which `model.json`, the tests and the HF interop use directly.
MLM = ROBERTA.lm
SEQUENCE_CLASSIFICATION = ROBERTA.task_heads["classification"]
QUESTION_ANSWERING = ROBERTA.task_heads["span"]
ARCHITECTURES = tuple(a for f in FAMILIES.values() for a in f.architectures)


def family(name: str = DEFAULT_FAMILY) -> Family:
  if name not in FAMILIES:
    raise UserError(f"unknown model family {name!r}; rewire has {', '.join(FAMILIES)}")
  return FAMILIES[name]


def family_of(architecture: str) -> Family:
  """The family an architecture name belongs to."""
  for f in FAMILIES.values():
    if architecture in f.architectures:
      return f
  raise UserError(f"unsupported architecture {architecture!r}; rewire has {', '.join(ARCHITECTURES)}")


def family_for(model_config: Any) -> Family:
  """The family whose config class `model_config` is."""
  for f in FAMILIES.values():
    if isinstance(model_config, f.config_cls):
      return f
  raise UserError(f"no model family has configs of type {type(model_config).__name__}")


def is_lm(architecture: str) -> bool:
  return family_of(architecture).lm == architecture


def make_model(architecture: str, config: Any, num_labels: int | None = None) -> nn.Module:
  """The rewire module for a `model.json` architecture name.

  Raises:
    UserError: unknown architecture, or a classification model without `num_labels`.
  """
  fam = family_of(architecture)
  cls = fam.architectures[architecture]
  if architecture == fam.task_heads.get("classification"):
    if not isinstance(num_labels, int) or num_labels < 1:
      raise UserError(f"{architecture} needs num_labels >= 1, got {num_labels!r}")
    return cls(config, num_labels)
  return cls(config)


def dummy_inputs(seq_len: int, num_masked: int = 1) -> tuple[Array, Array, Array]:
  """Shape-only inputs for `init`: ids [1, seq_len], mask [1, seq_len], masked_positions [1, num_masked]."""
  ids = jnp.zeros((1, seq_len), jnp.int32)
  return ids, jnp.ones((1, seq_len), jnp.int32), jnp.zeros((1, num_masked), jnp.int32)


def init_variables(model: nn.Module, rng: Array, seq_len: int = 8) -> dict[str, Any]:
  """Boxed variables `{"params": ...}` of any registered model (works under `jax.eval_shape`)."""
  ids, mask, positions = dummy_inputs(seq_len)
  lm_classes = tuple(f.architectures[f.lm] for f in FAMILIES.values())
  args = (ids, mask, positions) if isinstance(model, lm_classes) else (ids, mask)
  return model.init({"params": rng}, *args, deterministic=True)


def abstract_params(model: nn.Module) -> dict[str, Any]:
  """The unboxed param tree of `model` as `jax.ShapeDtypeStruct`s, without allocating anything."""
  return nn.unbox(jax.eval_shape(lambda k: init_variables(model, k), jax.random.key(0)))["params"]
