"""The model registry: every model family's architectures, builders and the parameter paths stages need.

Stages, the probe, the study and the Hugging Face interop never import a family's modules or spell its
parameter paths; they ask the registry for "the model of this family". A `Family` says, once:

* which `model.json` architecture names it has, and which module class each one builds;
* which architecture is its language model (what pretraining, adaptation and the probe train through),
  and which architecture serves each task head (`TaskSpec.head`: "classification" or "span");
* the path of the token-embedding matrix (what forgetting resets, adaptation relearns and assembly swaps),
  of the untied output head and of the vocabulary-sized LM bias where the family has them, and of the
  body subtree that a task model takes over from pretraining;
* its objective (masked or next-token LM), how many positions it needs beyond `data.seq_len`, and the
  model dimensions a warm start takes from its source.

Two families are registered: `roberta` (the encoder of Chen et al. 2023, the default) and `llama` (a
Llama-family causal decoder). A third registers a third `Family` here.

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
from rewire.models.causal_lm import CausalLM, next_token_unigram_loss
from rewire.models.llama import LlamaConfig
from rewire.models.llama_heads import LlamaForCausalLM, LlamaForSequenceClassification
from rewire.models.mlm import MaskedLM, MaskingSpec, unigram_loss
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
  word_embedding: str                 # the token embeddings (the input side of the LM)
  vocab_bias: str | None              # the LM head's vocabulary-sized bias (None: the family has none)
  body: str                           # path prefix of the body a task model takes from pretraining
  objective: str                      # "masked" (MLM at sampled positions) | "next_token" (causal LM)
  shape_keys: tuple[str, ...]         # model dimensions a warm start takes from its source
  output_head: str | None = None      # the untied LM output projection (absent when tied)
  position_offset: int = 0            # positions needed beyond data.seq_len (RoBERTa: 2, past the pad)
  zero_pad_row: bool = True           # fresh token embeddings get a zero padding row (fairseq) or not (HF Llama)

  def vocab_leaves(self) -> str:
    """A regex of every vocabulary-sized leaf (what a new tokenizer re-initialises)."""
    return "|".join(p for p in (self.word_embedding, self.output_head, self.vocab_bias) if p)

  def resolve(self, pattern: str) -> str:
    """A config's leaf pattern as a regex: a name of `LEAF_SETS` resolved for this family ("output" and
    "both" need an output head), any other string returned as the regex it is. A tied model simply has no
    output-head leaf to match."""
    if pattern in ("output", "both") and self.output_head is None:
      raise UserError(f"the {self.name} family has no separate output head; forget.pattern={pattern!r} "
                      f"needs one (use input)")
    named = {"input": self.word_embedding, "output": self.output_head,
             "both": f"{self.word_embedding}|{self.output_head}",
             "embeddings": "|".join(p for p in (self.word_embedding, self.output_head) if p),
             "vocab": self.vocab_leaves()}
    return named.get(pattern, pattern)

  def resolve_rules(self, rules) -> tuple[tuple[str, str], ...]:
    """`optim.rules` with each rule's pattern resolved (`resolve`)."""
    return tuple((self.resolve(r[0]), *r[1:]) if len(r) == 2 else tuple(r) for r in rules)

  def lm_matrices(self, params) -> dict[str, str]:
    """The LM's vocabulary-sized matrices present in `params`: {"input": path[, "output": path]}."""
    out = {"input": self.word_embedding}
    if self.output_head:
      node = params
      for k in self.output_head.split("/"):
        node = node.get(k) if isinstance(node, Mapping) else None
      if node is not None:
        out["output"] = self.output_head
    return out

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
    body="roberta/", objective="masked", position_offset=2,
    shape_keys=("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings",
                "type_vocab_size", "layer_norm_eps"))

LLAMA = Family(
    name="llama", config_cls=LlamaConfig,
    architectures={"LlamaForCausalLM": LlamaForCausalLM,
                   "LlamaForSequenceClassification": LlamaForSequenceClassification},
    lm="LlamaForCausalLM",
    task_heads={"classification": "LlamaForSequenceClassification"},
    word_embedding="model/embed_tokens/embedding", output_head="lm_head/kernel", vocab_bias=None,
    body="model/", objective="next_token", zero_pad_row=False,
    shape_keys=("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings"))

