"""The model-family interface: one class owns everything a family decides, so no stage asks which it holds.

A family is a subclass of `Family`, registered once in `rewire.models.registry`. It declares its config
class (the `model` config group is derived from that dataclass's defaults), its architectures, the paths
of its vocabulary-sized leaves, and it implements building, its LM objective and baseline, FLOPs per step,
how fresh vocabulary rows are drawn, and its Hugging Face mapping. Pretraining, adaptation, fine-tuning,
assembly, the probe, the study, the HF interop and the sampler call these methods and never branch on a
family's name. A new family (even one defined in a test file) subclasses `Family` and calls
`registry.register`.

  fam = registry.family(config.model.family)
  model = fam.build(fam.lm, fam.model_config(config.model, vocab_size=V, pad_id=1, seq_len=128))
  objective = fam.objective(model, specials, mask_prob=0.15, max_predictions=20)
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from rewire.errors import UserError
from rewire.forgetting import fresh_rows

Array = jax.Array

# The names a config may give instead of a regex (forget.pattern, reinit.pattern, optim.rules patterns).
LEAF_SETS = {
    "input": "the token embeddings",
    "output": "the untied LM output head (decoders with tie_word_embeddings=False)",
    "both": "input and output",
    "embeddings": "the LM's vocabulary-sized matrices: the token embeddings and the untied output head",
    "vocab": "every vocabulary-sized leaf: the embeddings plus the LM bias where the family has one",
}

# Keys of the `model` group that a run derives rather than reads: 0 means "from the tokenizer" and
# "data.seq_len plus the family's position offset"; the padding id always comes from the tokenizer.
_DERIVED = {"vocab_size": 0, "max_position_embeddings": 0}
_FROM_TOKENIZER = ("pad_token_id",)


class Family:
  """A model family. Subclasses set the class attributes and implement `objective` and `baseline_loss`."""

  name: ClassVar[str]
  config_cls: ClassVar[type]              # a frozen dataclass (with `rewire.models.config_base.ConfigBase`)
  architectures: ClassVar[Mapping[str, type]]   # model.json "architecture" -> flax module class
  lm: ClassVar[str]                       # the language model (what pretraining, adaptation, the probe train)
  task_heads: ClassVar[Mapping[str, str]] = {}  # TaskSpec.head ("classification", "span") -> architecture
  word_embedding: ClassVar[str]           # path of the token embeddings (the input side of the LM)
  output_head: ClassVar[str | None] = None   # path of an untied LM output projection [H, V] (when present)
  vocab_bias: ClassVar[str | None] = None    # path of the LM head's vocabulary-sized bias (when present)
  body: ClassVar[str]                     # path prefix of the body a task model takes over from pretraining
  shape_keys: ClassVar[tuple[str, ...]] = ()  # model dimensions a warm start takes from its source
  tiny_shape: ClassVar[Mapping[str, Any]] = {}  # the CPU-sized model of the `tiny` presets (config keys)
  position_offset: ClassVar[int] = 0      # positions needed beyond data.seq_len
  zero_pad_row: ClassVar[bool] = True     # fresh token embeddings get a zero padding row
  loss_name: ClassVar[str] = "LM"         # how reports name its LM loss ("MLM", "next-token")
  generates: ClassVar[bool] = False       # whether `rewire.generate` can sample from its LM
  hf_model_types: ClassVar[tuple[str, ...]] = ()  # HF config.json model_type values it imports

  # -- config ------------------------------------------------------------------------------------------
  def config_group(self) -> ml_collections.ConfigDict:
    """The `model` config group of a run that builds this family's model: `family` and every field of
    `config_cls` with its declared default (the derived keys 0, the padding id left to the tokenizer)."""
    d = {"family": self.name}
    for f in dataclasses.fields(self.config_cls):
      if f.name in _FROM_TOKENIZER:
        continue
      d[f.name] = _DERIVED.get(f.name, f.default)
    return ml_collections.ConfigDict(d)

  def model_config(self, group, *, vocab_size: int, pad_id: int, seq_len: int) -> Any:
    """The config of a run's model: its `model` group at the tokenizer's size and padding id.

    `max_position_embeddings` 0 means `seq_len` plus the family's position offset.
    """
    d = {k: v for k, v in dict(group).items() if k != "family"}
    if d.get("vocab_size") and d["vocab_size"] != vocab_size:
      raise UserError(f"config.model.vocab_size={d['vocab_size']} but the tokenizer has {vocab_size} entries")
    d["vocab_size"] = vocab_size
    fields = {f.name for f in dataclasses.fields(self.config_cls)}
    if "max_position_embeddings" in fields:  # a family with learned or bounded positions
      need = seq_len + self.position_offset
      d["max_position_embeddings"] = d.get("max_position_embeddings") or need
      if d["max_position_embeddings"] < need:
        raise UserError(f"model.max_position_embeddings={d['max_position_embeddings']} is too small for "
                        f"data.seq_len={seq_len} (the {self.name} family needs {need})")
    d["pad_token_id"] = pad_id
    return self.config_cls.from_dict(d)

  def config_from_info(self, info: Mapping[str, Any]) -> Any:
    """The model config a `model.json` describes (its other keys are metadata)."""
    fields = {f.name for f in dataclasses.fields(self.config_cls)}
    return self.config_cls.from_dict({k: v for k, v in info.items() if k in fields})

  def describe(self, config_group) -> str:
    """How reports name a model of this family, from its `model` config group."""
    return self.name

  # -- building ----------------------------------------------------------------------------------------
  def build(self, architecture: str, config: Any, num_labels: int | None = None) -> nn.Module:
    """The flax module of one of the family's architectures (a classifier needs `num_labels` >= 1)."""
    cls = self.architectures[architecture]
    if architecture == self.task_heads.get("classification"):
      if not isinstance(num_labels, int) or num_labels < 1:
        raise UserError(f"{architecture} needs num_labels >= 1, got {num_labels!r}")
      return cls(config, num_labels)
    return cls(config)

  def init_args(self, architecture: str, seq_len: int) -> tuple[Array, ...]:
    """Shape-only positional inputs that `init` of the architecture takes (ids and attention mask)."""
    return jnp.zeros((1, seq_len), jnp.int32), jnp.ones((1, seq_len), jnp.int32)

  def task_architecture(self, head: str) -> str:
    """The architecture for a task head ("classification", "span"), or a UserError naming both."""
    if head not in self.task_heads:
      raise UserError(f"the {self.name} family has no {head!r} task head (it has "
                      f"{', '.join(self.task_heads) or 'none'})")
    return self.task_heads[head]

  # -- the LM objective ---------------------------------------------------------------------------------
  def objective(self, model: nn.Module, specials, *, mask_prob: float, max_predictions: int):
    """The LM's training objective (fits `rewire.step.Objective`)."""
    raise NotImplementedError

  def baseline_loss(self, counts, valid, specials) -> float:
    """The unigram loss a trained LM of the family must beat on `valid`."""
    raise NotImplementedError

  def step_flops(self, config: Any, *, batch: int, seq_len: int, predictions: int) -> float:
    """Model FLOPs of one LM train step (forward + backward), for MFU; 0 when unknown."""
    return 0.0

  # -- vocabulary leaves --------------------------------------------------------------------------------
  def resolve(self, pattern: str) -> str:
    """A config's leaf pattern as a regex: a name of `LEAF_SETS` resolved for this family ("output" and
    "both" need an output head), any other string returned as the regex it is."""
    if pattern in ("output", "both") and self.output_head is None:
      raise UserError(f"the {self.name} family has no separate output head; forget.pattern={pattern!r} "
                      f"needs one (use input)")
    matrices = "|".join(p for p in (self.word_embedding, self.output_head) if p)
    named = {"input": self.word_embedding, "output": self.output_head,
             "both": f"{self.word_embedding}|{self.output_head}", "embeddings": matrices,
             "vocab": "|".join(self.vocab_leaves())}
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

  def vocab_leaves(self) -> tuple[str, ...]:
    """The paths of every vocabulary-sized leaf the family has (`vocab`): embeddings, output head, LM bias."""
    return tuple(p for p in (self.word_embedding, self.output_head, self.vocab_bias) if p)

  def vocab_axis(self, path: str) -> int:
    """The vocabulary axis of a vocabulary-sized leaf: 1 for the output head ([H, V]), 0 otherwise."""
    return 1 if path == self.output_head else 0

  def vocab_bias_path(self) -> tuple[str, ...]:
    return tuple(self.vocab_bias.split("/"))

  def pad_row(self, path: str, pad_id: int | None) -> int | None:
    """The row of leaf `path` that a fresh draw zeroes: the padding row of the token embeddings, in a
    family that keeps it at zero; None otherwise."""
    return pad_id if (self.zero_pad_row and path == self.word_embedding) else None

  def fresh_leaf(self, key: Array, path: str, shape: tuple[int, ...], *, std: float, pad_id: int | None) -> Array:
    """A fresh vocabulary leaf: a matrix drawn by `fresh_rows` (its padding row as `pad_row` says), a
    vector (an LM bias) zeros. What adaptation re-initialises and the probe's new tables start from."""
    if len(shape) != 2:
      return jnp.zeros(shape, jnp.float32)
    return fresh_rows(key, shape, std, self.pad_row(path, pad_id))

  # -- Hugging Face -------------------------------------------------------------------------------------
  def hf_config(self, architecture: str, config: Any, *, bos_id: int, eos_id: int):
    """The `transformers` config object of a model of this family."""
    raise UserError(f"the {self.name} family has no Hugging Face mapping")

  def info_from_hf(self, d: Mapping[str, Any], what: str) -> tuple[str, Any, int | None, tuple | None]:
    """(architecture, config, num_labels, labels) of an HF `config.json` dict of this family."""
    raise UserError(f"{what}: the {self.name} family has no Hugging Face mapping")

  def hf_state_in(self, state: dict, config: Any, what: str, *, flax_names: bool) -> dict:
    """An HF checkpoint's flat weights without the entries rewire's tree does not hold (checked copies of
    tied matrices, buffers); `flax_names` says whether keys are Flax paths or PyTorch names."""
    return state

  def hf_flax_params(self, architecture: str, config: Any, params: Any) -> Any:
    """The params as HF Flax stores them (e.g. a tied head's copy)."""
    return params

  def hf_notes(self, config: Any) -> list[str]:
    """What HF's Flax class of the family cannot reproduce of this config (PyTorch can)."""
    return []
