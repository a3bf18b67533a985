"""Piece strings across tokenizers: the canonical form two tokenizers are compared in, and a piece's script.

rewire's tokenizers mark a word's start with "▁" (SentencePiece); byte-level BPE tokenizers (RoBERTa's,
GPT-2's) mark it with "Ġ". Both are read as the same marker, so `▁casa` of a rewire tokenizer and `Ġcasa` of
an imported one are the same piece. Special tokens are matched by their role, not their string.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np

WORD_START = "▁"
_MARKERS = ("▁", "Ġ")
COMMON = "Common"  # the script of digits, punctuation, symbols and bare word markers


def canonical(piece: str) -> str:
  """The piece with its word-start marker, if any, written as "▁"."""
  for marker in _MARKERS:
    if piece.startswith(marker):
      return WORD_START + piece[len(marker):]
  return piece


def has_text(piece: str) -> bool:
  """Whether a piece holds more than a word-start marker."""
  return canonical(piece) not in ("", WORD_START)


def vocabulary(tok) -> list[str]:
  """The piece string of every id of a `tokenizers.Tokenizer`, in id order (added tokens included)."""
  size = tok.get_vocab_size(with_added_tokens=True)
  pieces = [tok.id_to_token(i) for i in range(size)]
  if any(p is None for p in pieces):
    raise ValueError("the tokenizer's ids are not contiguous")
  return pieces


def shared(old: Sequence[str], new: Sequence[str], *, old_specials: Mapping[str, int],
           new_specials: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """The pieces both vocabularies hold: (new ids, their old ids) of the ordinary pieces, compared in
  canonical form, and (new ids, old ids) of the special tokens, matched by role (`bos`, `pad`, ...)."""
  special_new = set(new_specials.values())
  special_old = set(old_specials.values())
  index = {}
  for i, p in enumerate(old):
    if i not in special_old:
      index.setdefault(canonical(p), i)
  new_ids, old_ids = [], []
  for i, p in enumerate(new):
    j = index.get(canonical(p))
    if i not in special_new and j is not None:
      new_ids.append(i)
      old_ids.append(j)
  roles = sorted(set(old_specials) & set(new_specials))
  return (np.asarray(new_ids, np.int64), np.asarray(old_ids, np.int64),
          np.asarray([new_specials[r] for r in roles], np.int64), np.asarray([old_specials[r] for r in roles], np.int64))


def script(piece: str) -> str:
  """The Unicode script of a piece: that of its letters (the first word of their character names: LATIN,
  CYRILLIC, CJK, ...), the most frequent one when they mix; `COMMON` for a piece without letters. A
  private-use character (the cipher's) is its own script, "PRIVATE USE"."""
  counts: dict[str, int] = {}
  for ch in canonical(piece).removeprefix(WORD_START):
    category = unicodedata.category(ch)
    if category == "Co":
      name = "PRIVATE USE"
    elif category.startswith("L"):
      name = unicodedata.name(ch, "UNKNOWN").split(" ")[0]
    else:
      continue
    counts[name] = counts.get(name, 0) + 1
  if not counts:
    return COMMON
  return max(sorted(counts), key=counts.__getitem__)