# The names a config may give instead of a regex (forget.pattern, reinit.pattern, optim.rules patterns).
LEAF_SETS = {
    "input": "the token embeddings",
    "output": "the untied LM output head (decoders with tie_word_embeddings=False)",
    "both": "input and output",
    "embeddings": "the LM's vocabulary-sized matrices: the token embeddings and the untied output head",
    "vocab": "every vocabulary-sized leaf: the embeddings plus the LM bias where the family has one",
}

FAMILIES: dict[str, Family] = {f.name: f for f in (ROBERTA, LLAMA)}
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


def task_architecture(fam: Family, head: str) -> str:
  """The family's architecture for a task head ("classification", "span"), or a UserError naming both."""
  if head not in fam.task_heads:
    raise UserError(f"the {fam.name} family has no {head!r} task head (it has {', '.join(fam.task_heads)})")
  return fam.task_heads[head]


def run_family(model_group) -> Family:
  """The family a run's `model` config group names (`model.family`, "roberta" when absent)."""
  return family(model_group.get("family", DEFAULT_FAMILY))


def config_from_info(info: Mapping[str, Any]) -> tuple[Family, Any]:
  """The family and model config a `model.json` describes (its other keys are metadata)."""
  fam = family_of(info.get("architecture", MLM))
  fields = {f.name for f in dataclasses.fields(fam.config_cls)}
  return fam, fam.config_cls.from_dict({k: v for k, v in info.items() if k in fields})


def model_config_from(config, vocab_size: int, pad_id: int) -> Any:
  """The family's model config of a run: `config.model` at the tokenizer's size and padding id.

  `model.family` picks the family ("roberta" when absent) and the keys of its config class are read (the
  group's other keys belong to the other family); `max_position_embeddings` 0 means `data.seq_len` plus
  the family's position offset.
  """
  fam = run_family(config.model)
  d = dict(config.model)
  fields = {f.name for f in dataclasses.fields(fam.config_cls)}
  d = {k: v for k, v in d.items() if k in fields}  # the model group also holds the other family's keys
  if d["vocab_size"] and d["vocab_size"] != vocab_size:
    raise UserError(f"config.model.vocab_size={d['vocab_size']} but the tokenizer has {vocab_size} entries")
  d["vocab_size"] = vocab_size
  need = config.data.seq_len + fam.position_offset
  d["max_position_embeddings"] = d["max_position_embeddings"] or need
  if d["max_position_embeddings"] < need:
    raise UserError(f"model.max_position_embeddings={d['max_position_embeddings']} is too small for "
                    f"data.seq_len={config.data.seq_len} (the {fam.name} family needs {need})")
  d["pad_token_id"] = pad_id
  return fam.config_cls.from_dict(d)


def lm_objective(model: nn.Module, specials, *, mask_prob: float, max_predictions: int):
  """The training objective of a family's LM: `MaskedLM` or `CausalLM` (both fit `rewire.step`)."""
  if family_of_module(model).objective == "next_token":
    return CausalLM(model, specials.pad)
  return MaskedLM(model, MaskingSpec(mask_id=specials.mask, pad_id=specials.pad, vocab_size=specials.vocab_size,
                                     mask_prob=mask_prob, max_predictions=max_predictions))


def lm_baseline(fam: Family, counts, valid, specials) -> float:
  """The unigram loss a trained LM of the family must beat on `valid` (masked or next-token targets)."""
  if fam.objective == "next_token":
    return next_token_unigram_loss(counts, valid, pad_id=specials.pad, bos_id=specials.bos)
  return unigram_loss(counts, valid, specials.mask)


def family_of_module(model: nn.Module) -> Family:
  for f in FAMILIES.values():
    if any(isinstance(model, cls) for cls in f.architectures.values()):
      return f
  raise UserError(f"no model family has modules of type {type(model).__name__}")


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
  masked_lms = tuple(f.architectures[f.lm] for f in FAMILIES.values() if f.objective == "masked")
  args = (ids, mask, positions) if isinstance(model, masked_lms) else (ids, mask)
  return model.init({"params": rng}, *args, deterministic=True)


def abstract_params(model: nn.Module) -> dict[str, Any]:
  """The unboxed param tree of `model` as `jax.ShapeDtypeStruct`s, without allocating anything."""
  return nn.unbox(jax.eval_shape(lambda k: init_variables(model, k), jax.random.key(0)))["params"]
