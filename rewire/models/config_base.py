"""What every model family's config shares: building from a dict, the dtype and padding-id checks.

`RobertaConfig` (RoBERTa) and `LlamaConfig` are frozen dataclasses that inherit this mixin, so a misspelt
key, an unknown dtype or a padding id outside the vocabulary reads the same one-line error in every family.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from rewire.errors import UserError

DTYPES = ("float32", "bfloat16", "float16")


class ConfigBase:
  """Mixin of a family's frozen config dataclass (fields `vocab_size`, `pad_token_id`, `dtype`)."""

  family_name = ""

  def check_common(self) -> None:
    if self.dtype not in DTYPES:
      raise UserError(f"model.dtype={self.dtype!r}; expected float32, bfloat16 or float16")
    if not 0 <= self.pad_token_id < self.vocab_size:
      raise UserError(f"model.pad_token_id={self.pad_token_id} is outside the vocabulary "
                      f"(vocab_size={self.vocab_size})")

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]):
    """Builds a config from a dict or an ml_collections ConfigDict; unknown keys are a UserError."""
    d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise UserError(f"unknown model config key(s) for the {cls.family_name} family: {', '.join(unknown)} "
                      f"(known: {', '.join(sorted(known))})")
    if "vocab_size" not in d:
      raise UserError("model config needs vocab_size")
    return cls(**d)
