"""The new vocabulary of an adapted model: how its rows start.

Language adaptation gives the body a new tokenizer and new vocabulary rows (the token embeddings, a
decoder's untied output head, RoBERTa's LM bias). The paper draws them at random; this package builds them
from the source model's rows instead, by one of `METHODS` (`reinit.method`):

  pieces.py       piece strings across tokenizers: their canonical form, the shared ones, their script
  sparse.py       sparsemax and orthogonal matching pursuit, batched in numpy
  aux_vectors.py  the auxiliary space of `focus` and `omp`: fastText vectors of the new tokenizer's pieces,
                  trained (gensim) on the adaptation text itself
  recipe.py       each method as a recipe (which old rows make each new row, which are drawn), and the
                  recipe applied to every vocabulary leaf of a family

It works on numpy arrays and piece strings only, so any family's leaves go through it (the stage passes
each leaf with the family's vocabulary axis).

May import: nothing of rewire but rewire.errors.
"""

from rewire.vocab.recipe import METHODS, Recipe  # noqa: F401
