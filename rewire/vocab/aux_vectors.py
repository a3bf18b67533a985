"""The auxiliary space of `focus` and `omp`: fastText vectors of the new tokenizer's pieces.

FOCUS (Dobler & de Melo 2023) trains fastText on the new language's text, tokenised with the new tokenizer,
so that every piece, shared or new, gets a vector in one space; a new piece is then built from the shared
pieces it is similar to there. rewire trains it with gensim's `FastText` on the adaptation run's own text
(the token-budget prefix it trains on), with one worker thread and a fixed hash, so every host of a job and
every rerun computes the same vectors. A piece that occurs fewer than `min_count` times has no vector.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from rewire.errors import UserError
from rewire.vocab.recipe import AuxSpace


def _stable_hash(text: str) -> int:
  return zlib.crc32(text.encode("utf-8"))  # Python's hash() changes with every interpreter launch


def train(sequences: np.ndarray, pieces: Sequence[str], *, skip_ids: Sequence[int], dim: int, epochs: int,
          window: int, min_count: int, min_tokens: int, seed: int) -> AuxSpace:
  """fastText (skip-gram, character n-grams) vectors of the pieces of `sequences` [N, L] (token ids;
  `skip_ids`, the padding and special tokens, left out). A text of fewer than `min_tokens` tokens is a
  UserError: its vectors would be noise."""
  skip = np.zeros(len(pieces), bool)
  skip[np.asarray(list(skip_ids), np.int64)] = True
  sentences = [[pieces[i] for i in row[~skip[row]]] for row in np.asarray(sequences)]
  sentences = [s for s in sentences if s]
  tokens = sum(len(s) for s in sentences)
  if tokens < min_tokens:
    raise UserError(f"too little text to train the auxiliary vectors of reinit.method (focus, omp): "
                    f"{tokens:,} tokens, at least reinit.aux_min_tokens={min_tokens:,} needed (raise "
                    f"token_budget, or use another reinit.method)")
  from gensim.models import FastText
  model = FastText(vector_size=dim, window=window, min_count=min_count, sg=1, workers=1, seed=seed,
                   hashfxn=_stable_hash, min_n=2, max_n=5)
  model.build_vocab(corpus_iterable=sentences)
  model.train(corpus_iterable=sentences, total_examples=len(sentences), epochs=epochs)
  index = {p: i for i, p in enumerate(pieces)}
  words = [w for w in model.wv.index_to_key if w in index]
  ids = np.asarray([index[w] for w in words], np.int64)
  vectors = np.stack([model.wv[w] for w in words]) if words else np.zeros((0, dim), np.float32)
  order = np.argsort(ids)
  return AuxSpace(ids[order], vectors[order])
