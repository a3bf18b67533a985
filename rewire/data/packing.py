"""Packs documents into fixed-length `<s> ... </s> <pad>...` sequences that never cross a document.

RoBERTa's FULL-SENTENCES packing lets a sequence run on into the next document; rewire keeps documents
apart instead, so a held-out document never leaks into a training sequence and every sequence is one
contiguous piece of text. Each document's ids are cut into chunks of `seq_len - 2`; each chunk becomes
one row `<s> chunk </s>` followed by `<pad>` up to `seq_len`. Index arithmetic is vectorised in numpy,
tokenisation uses the tokenizer's batched (Rust, multi-threaded) encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tokenizers

from rewire.data.tokenizer import special_ids
from rewire.errors import UserError

_ENCODE_BLOCK = 4096  # Documents per encode_batch call: bounds the memory held by Encoding objects.


def encode_documents(texts: Sequence[str], tok: tokenizers.Tokenizer) -> list[np.ndarray]:
  """The ids of each document, without special tokens, as int32 arrays."""
  out: list[np.ndarray] = []
  for i in range(0, len(texts), _ENCODE_BLOCK):
    encodings = tok.encode_batch(list(texts[i:i + _ENCODE_BLOCK]), add_special_tokens=False)
    out.extend(np.asarray(e.ids, dtype=np.int32) for e in encodings)
  return out


def pack_ids(docs: Sequence[np.ndarray], seq_len: int, *, bos: int, eos: int, pad: int) -> np.ndarray:
  """Packs per-document id arrays into an int32 `(N, seq_len)` array (see the module docstring)."""
  if not isinstance(seq_len, int) or seq_len < 3:
    raise UserError(f"seq_len must be an integer >= 3 (room for <s>, one token, </s>), got {seq_len!r}")
  body = seq_len - 2
  docs = [d for d in docs if len(d)]
  if not docs:
    return np.zeros((0, seq_len), np.int32)
  lengths = np.array([len(d) for d in docs], dtype=np.int64)
  flat = np.concatenate(docs).astype(np.int32)
  chunks_per_doc = -(-lengths // body)
  first_row = np.concatenate([[0], np.cumsum(chunks_per_doc)[:-1]])
  doc_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  # For every token: its document, its offset in the document, and from that its row and column.
  doc_of = np.repeat(np.arange(len(docs)), lengths)
  offset = np.arange(flat.size) - doc_start[doc_of]
  rows = first_row[doc_of] + offset // body
  cols = 1 + offset % body
  num_rows = int(chunks_per_doc.sum())
  out = np.full((num_rows, seq_len), pad, dtype=np.int32)
  out[rows, cols] = flat
  out[:, 0] = bos
  # The length of each row's chunk: full, except the last chunk of each document.
  row_doc = np.repeat(np.arange(len(docs)), chunks_per_doc)
  chunk_index = np.arange(num_rows) - first_row[row_doc]
  chunk_len = np.minimum(body, lengths[row_doc] - chunk_index * body)
  out[np.arange(num_rows), 1 + chunk_len] = eos
  return out


def pack_documents(texts: Sequence[str], tok: tokenizers.Tokenizer, seq_len: int) -> np.ndarray:
  """Tokenises `texts` and packs them into an int32 `(N, seq_len)` array; empty documents are skipped.

  Deterministic: the rows follow the order of `texts`, and the chunks of a document are consecutive.
  """
  ids = special_ids(tok)
  return pack_ids(encode_documents(texts, tok), seq_len, bos=ids.bos, eos=ids.eos, pad=ids.pad)
