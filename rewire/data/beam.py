"""The two Apache Beam jobs behind `prepare`, and the per-unit work they distribute.

Both jobs have the same shape: `Create(units) | Reshuffle | Map(work) | ToList | Map(write summary)`.
Each unit (a file, a part of one, a hub shard; see `rewire.data.sources`) is read, processed and written
by one worker in one fused step, so no text and no token passes through the runner, and memory stays
bounded by one block of documents per worker whatever the corpus size. Only a small summary per unit
travels, and the last step writes the list of summaries to a JSON file for the driver.

* `sample_unit`: the unit's train documents with the smallest seeded hashes (a bottom-k sample); the
  driver merges the units' samples into a uniform seeded sample of the whole corpus for the tokenizer.
* `encode_unit`: tokenizes, packs (`rewire.data.packing`) and writes the unit's sequences to ArrayRecord
  shards named after the unit, with their sha256, token counts and the train split's unigram counts.

A document's split is a pure function of its text and `split_seed` (a hash below `valid_fraction` puts it
in validation), so it does not depend on the order, the partitioning or the number of workers, and
duplicated documents never straddle train and validation.

Workers write under the staging folder with plain file I/O, so with a remote runner (Dataflow, Flink,
Spark) the output directory must be a filesystem that every worker mounts (NFS, Filestore, gcsfuse).
User errors inside a worker (undecodable text, a missing field) come back in the summary, not as a
runner traceback, so the driver can print one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import heapq
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np
import tokenizers

from rewire.data import sources
from rewire.data.packing import pack_documents
from rewire.data.tokenizer import special_ids
from rewire.errors import UserError
from rewire.fileio import sha256_file

ENCODE_BLOCK = 2048          # documents per encode_batch call
SHARD_BYTES = 512 << 20      # a new shard after this many bytes of records
WRITER_OPTIONS = "group_size:1,uncompressed"  # one record per chunk: cheap random access for grain
_SPLIT_SALT, _SAMPLE_SALT = b"rewire-split", b"rewire-sample"


@dataclasses.dataclass(frozen=True)
class Work:
  """What a worker needs besides its unit: the data settings and where to write."""
  staging: str
  text_field: str
  valid_fraction: float    # 0 when a unit's role is fixed ("train" or "valid")
  split_seed: int
  seq_len: int
  dtype: str
  sample_docs: int
  tfds_data_dir: str


def doc_hash(text: str, seed: int, salt: bytes) -> int:
  """A 64-bit seeded hash of a document's text."""
  h = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=salt, salt=seed.to_bytes(8, "little"))
  return int.from_bytes(h.digest(), "little")


def _role_of(doc: str, role: str, w: Work) -> str:
  if role != "split":
    return role
  return "valid" if doc_hash(doc, w.split_seed, _SPLIT_SALT) < w.valid_fraction * 2.0**64 else "train"


class _Progress:
  """Writes `progress/unit-N.json` (bytes read, documents, tokens) every few seconds for the driver."""

  def __init__(self, w: Work, index: int, phase: str):
    self.path = os.path.join(w.staging, "progress", f"{phase}-{index:05d}.json")
    self.bytes = [0]
    self.docs = self.tokens = 0
    self._last = 0.0

  def update(self, force: bool = False) -> None:
    now = time.monotonic()
    if force or now - self._last > 2.0:
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        json.dump({"bytes": self.bytes[0], "docs": self.docs, "tokens": self.tokens, "done": force}, f)
      os.replace(tmp, self.path)
      self._last = now


def sample_unit(item: tuple[int, sources.Unit, str], w: Work) -> dict:
  """Writes the unit's `sample_docs` train documents of smallest sample hash, sorted by hash."""
  index, unit, role = item
  progress = _Progress(w, index, "sample")
  heap: list[tuple[int, str]] = []  # (-hash, doc): a max-heap of the k smallest hashes
  try:
    for doc in sources.read_unit(unit, text_field=w.text_field, tfds_data_dir=w.tfds_data_dir,
                                 progress=progress.bytes):
      progress.docs += 1
      if _role_of(doc, role, w) != "train":
        continue
      key = -doc_hash(doc, w.split_seed, _SAMPLE_SALT)
      if len(heap) < w.sample_docs:
        heapq.heappush(heap, (key, doc))
      elif key > heap[0][0]:
        heapq.heapreplace(heap, (key, doc))
      progress.update()
  except UserError as e:
    return {"unit": index, "error": str(e)}
  path = os.path.join(w.staging, "sample", f"unit-{index:05d}.jsonl")
  with open(path, "w", encoding="utf-8") as f:
    for key, doc in sorted(heap, reverse=True):
      f.write(json.dumps([-key, doc]) + "\n")
  progress.update(force=True)
  return {"unit": index, "file": path, "docs": progress.docs}


