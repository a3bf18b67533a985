"""The family registry: the one place families are registered, and the lookups every other module uses.

Stages, the probe, the study, the HF interop and the sampler never import a family's modules; they ask the
registry for a `rewire.models.family.Family` (by name, by `model.json` architecture, by config or by
module) and call its methods. Two families are registered here: `roberta` (the encoder of Chen et al.
2023, the default) and `llama` (a Llama-family causal decoder). Another family, even one defined outside
rewire, is added with `register(MyFamily())`.

  fam = family_of("RobertaForMaskedLM")
  model = make_model(fam.lm, model_config)
  params = nn.unbox(init_variables(model, jax.random.key(0), seq_len=128))["params"]
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax

from rewire.errors import UserError
from rewire.models.family import LEAF_SETS, Family
from rewire.models.llama_family import Llama
from rewire.models.roberta_family import Roberta

Array = jax.Array

FAMILIES: dict[str, Family] = {}
DEFAULT_FAMILY = "roberta"


def register(fam: Family) -> Family:
  """Adds a family (its name and architecture names must be new); returns it."""
  if fam.name in FAMILIES:
    raise ValueError(f"a model family named {fam.name!r} is already registered")
  taken = set(fam.architectures) & set(architectures())
  if taken:
    raise ValueError(f"architecture(s) {sorted(taken)} already belong to another family")
  FAMILIES[fam.name] = fam
  return fam


def unregister(name: str) -> None:
  """Removes a family registered with `register` (tests register toy families for a while)."""
  if name == DEFAULT_FAMILY:
    raise ValueError("the default family cannot be removed")
  FAMILIES.pop(name, None)


def architectures() -> tuple[str, ...]:
  return tuple(a for f in FAMILIES.values() for a in f.architectures)


register(Roberta())
register(Llama())


def family(name: str = DEFAULT_FAMILY) -> Family:
  if name not in FAMILIES:
    raise UserError(f"unknown model family {name!r}; rewire has {', '.join(FAMILIES)}")
  return FAMILIES[name]


def family_of(architecture: str) -> Family:
  """The family an architecture name belongs to."""
  for f in FAMILIES.values():
    if architecture in f.architectures:
      return f
  raise UserError(f"unsupported architecture {architecture!r}; rewire has {', '.join(architectures())}")


def family_for(model_config: Any) -> Family:
  """The family whose config class `model_config` is."""
  for f in FAMILIES.values():
    if isinstance(model_config, f.config_cls):
      return f
  raise UserError(f"no model family has configs of type {type(model_config).__name__}")


def architecture_of(model: nn.Module) -> tuple[Family, str]:
  """The family and architecture name of a module."""
  for f in FAMILIES.values():
    for arch, cls in f.architectures.items():
      if type(model) is cls:
        return f, arch
  raise UserError(f"no model family has modules of type {type(model).__name__}")


def run_family(model_group) -> Family:
  """The family a run's `model` config group names (`model.family`, the default family when absent)."""
  return family(model_group.get("family", DEFAULT_FAMILY))


def info_architecture(info: Mapping[str, Any]) -> str:
  """The architecture a `model.json` names (files written before the key existed hold a RoBERTa MLM)."""
  return info.get("architecture", family(DEFAULT_FAMILY).lm)


def info_family(info: Mapping[str, Any]) -> Family:
  """The family of the model a `model.json` describes."""
  return family_of(info_architecture(info))


def config_from_info(info: Mapping[str, Any]) -> tuple[Family, Any]:
  """The family and model config a `model.json` describes (its other keys are metadata)."""
  fam = info_family(info)
  return fam, fam.config_from_info(info)


def model_config_from(config, vocab_size: int, pad_id: int) -> Any:
  """The model config of a run: `config.model` (of the family it names) at the tokenizer's size."""
  return run_family(config.model).model_config(config.model, vocab_size=vocab_size, pad_id=pad_id,
                                               seq_len=config.data.seq_len)


def is_lm(architecture: str) -> bool:
  return family_of(architecture).lm == architecture


def make_model(architecture: str, config: Any, num_labels: int | None = None) -> nn.Module:
  """The rewire module for a `model.json` architecture name (UserError: unknown, or no `num_labels`)."""
  return family_of(architecture).build(architecture, config, num_labels)


def init_variables(model: nn.Module, rng: Array, seq_len: int = 8) -> dict[str, Any]:
  """Boxed variables `{"params": ...}` of any registered model (works under `jax.eval_shape`)."""
  fam, arch = architecture_of(model)
  return model.init({"params": rng}, *fam.init_args(arch, seq_len), deterministic=True)


def abstract_params(model: nn.Module) -> dict[str, Any]:
  """The unboxed param tree of `model` as `jax.ShapeDtypeStruct`s, without allocating anything."""
  return nn.unbox(jax.eval_shape(lambda k: init_variables(model, k), jax.random.key(0)))["params"]


__all__ = ["DEFAULT_FAMILY", "FAMILIES", "Family", "LEAF_SETS", "abstract_params", "architecture_of",
           "architectures", "config_from_info", "family", "family_for", "family_of", "info_architecture",
           "info_family", "init_variables", "is_lm", "make_model", "model_config_from", "register",
           "run_family", "unregister"]
