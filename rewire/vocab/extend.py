"""Extending a vocabulary instead of replacing it: the source's tokenizer, plus the new language's pieces it lacks.

An extended tokenizer keeps every id of the source's (its `<mask>` excepted, which rewire's layout keeps
last), so the source's rows stay where they were, and appends the pieces of the new language's tokenizer
that hold a character the source's vocabulary cannot spell. Those pieces only are added because a unigram
tokenizer segments a word by the best-scoring path: a new piece whose string the old pieces can spell
either never wins (and its row would never train) or wins and changes how old text is segmented. With
only unspellable pieces added, every text the source's tokenizer encodes without `<unk>` has exactly the
lattice it had, and encodes to exactly its old ids; the new pieces cover what used to be `<unk>`.

So extension suits a language written in characters the source lacks (a new script, the cipher); for a
language of the same script it adds the few pieces with new characters (accents the source never saw).
Both tokenizers must be unigram tokenizers of rewire's layout; any other kind is a one-line error.
"""

from __future__ import annotations

import dataclasses
import json

import tokenizers

from rewire.data.tokenizer import MASK, special_ids
from rewire.errors import UserError


@dataclasses.dataclass(frozen=True)
class Extension:
  """An extended tokenizer and what was added to the source's."""
  tokenizer: tokenizers.Tokenizer
  old_size: int                  # the source's vocabulary size (with its <mask>)
  added: int                     # pieces appended
  spellable: int                 # pieces of the new tokenizer that the source could already spell (not added)

  def describe(self) -> str:
    return (f"extended the source's {self.old_size:,} ids by {self.added:,} pieces of the new language with "
            f"characters the source lacks ({self.spellable:,} of its other pieces the source spells already)")


def _spec(tok: tokenizers.Tokenizer, what: str) -> dict:
  spec = json.loads(tok.to_str())
  kind = spec.get("model", {}).get("type")
  if kind != "Unigram":
    raise UserError(f"extend needs unigram tokenizers of rewire's layout; {what} is a {kind or 'unknown'} "
                    f"tokenizer (replace the vocabulary instead: extend=False)")
  special_ids(tok)  # rewire's layout, or a one-line error naming it
  return spec


def extend_tokenizer(old: tokenizers.Tokenizer, new: tokenizers.Tokenizer) -> Extension:
  """`old` with the pieces of `new` that `old` segments with `<unk>` appended (ids old size - 1 ...), and
  `<mask>` moved to the end."""
  old_spec, new_spec = _spec(old, "the source's tokenizer"), _spec(new, "the new language's tokenizer")
  vocab = [list(p) for p in old_spec["model"]["vocab"]]
  unk = old_spec["model"].get("unk_id")
  known = {p for p, _ in vocab}
  added, spellable = [], 0
  for piece, score in new_spec["model"]["vocab"]:
    if piece in known or piece == MASK:
      continue
    ids = [t.id for t in old.model.tokenize(piece)]
    if unk is not None and unk in ids:
      added.append([piece, score])
    else:
      spellable += 1
  old_size = old.get_vocab_size(with_added_tokens=True)
  old_spec["model"]["vocab"] = vocab + added
  for token in old_spec["added_tokens"]:
    if token["content"] == MASK:
      token["id"] = len(old_spec["model"]["vocab"])
  tok = tokenizers.Tokenizer.from_str(json.dumps(old_spec))
  special_ids(tok)
  return Extension(tok, old_size, len(added), spellable)
