"""Glue for the pretraining loop: corpus → train/valid split → tokenizer → packed, cached arrays → batches.

`prepare_pretraining_data` validates everything (corpus, split, tokenizer layout, enough sequences for
one batch) before it writes anything to the workdir, so a bad config leaves the workdir untouched. It
then stores `<workdir>/tokenizer.json` and the packed arrays under `<workdir>/data_cache/`, keyed by a
fingerprint of everything that determines them. A resumed run reloads the same tokenizer (never
retrains) and the same arrays, and when both are cached it does not read the corpus at all.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import tempfile
from typing import Any

import numpy as np
import tokenizers
from absl import logging

from rewire.data import sources
from rewire.data.loader import BatchIterator
from rewire.data.packing import pack_documents
from rewire.data.tokenizer import SpecialIds, load_tokenizer, save_tokenizer, special_ids, train_tokenizer
from rewire.errors import UserError

CACHE_DIR = "data_cache"
TOKENIZER_FILE = "tokenizer.json"
_CACHE_VERSION = 1  # Bump when packing changes, so stale caches are not reused.


@dataclasses.dataclass
class PretrainData:
  tokenizer: tokenizers.Tokenizer
  specials: SpecialIds
  train: BatchIterator
  valid: np.ndarray  # (Nv, L) int32 held-out sequences.
  num_train_tokens: int  # Non-pad tokens in the train sequences.
  train_sequences: np.ndarray  # (N, L) int32, what `train` iterates over (token budgets, statistics).


@dataclasses.dataclass(frozen=True)
class _Settings:
  source: str
  text_field: str
  valid_source: str
  valid_fraction: float
  split_seed: int
  seq_len: int
  tokenizer: str
  vocab_size: int
  max_valid_sequences: int


def _settings(cfg: Any) -> _Settings:
  """Reads and checks the data config (attribute access; optional keys get defaults)."""
  def get(name: str, default: Any) -> Any:
    value = getattr(cfg, name, default)
    return default if value is None else value

  for required in ("source", "seq_len"):
    if get(required, None) is None:
      raise UserError(f"the data config has no {required!r}")
  s = _Settings(
      source=str(cfg.source), text_field=str(get("text_field", "text")),
      valid_source=str(get("valid_source", "")), valid_fraction=float(get("valid_fraction", 0.02)),
      split_seed=int(get("split_seed", 0)), seq_len=int(cfg.seq_len),
      tokenizer=str(get("tokenizer", "")), vocab_size=int(get("vocab_size", 8192)),
      max_valid_sequences=int(get("max_valid_sequences", 0)))
  if s.seq_len < 3:
    raise UserError(f"data.seq_len must be >= 3, got {s.seq_len}")
  if not s.valid_source and not 0.0 < s.valid_fraction < 1.0:
    raise UserError(f"data.valid_fraction must be in (0, 1) when data.valid_source is empty, "
                    f"got {s.valid_fraction}")
  if s.tokenizer and not os.path.isfile(s.tokenizer):
    raise UserError(f"tokenizer file not found: {s.tokenizer}")
  return s


def prepare_pretraining_data(data_cfg: Any, workdir: str, *, seed: int, global_batch_size: int,
                             process_index: int = 0, process_count: int = 1) -> PretrainData:
  """Builds the tokenizer, the train iterator and the validation sequences for a pretraining run.

  Args:
    data_cfg: ConfigDict with source, text_field, valid_source, valid_fraction, seq_len, tokenizer,
      vocab_size, max_valid_sequences (and optionally split_seed, default 0: the held-out documents
      depend on the corpus only, not on the training seed, so runs with different seeds compare).
    workdir: the run directory; receives tokenizer.json and data_cache/.
    seed: the seed of the training data order.
    global_batch_size, process_index, process_count: see `BatchIterator`.

  Raises:
    UserError: a missing or empty corpus, a split that leaves train or valid empty, a tokenizer with the
      wrong layout, or fewer train sequences than one global batch. The workdir is then untouched.
  """
  s = _settings(data_cfg)
  tok_path = os.path.join(workdir, TOKENIZER_FILE)
  tok = None
  if os.path.isfile(tok_path):
    tok = load_tokenizer(tok_path)  # A resumed run: the tokenizer must not change.
    if s.tokenizer:
      logging.info("Using %s from the workdir, not data.tokenizer=%s.", tok_path, s.tokenizer)
  elif s.tokenizer:
    tok = load_tokenizer(s.tokenizer)

  train, valid, train_docs = None, None, None
  if tok is not None:  # With the tokenizer known, a full cache hit needs no corpus at all.
    specials = special_ids(tok)
    train = _load_cached(workdir, _fingerprint(s, tok, "train"))
    valid = _load_cached(workdir, _fingerprint(s, tok, "valid"))
  if train is None or valid is None:
    train_docs, valid_docs = _split_documents(s)
    if tok is None:
      logging.info("Training a %d-piece unigram tokenizer on %d documents.", s.vocab_size,
                   len(train_docs))
      tok = train_tokenizer(train_docs, s.vocab_size)
    specials = special_ids(tok)
    if train is None:
      train = pack_documents(train_docs, tok, s.seq_len)
    if valid is None:
      valid = pack_documents(valid_docs, tok, s.seq_len)
      if s.max_valid_sequences > 0:
        valid = valid[:s.max_valid_sequences]
  if len(valid) == 0:
    raise UserError(f"the validation documents of {s.valid_source or s.source!r} give no sequence")
  iterator = BatchIterator(train, global_batch_size, seed, process_index=process_index,
                           process_count=process_count)

  # Everything is valid: only now write to the workdir.
  if not os.path.isfile(tok_path):
    save_tokenizer(tok, tok_path)
  _save_cached(workdir, _fingerprint(s, tok, "train"), train)
  _save_cached(workdir, _fingerprint(s, tok, "valid"), valid)
  num_train_tokens = int(np.count_nonzero(train != specials.pad))
  logging.info("Data: %d train sequences (%d tokens), %d valid sequences of length %d, vocab %d.",
               len(train), num_train_tokens, len(valid), s.seq_len, specials.vocab_size)
  return PretrainData(tokenizer=tok, specials=specials, train=iterator, valid=valid,
                      num_train_tokens=num_train_tokens, train_sequences=train)


def _split_documents(s: _Settings) -> tuple[list[str], list[str]]:
  """Train and valid documents: a separate source, or a seeded held-out fraction of `source`."""
  docs = sources.load_documents(s.source, text_field=s.text_field)
  if s.valid_source:
    return docs, sources.load_documents(s.valid_source, text_field=s.text_field)
  num_valid = int(round(s.valid_fraction * len(docs)))
  if num_valid < 1 or num_valid >= len(docs):
    raise UserError(f"data.valid_fraction={s.valid_fraction} of the {len(docs)} documents in "
                    f"{s.source!r} holds out {num_valid}; it must leave at least one document for "
                    "validation and one for training (or set data.valid_source)")
  order = np.random.default_rng([s.split_seed, len(docs)]).permutation(len(docs))
  held_out = set(order[:num_valid].tolist())
  train = [d for i, d in enumerate(docs) if i not in held_out]
  valid = [d for i, d in enumerate(docs) if i in held_out]
  return train, valid


def _source_stamp(source: str) -> list[Any]:
  """Sizes and mtimes of local files behind a `files:` source, so edited files invalidate the cache."""
  if not source.startswith("files:"):
    return []
  stamp = []
  for pattern in source[len("files:"):].split(","):
    for path in sorted(glob.glob(os.path.expanduser(pattern.strip()), recursive=True)):
      if os.path.isfile(path):
        st = os.stat(path)
        stamp.append([path, st.st_size, st.st_mtime_ns])
  return stamp


def _fingerprint(s: _Settings, tok: tokenizers.Tokenizer, role: str) -> str:
  key = {
      "version": _CACHE_VERSION, "role": role, "source": s.source, "text_field": s.text_field,
      "valid_source": s.valid_source, "seq_len": s.seq_len, "tokenizer": tok.to_str(),
      "files": _source_stamp(s.source) + _source_stamp(s.valid_source),
  }
  if not s.valid_source:
    key.update(valid_fraction=s.valid_fraction, split_seed=s.split_seed)
  if role == "valid":
    key["max_valid_sequences"] = s.max_valid_sequences
  return f"{role}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]}"


def _cache_path(workdir: str, fingerprint: str) -> str:
  return os.path.join(workdir, CACHE_DIR, f"{fingerprint}.npy")


def _load_cached(workdir: str, fingerprint: str) -> np.ndarray | None:
  path = _cache_path(workdir, fingerprint)
  if not os.path.isfile(path):
    return None
  logging.info("Reusing packed sequences %s.", path)
  return np.load(path, mmap_mode="r")


def _save_cached(workdir: str, fingerprint: str, array: np.ndarray) -> None:
  """Writes the array atomically (tmp file + rename), unless it is already cached."""
  path = _cache_path(workdir, fingerprint)
  if os.path.isfile(path):
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npy.tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      np.save(f, np.ascontiguousarray(array, dtype=np.int32))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
