"""The data of a pretraining or adaptation run: a prepared corpus, its tokenizer, batches and validation set.

`data.source` is either `prepared:DIR` (a directory written by `configs/prepare.py`) or a raw text source
(`bundled:`, `files:`, `hf:`, `tfds:`), which is first prepared into `<workdir>/data` by the same code
(`rewire.data.build.prepare_into`). Either way training reads ArrayRecord shards through grain, and a
resumed run finds `<workdir>/data` already prepared and reads no text at all.

The run's `tokenizer.json` is copied into the workdir, where later stages and the exporter find it; a
prepared corpus whose tokenizer differs from the one given in `data.tokenizer`, or from the one the
workdir's checkpoints were trained with, is refused.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any

import numpy as np
import tokenizers

from rewire.data import build
from rewire.data.batches import Batches, budget_prefix, corpus_batches
from rewire.data.corpus import MANIFEST, Prepared, open_prepared
from rewire.data.tokenizer import SpecialIds, load_tokenizer, special_ids
from rewire.errors import UserError
from rewire.fileio import sha256_file

TOKENIZER_FILE = "tokenizer.json"
DATA_DIR = "data"
PREPARED = "prepared:"


@dataclasses.dataclass
class PretrainData:
  tokenizer: tokenizers.Tokenizer
  specials: SpecialIds
  train: Batches
  valid: np.ndarray            # (Nv, L) int32 held-out sequences
  num_train_tokens: int        # non-pad tokens of the sequences `train` iterates over
  num_train_sequences: int     # how many of the corpus's first training sequences `train` iterates over
  unigram_counts: np.ndarray   # token counts of those sequences (the unigram baseline)
  corpus: Prepared


def corpus_dir(data_cfg: Any, workdir: str) -> str:
  """Where a run's prepared corpus lives: the `prepared:` directory, or `<workdir>/data`."""
  source = str(data_cfg.source).strip()
  return os.path.abspath(source[len(PREPARED):]) if source.startswith(PREPARED) else os.path.join(workdir, DATA_DIR)


def open_corpus(data_cfg: Any, workdir: str, *, is_main: bool = True, log_stream=None) -> Prepared:
  """The run's prepared corpus, preparing a raw source into `<workdir>/data` first (process 0 only)."""
  source = str(data_cfg.source).strip()
  if source.startswith(PREPARED):
    corpus = open_prepared(corpus_dir(data_cfg, workdir), verify=bool(data_cfg.verify_shards))
  else:
    out = corpus_dir(data_cfg, workdir)
    settings = build.Settings.from_config(data_cfg)
    if is_main:
      build.prepare_into(settings, out, engine=build.Engine.from_config(data_cfg),
                         name=f"{os.path.basename(os.path.abspath(workdir))}/data", log_stream=log_stream)
    sync_processes("rewire-prepared")
    corpus = open_prepared(out, verify=False)
  if corpus.seq_len != int(data_cfg.seq_len):
    raise UserError(f"data.seq_len={data_cfg.seq_len} but {corpus.directory} holds sequences of "
                    f"{corpus.seq_len} tokens")
  return corpus


def sync_processes(name: str) -> None:
  """Waits until every process of a multi-process job gets here (a no-op in one process)."""
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _has_checkpoint(workdir: str) -> bool:
  from rewire.workdir import has_checkpoint
  from rewire.workdir import checkpoint_dir
  return has_checkpoint(checkpoint_dir(workdir))


def check_tokenizer(corpus: Prepared, data_cfg: Any, workdir: str) -> None:
  """The corpus's tokenizer must be the run's: `data.tokenizer`, and the workdir's when it holds a checkpoint
  (a workdir without one pins nothing: its tokenizer.json is replaced)."""
  manifest = os.path.join(corpus.directory, MANIFEST)
  want = corpus.manifest["tokenizer"]["sha256"]
  if data_cfg.tokenizer and sha256_file(data_cfg.tokenizer) != want:
    raise UserError(f"{manifest} was prepared with another tokenizer than data.tokenizer={data_cfg.tokenizer}")
  mine = os.path.join(workdir, TOKENIZER_FILE)
  if os.path.isfile(mine) and sha256_file(mine) != want and _has_checkpoint(workdir):
    raise UserError(f"{manifest} was prepared with another tokenizer than {mine}, which this run's "
                    "checkpoints were trained with")


def pretraining_data(data_cfg: Any, workdir: str, *, seed: int, global_batch_size: int, token_budget: int = 0,
                     process_index: int = 0, process_count: int = 1, log_stream=None) -> PretrainData:
  """Prepares (if needed) and opens the run's corpus; returns its batches, validation set and baseline.

  A UserError leaves a new workdir as it was: a corpus prepared into it by this call is removed again.
  """
  created = [p for p in (workdir, os.path.join(workdir, DATA_DIR)) if not os.path.exists(p)]
  try:
    corpus = open_corpus(data_cfg, workdir, is_main=process_index == 0, log_stream=log_stream)
    check_tokenizer(corpus, data_cfg, workdir)
    tok = load_tokenizer(corpus.tokenizer_path)
    specials = special_ids(tok)
    max_valid = int(data_cfg.max_valid_sequences) or corpus.num_sequences("valid")
    valid = corpus.read("valid", 0, max_valid)
    if token_budget:
      num_records, counts = budget_prefix(corpus, token_budget, global_batch_size)
    else:
      num_records, counts = corpus.num_sequences("train"), corpus.unigram_counts()
    train = corpus_batches(corpus, global_batch_size, seed, num_records=num_records,
                         process_index=process_index, process_count=process_count)
  except UserError:
    if process_index == 0:
      for path in created:
        shutil.rmtree(path, ignore_errors=True)
    raise
  mine = os.path.join(workdir, TOKENIZER_FILE)
  if process_index == 0 and (not os.path.isfile(mine) or not _has_checkpoint(workdir)):
    os.makedirs(workdir, exist_ok=True)
    shutil.copyfile(corpus.tokenizer_path, mine)
  return PretrainData(tokenizer=tok, specials=specials, train=train, valid=valid,
                      num_train_tokens=int(counts.sum()), num_train_sequences=int(num_records),
                      unigram_counts=counts, corpus=corpus)
