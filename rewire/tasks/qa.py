"""Extractive question answering (SQuAD v1.1, MLQA, XQuAD): windowed features and span post-processing.

A model reads `<s> question </s></s> context </s>` (RoBERTa's pair format) and scores every position as the
start and as the end of the answer. Contexts longer than one sequence are cut into overlapping windows
(the "doc stride" scheme of BERT's SQuAD fine-tuning): window starts are `doc_stride` context tokens
apart, so a window shares `window - doc_stride` tokens with the next and an answer near a cut is whole in
at least one window. For training, a window's targets are the token positions of the first gold answer,
or 0 (`<s>`) for both when that answer is not entirely inside the window.

Post-processing goes the other way: for each example, the best-scoring valid span (start logit + end
logit, start <= end, at most `max_answer_len` tokens, both ends inside the context) over all of its
windows is cut out of the original context through the tokens' character offsets.

Offsets: the tokenizer's Metaspace pre-tokenizer folds the space before a word into the word's first piece
("▁word"), so its raw offset span starts at that space. rewire trims whitespace from both ends of every
span; a piece that is only "▁" gets an empty span. An empty-span token is never an answer boundary in the
training targets, and a predicted span whose characters are all whitespace is discarded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tokenizers

from rewire.data.tokenizer import special_ids
from rewire.errors import UserError


@dataclasses.dataclass
class QAFeatures:
  """One row per window; `len(features)` windows for the examples they were made from.

  Attributes:
    input_ids: (n, max_len) int32, padded with `<pad>` (id 1).
    attention_mask: (n, max_len) int32, 1 on real tokens.
    start_position, end_position: (n,) int32 training targets: token positions of the first gold answer
      in this window, or 0 (`<s>`) when it is not inside the window or the example has no answer.
    example_index: (n,) int32, the position of the window's example in the `examples` given.
    offsets: (n, max_len, 2) int32 character span [begin, end) of each context token in its example's
      context, and -1 for the other tokens (`<s>`, the question, `</s>`, padding).
  """
  input_ids: np.ndarray
  attention_mask: np.ndarray
  start_position: np.ndarray
  end_position: np.ndarray
  example_index: np.ndarray
  offsets: np.ndarray

  def __len__(self) -> int:
    return int(self.input_ids.shape[0])

  def arrays(self) -> dict[str, np.ndarray]:
    """The model inputs and training targets, keyed by name (a batch is a slice of each)."""
    return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
            "start_position": self.start_position, "end_position": self.end_position}


def _field(example: Mapping[str, Any], key: str, i: int) -> Any:
  try:
    return example[key]
  except (KeyError, TypeError, IndexError):
    raise UserError(f"QA example {i} has no {key!r} field (expected id, question, context, answers)") from None


def _plain(tok: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
  """`tok`, or a copy of it without truncation and padding (which would cut contexts before windowing)."""
  if tok.truncation is None and tok.padding is None:
    return tok
  copy = tokenizers.Tokenizer.from_str(tok.to_str())
  copy.no_truncation()
  copy.no_padding()
  return copy


def _trimmed(text: str, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
  """Offsets with the whitespace at both ends of each span removed; whitespace-only spans become empty."""
  out = []
  for b, e in offsets:
    while b < e and text[b].isspace():
      b += 1
    while e > b and text[e - 1].isspace():
      e -= 1
    out.append((b, e))
  return out


def _answer_tokens(example: Mapping[str, Any], offsets: list[tuple[int, int]], context: str,
                   i: int) -> tuple[int, int] | None:
  """Context-token indices (first, last) covering the first gold answer, or None without an answer."""
  answers = _field(example, "answers", i)
  texts, starts = _field(answers, "text", i), _field(answers, "answer_start", i)
  if len(texts) != len(starts):
    raise UserError(f"QA example {i}: {len(texts)} answer texts but {len(starts)} answer_start values")
  if not texts:
    return None
  text, begin = texts[0], int(starts[0])
  end = begin + len(text)
  if not text or begin < 0 or end > len(context):
    raise UserError(f"QA example {i}: answer {text!r} at {begin} does not lie inside its context "
                    f"of {len(context)} characters")
  hit = [j for j, (b, e) in enumerate(offsets) if b < e and b < end and e > begin]
  return (hit[0], hit[-1]) if hit else None


def _window_starts(n_tokens: int, window: int, stride: int) -> list[int]:
  starts = [0]
  while starts[-1] + window < n_tokens:
    starts.append(starts[-1] + stride)
  return starts


def prepare_features(examples: Sequence[Mapping[str, Any]], tok: tokenizers.Tokenizer, *, max_len: int = 384,
                     doc_stride: int = 128, max_query_len: int = 64) -> QAFeatures:
  """Tokenises QA examples into fixed-length windows with targets and offsets.

  Args:
    examples: SQuAD-schema rows `{"id", "question", "context", "answers": {"text": [...],
      "answer_start": [...]}}` (answer_start in characters); a list or a `datasets.Dataset`. Empty answer
      lists are allowed (evaluation data); only the first answer sets the training targets.
    tok: a rewire tokenizer (`<s>`=0, `<pad>`=1, `</s>`=2).
    max_len: tokens per window, special tokens included.
    doc_stride: context tokens between the starts of consecutive windows of one example (BERT's meaning
      of doc_stride; Hugging Face's `stride` argument is the overlap, i.e. window minus this).
    max_query_len: questions are cut to this many tokens.

  Raises:
    UserError: bad lengths, a malformed example (missing field, empty context, answer outside context).
  """
  ids = special_ids(tok)
  context_room = max_len - max_query_len - 4
  if max_query_len < 1 or context_room < 1:
    raise UserError(f"QA features need max_len > max_query_len + 4, got max_len={max_len}, "
                    f"max_query_len={max_query_len}")
  if not 1 <= doc_stride <= context_room:
    raise UserError(f"doc_stride must be in [1, max_len - max_query_len - 4 = {context_room}] so that "
                    f"windows overlap, got {doc_stride}")
  examples = list(examples)
  tok = _plain(tok)
  contexts = [str(_field(ex, "context", i)) for i, ex in enumerate(examples)]
  questions = [str(_field(ex, "question", i)) for i, ex in enumerate(examples)]
  q_encs = tok.encode_batch(questions, add_special_tokens=False)
  c_encs = tok.encode_batch(contexts, add_special_tokens=False)

  rows_ids, rows_off, targets, owners = [], [], [], []
  for i, (ex, context, q_enc, c_enc) in enumerate(zip(examples, contexts, q_encs, c_encs)):
    c_ids = c_enc.ids
    if not c_ids:
      raise UserError(f"QA example {i} (id {ex.get('id')!r}) has an empty context")
    c_off = _trimmed(context, c_enc.offsets)
    answer = _answer_tokens(ex, c_off, context, i)
    q_ids = q_enc.ids[:max_query_len]
    first = len(q_ids) + 3  # <s> question </s></s>
    window = max_len - first - 1
    for start in _window_starts(len(c_ids), window, doc_stride):
      stop = min(start + window, len(c_ids))
      rows_ids.append([ids.bos, *q_ids, ids.eos, ids.eos, *c_ids[start:stop], ids.eos])
      rows_off.append((first, c_off[start:stop]))
      if answer is not None and start <= answer[0] and answer[1] < stop:
        targets.append((first + answer[0] - start, first + answer[1] - start))
      else:
        targets.append((0, 0))
      owners.append(i)

  n = len(rows_ids)
  input_ids = np.full((n, max_len), ids.pad, np.int32)
  attention_mask = np.zeros((n, max_len), np.int32)
  offsets = np.full((n, max_len, 2), -1, np.int32)
  for r, (row, (first, span)) in enumerate(zip(rows_ids, rows_off)):
    input_ids[r, :len(row)] = row
    attention_mask[r, :len(row)] = 1
    offsets[r, first:first + len(span)] = np.asarray(span, np.int32).reshape(-1, 2)
  target = np.asarray(targets, np.int32).reshape(n, 2)
  return QAFeatures(input_ids=input_ids, attention_mask=attention_mask, start_position=target[:, 0].copy(),
                    end_position=target[:, 1].copy(), example_index=np.asarray(owners, np.int32),
                    offsets=offsets)


def _best_span(offsets: np.ndarray, start: np.ndarray, end: np.ndarray, n_best: int,
               max_answer_len: int) -> tuple[float, int, int] | None:
  """(score, char begin, char end) of the best valid span in one window, or None if it has none."""
  in_context = offsets[:, 0] >= 0
  if not in_context.any():
    return None
  start = np.where(in_context, start, -np.inf)
  end = np.where(in_context, end, -np.inf)
  k = min(n_best, int(in_context.sum()))
  s = np.argsort(-start, kind="stable")[:k][:, None]
  e = np.argsort(-end, kind="stable")[:k][None, :]
  ok = (e >= s) & (e - s < max_answer_len) & (offsets[e, 1] > offsets[s, 0])
  ok &= np.isfinite(start[s]) & np.isfinite(end[e])
  if not ok.any():
    return None
  score = np.where(ok, start[s] + end[e], -np.inf)
  a, b = np.unravel_index(int(np.argmax(score)), score.shape)
  return float(score[a, b]), int(offsets[s[a, 0], 0]), int(offsets[e[0, b], 1])


def postprocess(examples: Sequence[Mapping[str, Any]], features: QAFeatures, start_logits: np.ndarray,
                end_logits: np.ndarray, *, n_best: int = 20, max_answer_len: int = 30) -> dict[str, str]:
  """Predicted answer text for every example: id -> text ("" when no window has a valid span).

  Args:
    examples: the examples `features` were made from, in the same order.
    features: `prepare_features(examples, ...)`.
    start_logits, end_logits: (len(features), max_len) scores of each position as answer start / end.
    n_best: the top-n start and top-n end positions (among context tokens) of each window are paired.
    max_answer_len: the longest answer, in tokens.

  Among the valid pairs (start <= end, at most max_answer_len tokens, non-empty text) of all of an
  example's windows, the highest start + end logit wins; ties go to the earlier window and higher-ranked
  start. The answer is the context text between the start token's and the end token's offsets.

  Raises:
    UserError: logits of the wrong shape, features of other examples, duplicate example ids.
  """
  examples = list(examples)
  start_logits, end_logits = np.asarray(start_logits, np.float64), np.asarray(end_logits, np.float64)
  want = features.input_ids.shape
  if start_logits.shape != want or end_logits.shape != want:
    raise UserError(f"QA logits must have shape {want} (features x max_len), got start "
                    f"{start_logits.shape} and end {end_logits.shape}")
  if n_best < 1 or max_answer_len < 1:
    raise UserError(f"n_best and max_answer_len must be >= 1, got {n_best} and {max_answer_len}")
  if len(features) and int(features.example_index.max()) >= len(examples):
    raise UserError(f"QA features refer to example {int(features.example_index.max())} but only "
                    f"{len(examples)} examples were given")
  best: dict[int, tuple[float, int, int]] = {}
  for f in range(len(features)):
    found = _best_span(features.offsets[f], start_logits[f], end_logits[f], n_best, max_answer_len)
    i = int(features.example_index[f])
    if found is not None and (i not in best or found[0] > best[i][0]):
      best[i] = found
  predictions: dict[str, str] = {}
  for i, ex in enumerate(examples):
    qid = str(_field(ex, "id", i))
    if qid in predictions:
      raise UserError(f"QA example {i} repeats the id {qid!r}")
    if i in best:
      _, b, e = best[i]
      predictions[qid] = str(_field(ex, "context", i))[b:e].strip()
    else:
      predictions[qid] = ""
  return predictions
