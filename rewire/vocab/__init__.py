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
  start.py        a run's recipe between the source's and its new tokenizer, and a leaf started by it
                  (language adaptation and the probe both call it)
  extend.py       extending the source's tokenizer instead of replacing it: old text keeps its ids

It works on numpy arrays, piece strings and tokenizer files only, so any family's leaves go through it (the
caller passes each leaf with the family's vocabulary axis).

May import: rewire.errors, rewire.data (the tokenizers' special tokens); nothing else of rewire.
"""

from rewire.vocab.recipe import METHODS, Recipe  # noqa: F401