class _ShardWriter:
  """Writes one split's records of one unit into `<split>-<unit>-<n>.array_record` shards."""

  def __init__(self, w: Work, split: str, index: int):
    self.w, self.split, self.index = w, split, index
    self.record_bytes = w.seq_len * np.dtype(w.dtype).itemsize
    self.per_shard = max(1, SHARD_BYTES // self.record_bytes)
    self.shards: list[dict] = []
    self._writer = None
    self._count = 0
    self._tokens = 0

  def write(self, rows: np.ndarray, pad: int) -> None:
    from array_record.python import array_record_module
    data = rows.astype(self.w.dtype)
    nonpad = (rows != pad).sum(axis=1)
    for row, n in zip(data, nonpad):
      if self._writer is None:
        name = f"{self.split}/{self.split}-{self.index:05d}-{len(self.shards):03d}.array_record"
        self._path = os.path.join(self.w.staging, name)
        self._name = name
        self._writer = array_record_module.ArrayRecordWriter(self._path, WRITER_OPTIONS)
      self._writer.write(row.tobytes())
      self._count += 1
      self._tokens += int(n)
      if self._count == self.per_shard:
        self._close_shard()

  def _close_shard(self) -> None:
    self._writer.close()
    self.shards.append({"file": self._name, "records": self._count, "tokens": self._tokens,
                        "bytes": os.path.getsize(self._path), "sha256": sha256_file(self._path)})
    self._writer, self._count, self._tokens = None, 0, 0

  def close(self) -> list[dict]:
    if self._writer is not None:
      self._close_shard()
    return self.shards


def encode_unit(item: tuple[int, sources.Unit, str], w: Work) -> dict:
  """Tokenizes and packs one unit into ArrayRecord shards; returns its summary."""
  index, unit, role = item
  tok = tokenizers.Tokenizer.from_file(os.path.join(w.staging, "tokenizer.json"))
  ids = special_ids(tok)
  progress = _Progress(w, index, "encode")
  writers = {s: _ShardWriter(w, s, index) for s in ("train", "valid")}
  pending: dict[str, list[str]] = {"train": [], "valid": []}
  docs = {"train": 0, "valid": 0}
  counts = np.zeros(ids.vocab_size, np.int64)

  def flush(split: str) -> None:
    rows = pack_documents(pending[split], tok, w.seq_len)
    writers[split].write(rows, ids.pad)
    if split == "train":
      counts[:] += np.bincount(rows.ravel(), minlength=ids.vocab_size)
    progress.tokens += int((rows != ids.pad).sum())
    pending[split] = []
    progress.update()

  try:
    for doc in sources.read_unit(unit, text_field=w.text_field, tfds_data_dir=w.tfds_data_dir,
                                 progress=progress.bytes):
      split = _role_of(doc, role, w)
      pending[split].append(doc)
      docs[split] += 1
      progress.docs += 1
      if len(pending[split]) >= ENCODE_BLOCK:
        flush(split)
    for split in pending:
      if pending[split]:
        flush(split)
  except UserError as e:
    for writer in writers.values():
      writer.close()
    return {"unit": index, "error": str(e)}
  counts[ids.pad] = 0
  counts_path = os.path.join(w.staging, "counts", f"unit-{index:05d}.npy")
  np.save(counts_path, counts)
  progress.update(force=True)
  return {"unit": index, "docs": docs, "counts": counts_path,
          "shards": {s: writers[s].close() for s in writers}}


def write_summaries(summaries: list[dict], path: str) -> None:
  with open(path, "w") as f:
    json.dump(sorted(summaries, key=lambda s: s["unit"]), f)


def _import_beam():
  """apache_beam, quietly: importing it logs a warning about optional GCP clients that rewire never uses."""
  import logging
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.ERROR)
  try:
    import apache_beam
    from apache_beam.options.pipeline_options import PipelineOptions
  finally:
    root.setLevel(level)
  return apache_beam, PipelineOptions


def run_job(items: Sequence[tuple[int, sources.Unit, str]], work: Callable[[Any], dict], summary_path: str,
            *, runner: str, workers: int, beam_args: Sequence[str]) -> list[dict]:
  """Runs `work` over every unit on a Beam runner; returns the units' summaries (in unit order).

  With the DirectRunner, `workers` > 1 runs that many worker processes (`multi_processing`); one worker
  runs the units in this process, one after another, without a pipeline (whose set-up takes seconds: most
  of a small corpus's preparation). Other runners take their own options from `beam_args`.
  """
  if runner == "DirectRunner" and workers <= 1 and not beam_args:
    write_summaries([work(item) for item in items], summary_path)
  else:
    _run_pipeline(items, work, summary_path, runner=runner, workers=workers, beam_args=beam_args)
  with open(summary_path) as f:
    return json.load(f)


def _run_pipeline(items, work, summary_path: str, *, runner: str, workers: int, beam_args: Sequence[str]) -> None:
  """`run_job` as a Beam pipeline, which writes the summaries to `summary_path` itself."""
  beam, PipelineOptions = _import_beam()
  options: dict[str, Any] = {"runner": runner}
  if runner == "DirectRunner":
    options.update(direct_num_workers=workers,
                   direct_running_mode="multi_processing" if workers > 1 else "in_memory")
  args = list(beam_args) + ["--default_sdk_harness_log_level=ERROR"]
  log = os.path.join(os.path.dirname(summary_path), "beam-workers.log")
  with _stderr_to(log), beam.Pipeline(options=PipelineOptions(args, **options)) as p:
    _ = (p | "Units" >> beam.Create(list(items))
         | "Spread" >> beam.Reshuffle()
         | "Work" >> beam.Map(work)
         | "Collect" >> beam.combiners.ToList()
         | "Summarise" >> beam.Map(write_summaries, summary_path))


@contextlib.contextmanager
def _stderr_to(path: str):
  """Sends file descriptor 2 (so the worker processes' start-up chatter) to `path` while a job runs."""
  sys.stderr.flush()
  saved = os.dup(2)
  with open(path, "ab") as f:
    os.dup2(f.fileno(), 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
