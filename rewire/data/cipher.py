"""A controlled new language: a seeded bijection of characters, applied to a text source or a task set.

`cipher:SEED:SOURCE` reads SOURCE (any text source, or any task source for fine-tuning and evaluation) and
replaces every character by its image under a bijection drawn from SEED. The result is a language with
exactly the structure of the source -- the same words in the same order, the same documents, the same
whitespace, the same lengths -- and no surface form in common with it, so it needs a tokenizer and
embeddings of its own. With the pretraining language as SOURCE it isolates the paper's hypothesis: a body
that already knows the language meets it through embeddings it has never seen (Artetxe et al. 2020;
K et al. 2020; Dufter & Schuetze 2020 use such shifted or relearned vocabularies).

The bijection swaps two alphabets of equal size and leaves every other code point alone:

  DOMAIN  every code point from U+0021 to U+FFFF that is neither whitespace nor a surrogate (Latin,
          Greek, Cyrillic, CJK, kana, Hangul, punctuation, digits: any text a corpus holds in practice)
  TARGET  the first len(DOMAIN) code points of the Supplementary Private Use Area-A (U+F0000 ...)

DOMAIN[i] maps to TARGET[perm[i]] and TARGET[perm[i]] back to DOMAIN[i], with perm a seeded permutation,
so the map is an involution of all of Unicode (applying it twice gives the text back). Whitespace is
never touched, so documents, words and lines keep their boundaries. Private-use characters are stable
under NFKC, the tokenizer's normalisation, so cipher text is tokenised as it is written. (A source
character that NFKC would change, such as a ligature, is enciphered as written: the tokenizer of the
cipher language sees the raw character where that of the source sees its normal form. Text in the
bundled corpora has none that matter.)
"""

from __future__ import annotations

import functools
import re

import numpy as np

from rewire.errors import UserError

PREFIX = "cipher:"
TARGET_BASE = 0xF0000
_SOURCE = re.compile(r"^cipher:(?P<seed>[^:]*):(?P<source>.+)$", re.S)


@functools.lru_cache(maxsize=None)
def domain() -> tuple[int, ...]:
  """The code points the cipher moves into the private-use block, in order."""
  return tuple(c for c in range(0x21, 0x10000)
               if not (0xD800 <= c <= 0xDFFF) and not chr(c).isspace())


@functools.lru_cache(maxsize=8)
def table(seed: int) -> dict[int, int]:
  """The `str.translate` table of the cipher drawn from `seed`: both directions of the swap."""
  dom = np.asarray(domain(), dtype=np.int64)
  perm = np.random.default_rng([0x5EED, int(seed)]).permutation(len(dom))
  target = TARGET_BASE + perm
  return {**dict(zip(dom.tolist(), target.tolist())), **dict(zip(target.tolist(), dom.tolist()))}


def encipher(text: str, seed: int) -> str:
  """`text` with every character replaced by its image under the cipher of `seed`."""
  return text.translate(table(int(seed)))


decipher = encipher  # The cipher is an involution: enciphering twice gives the text back.


def parse(source: str) -> tuple[int, str] | None:
  """(seed, inner source) of a `cipher:SEED:SOURCE` string, None for any other source; UserError if bad."""
  if not isinstance(source, str) or not source.strip().startswith(PREFIX):
    return None
  m = _SOURCE.match(source.strip())
  if not m or not re.fullmatch(r"\d+", m["seed"]):
    raise UserError(f"bad data source {source!r}; expected cipher:SEED:SOURCE with SEED a non-negative "
                    "integer, e.g. cipher:1:bundled:en_web")
  inner = m["source"].strip()
  if inner.startswith(PREFIX):
    raise UserError(f"{source!r}: a cipher of a cipher is not a controlled language of its own; "
                    "use one cipher:SEED: prefix")
  return int(m["seed"]), inner
