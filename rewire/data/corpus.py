"""The on-disk contract of a prepared corpus: ArrayRecord shards of packed sequences plus `manifest.json`.

A prepared directory holds:

  manifest.json          written last, atomically: its presence means the preparation finished
  tokenizer.json         the tokenizer the sequences were encoded with
  unigram_counts.npy     token counts of the train split (the unigram baseline of a run)
  train/*.array_record   one record per packed sequence: `seq_len` token ids, little-endian, `dtype`
  valid/*.array_record   the held-out validation split, same format

The manifest lists every shard with its record count, byte size and sha256, the sources and their
fingerprints, and the totals (documents, tokens, sequences). Readers trust only what the manifest lists:
an interrupted preparation leaves at most a `.staging/` folder and no manifest, which `open_prepared`
refuses. `open_prepared(..., verify=True)` re-hashes every shard, so a corrupt or missing one is a
one-line error naming the file rather than garbage in a batch.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os

import numpy as np

from rewire.errors import UserError
from rewire.fileio import sha256_file

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
COUNTS = "unigram_counts.npy"
FORMAT = "rewire.prepared/1"
SPLITS = ("train", "valid")


def read_manifest(directory: str) -> dict | None:
  """The manifest of `directory`, or None when there is none (never prepared, or not finished)."""
  path = os.path.join(directory, MANIFEST)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from e
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise UserError(f"{path}: not a rewire manifest of format {FORMAT}")
  return manifest


@dataclasses.dataclass
class Prepared:
  """A finished prepared corpus, opened for reading."""
  directory: str
  manifest: dict
  _sources: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  @property
  def seq_len(self) -> int:
    return int(self.manifest["seq_len"])

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(self.manifest["dtype"])

  @property
  def tokenizer_path(self) -> str:
    return os.path.join(self.directory, TOKENIZER)

  @property
  def fingerprint(self) -> str:
    return str(self.manifest["fingerprint"])

  def shard_paths(self, split: str) -> list[str]:
    return [os.path.join(self.directory, s["file"]) for s in self.manifest["splits"][split]["shards"]]

  def num_sequences(self, split: str) -> int:
    return int(self.manifest["splits"][split]["sequences"])

  def num_tokens(self, split: str) -> int:
    return int(self.manifest["splits"][split]["tokens"])

  def unigram_counts(self) -> np.ndarray:
    return np.load(os.path.join(self.directory, COUNTS))

  def source(self, split: str):
    """A grain `ArrayRecordDataSource` over the split's shards, in manifest order (opened once)."""
    import grain
    if split not in self._sources:
      paths = self.shard_paths(split)
      if not paths:
        raise UserError(f"{self.directory}: the {split} split holds no sequence")
      self._sources[split] = grain.sources.ArrayRecordDataSource(paths)
    return self._sources[split]

  def decode(self, records: list[bytes]) -> np.ndarray:
    """Records -> int32 `(len(records), seq_len)` token ids."""
    flat = np.frombuffer(b"".join(records), dtype=self.dtype)
    return flat.reshape(len(records), self.seq_len).astype(np.int32)

  def read(self, split: str, start: int, stop: int) -> np.ndarray:
    """Sequences `start:stop` of a split, in manifest order."""
    stop = min(stop, self.num_sequences(split))
    if stop <= start:
      return np.zeros((0, self.seq_len), np.int32)
    return self.decode(self.source(split).__getitems__(list(range(start, stop))))


def open_prepared(directory: str, *, verify: bool = True) -> Prepared:
  """Opens a finished prepared corpus; UserError naming the file for anything missing or corrupt."""
  directory = os.path.abspath(directory)
  manifest = read_manifest(directory)
  if manifest is None:
    hint = (" (its preparation did not finish: run prepare again)"
            if os.path.isdir(os.path.join(directory, ".staging")) else "")
    raise UserError(f"{directory} holds no {MANIFEST}: not a prepared corpus{hint}")
  files = [(s["file"], s["bytes"], s["sha256"]) for split in SPLITS for s in manifest["splits"][split]["shards"]]
  files += [(TOKENIZER, None, manifest["tokenizer"]["sha256"]), (COUNTS, None, manifest["unigram_counts_sha256"])]
  for name, size, _ in files:
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
      raise UserError(f"missing file of the prepared corpus: {path}")
    if size is not None and os.path.getsize(path) != size:
      raise UserError(f"corrupt shard {path}: {os.path.getsize(path)} bytes, the manifest says {size}")
  if verify:
    paths = [os.path.join(directory, name) for name, _, _ in files]
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
      digests = list(pool.map(sha256_file, paths))
    for (name, _, want), got in zip(files, digests):
      if got != want:
        raise UserError(f"corrupt file of the prepared corpus: {os.path.join(directory, name)} "
                        f"(sha256 differs from {MANIFEST}); prepare it again into a new directory")
  return Prepared(directory, manifest)
