"""A run's new vocabulary rows from a source model: the recipe between two tokenizers, and a leaf built by it.

Language adaptation (`rewire.stages.warm_start`) and the probe (`rewire.probe.prober`) both start new rows
this way, so a method means the same in both: `recipe_between` reads the pieces and special tokens of the
source's and the new tokenizer, trains the auxiliary vectors on the run's own text when `focus` or `omp`
needs them, and builds the recipe; `start_leaf` builds one vocabulary leaf by it and zeroes the padding
row where the family keeps it at zero. `settings` is a `reinit` group (`rewire.config.groups.vocab_start_defaults`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from rewire.data.tokenizer import special_roles
from rewire.vocab import aux_vectors
from rewire.vocab import pieces as vpieces
from rewire.vocab.recipe import Recipe, Vocabularies, build


def vocabularies(old_tokenizer, new_tokenizer) -> Vocabularies:
  """The pieces and special tokens of two tokenizers."""
  return Vocabularies(vpieces.vocabulary(old_tokenizer), vpieces.vocabulary(new_tokenizer),
                      special_roles(old_tokenizer), special_roles(new_tokenizer))


def recipe_between(method: str, settings, old_tokenizer, new_tokenizer, text: Callable[[], np.ndarray], *,
                   seed: int) -> Recipe:
  """The recipe of `method` from `old_tokenizer`'s rows to `new_tokenizer`'s. `text()` gives the run's
  text as token ids [N, L] of the new tokenizer; it is read only when `focus` or `omp` trains its
  auxiliary vectors on it (seeded `seed`)."""
  vocab = vocabularies(old_tokenizer, new_tokenizer)

  def aux():
    return aux_vectors.train(text(), vocab.new, skip_ids=list(vocab.new_specials.values()), dim=settings.aux_dim,
                             epochs=settings.aux_epochs, window=settings.aux_window,
                             min_count=settings.aux_min_count, min_tokens=settings.aux_min_tokens, seed=seed)

  return build(method, vocab, fallback=settings.fallback, aux=aux, temperature=settings.focus_temperature,
               atoms=settings.omp_atoms)


def start_leaf(recipe: Recipe, old: np.ndarray, fresh: np.ndarray, *, vocab_axis: int, pad_row: int | None,
               seed: int, covariance_scale: float) -> np.ndarray:
  """A vocabulary leaf started by `recipe` from the source's leaf `old` (`fresh`: the family's draw at the
  new size), its row `pad_row` (the family's zero padding row, or None) zeroed."""
  x = recipe.apply(old, fresh, vocab_axis=vocab_axis, seed=seed, covariance_scale=covariance_scale)
  if pad_row is not None:
    x[pad_row] = 0.0
  return x
