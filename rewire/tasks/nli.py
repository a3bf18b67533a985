"""Sequence-classification features: NLI pairs (MultiNLI, XNLI) and single texts (task "classify").

A pair is read as `<s> premise </s></s> hypothesis </s>` (RoBERTa's pair format), padded with `<pad>` to a
fixed length. When the pair is too long, tokens are dropped from the end of the longer segment, one at a
time (the premise on ties), so a long premise never pushes the hypothesis out. A single text is read as
`<s> text </s>` (RoBERTa's single-sequence format), cut at the end when too long. Both classify from `<s>`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tokenizers

from rewire.data.tokenizer import special_ids
from rewire.errors import UserError

# Label order of the Hugging Face `xnli` and `multi_nli` datasets (0, 1, 2).


@dataclasses.dataclass
class NLIFeatures:
  """input_ids and attention_mask (n, max_len) int32; labels (n,) int32 indices into the label names."""
  input_ids: np.ndarray
  attention_mask: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return int(self.input_ids.shape[0])

  def arrays(self) -> dict[str, np.ndarray]:
    """The model inputs and targets, keyed by name."""
    return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels}


def _label(value: Any, names: Sequence[str], i: int, what: str = "NLI") -> int:
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    if 0 <= int(value) < len(names):
      return int(value)
  elif isinstance(value, str) and value in names:
    return list(names).index(value)
  raise UserError(f"{what} example {i} has label {value!r}, which is not one of {list(names)} "
                  f"(or an index 0..{len(names) - 1}); label_names must list the task's classes")


def _columns(examples: Sequence[Any], keys: Sequence[str], what: str) -> dict[str, list[Any]]:
  fields = {}
  for key in keys:
    try:
      fields[key] = [ex[key] for ex in examples]
    except (KeyError, TypeError):
      i = next(j for j, ex in enumerate(examples) if not isinstance(ex, Mapping) or key not in ex)
      raise UserError(f"{what} example {i} has no {key!r} field (expected {', '.join(keys)})") from None
  return fields


def _label_array(values: Sequence[Any], label_names: Sequence[str], what: str) -> np.ndarray:
  names = [str(n) for n in label_names]
  if not names or len(set(names)) != len(names):
    raise UserError(f"label_names must be distinct and non-empty, got {list(label_names)}")
  return np.asarray([_label(v, names, i, what) for i, v in enumerate(values)], np.int32)


def _untruncated(tok: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
  if tok.truncation is not None or tok.padding is not None:
    tok = tokenizers.Tokenizer.from_str(tok.to_str())
    tok.no_truncation()
    tok.no_padding()
  return tok


def _fit(a: int, b: int, room: int) -> tuple[int, int]:
  """Lengths of two segments after dropping tokens from the longer one until they fit in `room`."""
  excess = a + b - room
  if excess <= 0:
    return a, b
  # Cut the longer down towards the shorter, then alternate (premise first on ties).
  cut = min(excess, abs(a - b))
  if a >= b:
    a -= cut
  else:
    b -= cut
  excess -= cut
  a -= (excess + 1) // 2
  b -= excess // 2
  return a, b


def prepare_features(examples: Sequence[Mapping[str, Any]], tok: tokenizers.Tokenizer, *, max_len: int = 128,
                     label_names: Sequence[str]) -> NLIFeatures:
  """Tokenises `{"premise", "hypothesis", "label"}` examples into padded pair arrays.

  Args:
    examples: XNLI / MultiNLI rows; a list or a `datasets.Dataset`. A label is an index into
      `label_names` or one of the names.
    tok: a rewire tokenizer (`<s>`=0, `<pad>`=1, `</s>`=2).
    max_len: tokens per row, special tokens included (>= 6, one token per segment at least).
    label_names: the class names in label-index order, e.g. `NLI_LABELS`.

  Raises:
    UserError: max_len below 6, empty or repeated label names, a missing field, or a label that is
      neither a valid index nor a name (the message names the example).
  """
  ids = special_ids(tok)
  if max_len < 6:
    raise UserError(f"NLI features need max_len >= 6 (4 special tokens and a token of each text), got {max_len}")
  examples = list(examples)
  fields = _columns(examples, ("premise", "hypothesis", "label"), "NLI")
  labels = _label_array(fields["label"], label_names, "NLI")
  tok = _untruncated(tok)
  premises = tok.encode_batch([str(p) for p in fields["premise"]], add_special_tokens=False)
  hypotheses = tok.encode_batch([str(h) for h in fields["hypothesis"]], add_special_tokens=False)

  n = len(examples)
  input_ids = np.full((n, max_len), ids.pad, np.int32)
  attention_mask = np.zeros((n, max_len), np.int32)
  for r, (p, h) in enumerate(zip(premises, hypotheses)):
    lp, lh = _fit(len(p.ids), len(h.ids), max_len - 4)
    row = [ids.bos, *p.ids[:lp], ids.eos, ids.eos, *h.ids[:lh], ids.eos]
    input_ids[r, :len(row)] = row
    attention_mask[r, :len(row)] = 1
  return NLIFeatures(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def prepare_text_features(examples: Sequence[Mapping[str, Any]], tok: tokenizers.Tokenizer, *,
                          max_len: int = 128, label_names: Sequence[str]) -> NLIFeatures:
  """Tokenises `{"text", "label"}` examples into padded `<s> text </s>` rows (task "classify").

  Same arguments and errors as `prepare_features`; max_len >= 3. A text too long loses its end.
  """
  ids = special_ids(tok)
  if max_len < 3:
    raise UserError(f"classification features need max_len >= 3 (2 special tokens and a token), got {max_len}")
  examples = list(examples)
  fields = _columns(examples, ("text", "label"), "classification")
  labels = _label_array(fields["label"], label_names, "classification")
  texts = _untruncated(tok).encode_batch([str(t) for t in fields["text"]], add_special_tokens=False)
  input_ids = np.full((len(examples), max_len), ids.pad, np.int32)
  attention_mask = np.zeros((len(examples), max_len), np.int32)
  for r, t in enumerate(texts):
    row = [ids.bos, *t.ids[:max_len - 2], ids.eos]
    input_ids[r, :len(row)] = row
    attention_mask[r, :len(row)] = 1
  return NLIFeatures(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
