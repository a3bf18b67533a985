"""Seconds to build each start of new vocabulary rows (`reinit.method`) at the paper's scale, on this CPU.

A source vocabulary of 50,000 pieces with hidden size 768 (RoBERTa-base) and a new vocabulary of 50,000
pieces that shares `--shared` of them (by default 40%, about what a Spanish tokenizer shares with an
English one). The pieces are random letter strings in three scripts. Each method is timed from its recipe to the
new [50,000, 768] matrix (`Recipe.apply`), best of `--rounds`. `focus` and `omp` take random auxiliary
vectors of `--aux_dim` dimensions here; training them is timed on its own line, with gensim's fastText on
`--aux_tokens` tokens of synthetic text with natural text's Zipfian piece frequencies (it grows linearly
with the text and the epochs).

  python benchmarks/vocab_start.py [--rounds 2] [--shared 0.4] [--aux_dim 100] [--aux_tokens 1000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rewire.vocab import aux_vectors
from rewire.vocab.recipe import METHODS, AuxSpace, Vocabularies, build

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
LETTERS = ("abcdefghijklmnopqrstuvwxyz", "абвгдежзийклмнопрстуфхцчшщ", "αβγδεζηθικλμνξοπρστυφχψω")


def words(n: int, rng: np.random.Generator, taken: set[str]) -> list[str]:
  """`n` distinct pieces not in `taken`: 2 to 8 letters of one of three scripts, half of them word starts."""
  out = []
  while len(out) < n:
    alphabet = LETTERS[len(out) % 3]
    piece = ("▁" if len(out) % 2 else "") + "".join(
        alphabet[j] for j in rng.integers(0, len(alphabet), 2 + rng.integers(0, 7)))
    if piece not in taken:
      taken.add(piece)
      out.append(piece)
  return out


def vocabularies(size: int, shared: float, seed: int = 0) -> Vocabularies:
  rng = np.random.default_rng(seed)
  ordinary = size - len(SPECIALS) - 1
  taken: set[str] = set()
  old = words(ordinary, rng, taken)
  k = int(shared * ordinary)
  new = old[:k] + words(ordinary - k, rng, taken)
  specials = {r: i for i, r in enumerate(("bos", "pad", "eos", "unk"))}
  return Vocabularies([*SPECIALS, *old, "<mask>"], [*SPECIALS, *new, "<mask>"], {**specials, "mask": size - 1},
                      {**specials, "mask": size - 1})


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--vocab", type=int, default=50_000)
  p.add_argument("--hidden", type=int, default=768)
  p.add_argument("--shared", type=float, default=0.4)
  p.add_argument("--aux_dim", type=int, default=100)
  p.add_argument("--aux_tokens", type=int, default=1_000_000)
  p.add_argument("--rounds", type=int, default=2)
  a = p.parse_args()
  vocab = vocabularies(a.vocab, a.shared)
  rng = np.random.default_rng(1)
  old = rng.normal(0, 0.05, (a.vocab, a.hidden)).astype(np.float32)
  fresh = rng.normal(0, 0.02, (a.vocab, a.hidden)).astype(np.float32)
  aux = AuxSpace(np.arange(len(SPECIALS), a.vocab - 1), rng.normal(size=(a.vocab - 5, a.aux_dim)).astype(np.float32))
  print(f"vocabulary {a.vocab:,} -> {a.vocab:,} ({a.shared:.0%} shared), hidden {a.hidden}, "
        f"auxiliary vectors {a.aux_dim}-d; best of {a.rounds}")
  print(f"{'method':<9} {'recipe s':>9} {'apply s':>8}  rows")
  for method in METHODS:
    best = (np.inf, np.inf)
    for _ in range(a.rounds):
      t0 = time.perf_counter()
      recipe = build(method, vocab, aux=lambda: aux)
      t1 = time.perf_counter()
      recipe.apply(old, fresh, vocab_axis=0, seed=0)
      t2 = time.perf_counter()
      best = (min(best[0], t1 - t0), min(best[1], t2 - t1))
    print(f"{method:<9} {best[0]:>9.2f} {best[1]:>8.2f}  {recipe.describe()}")
  # Text with a Zipfian piece distribution (s = 1.1), as natural text has, 128 pieces per sequence.
  zipf = np.minimum(rng.zipf(1.1, size=a.aux_tokens // 128 * 128), a.vocab - 6) + 4
  sequences = rng.permutation(np.arange(5, a.vocab - 1))[zipf - 5].reshape(-1, 128)
  t0 = time.perf_counter()
  space = aux_vectors.train(sequences, vocab.new, skip_ids=range(5), dim=a.aux_dim, epochs=5, window=5,
                            min_count=3, min_tokens=1000, seed=0)
  print(f"fastText  {time.perf_counter() - t0:>9.2f} {'':>8}  {len(space.ids):,} piece vectors from "
        f"{sequences.size:,} tokens, 5 epochs, one thread")


if __name__ == "__main__":
  main()
