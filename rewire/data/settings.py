"""What `prepare` is told: the settings that determine a prepared corpus, and how its Beam jobs run.

Apart from the driver (`rewire.data.build`) because this is the part a reader of a manifest needs: which
`config.data` fields change the sequences (and so the fingerprint that makes a rerun a no-op or a refusal),
and which only change how the work is scheduled (`Engine`), so they can differ between runs of one corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from rewire.data import corpus, sources
from rewire.errors import UserError


@dataclasses.dataclass(frozen=True)
class Settings:
  """The data settings that determine a prepared corpus (read from `config.data`)."""
  source: str
  text_field: str
  valid_source: str
  valid_fraction: float
  split_seed: int
  seq_len: int
  tokenizer: str
  vocab_size: int
  tokenizer_sample_docs: int
  parts_per_file: int
  max_documents: int
  tfds_data_dir: str

  @classmethod
  def from_config(cls, data_cfg) -> "Settings":
    s = cls(source=str(data_cfg.source), text_field=str(data_cfg.text_field),
            valid_source=str(data_cfg.valid_source), valid_fraction=float(data_cfg.valid_fraction),
            split_seed=int(data_cfg.split_seed), seq_len=int(data_cfg.seq_len),
            tokenizer=str(data_cfg.tokenizer), vocab_size=int(data_cfg.vocab_size),
            tokenizer_sample_docs=int(data_cfg.tokenizer_sample_docs),
            parts_per_file=int(data_cfg.parts_per_file), max_documents=int(data_cfg.max_documents),
            tfds_data_dir=str(data_cfg.tfds_data_dir))
    if s.seq_len < 3:
      raise UserError(f"data.seq_len must be >= 3, got {s.seq_len}")
    if not s.valid_source and not 0.0 < s.valid_fraction < 1.0:
      raise UserError(f"data.valid_fraction must be in (0, 1) when data.valid_source is empty, "
                      f"got {s.valid_fraction}")
    if s.split_seed < 0:
      raise UserError(f"data.split_seed must be >= 0, got {s.split_seed}")
    if s.tokenizer_sample_docs < 1 or s.parts_per_file < 1:
      raise UserError("data.tokenizer_sample_docs and data.parts_per_file must be positive")
    return s

  def fingerprint(self, tokenizer_sha: str) -> dict:
    """Everything that determines the prepared sequences (not how the job runs)."""
    key: dict[str, Any] = {
        "format": corpus.FORMAT, "source": self.source, "inputs": sources.fingerprint(self.source),
        "text_field": self.text_field, "seq_len": self.seq_len, "split_seed": self.split_seed,
        "parts_per_file": self.parts_per_file, "block": sources.BLOCK, "max_documents": self.max_documents,
        "tokenizer": tokenizer_sha or {"vocab_size": self.vocab_size, "sample_docs": self.tokenizer_sample_docs}}
    if self.valid_source:
      key.update(valid_source=self.valid_source, valid_inputs=sources.fingerprint(self.valid_source))
    else:
      key["valid_fraction"] = self.valid_fraction
    return key


@dataclasses.dataclass(frozen=True)
class Engine:
  """How the Beam jobs run: `data.runner`, `data.workers` (0: one per core), `data.beam_options`."""
  runner: str = "DirectRunner"
  workers: int = 0
  beam_args: tuple[str, ...] = ()

  @classmethod
  def from_config(cls, data_cfg) -> "Engine":
    return cls(str(data_cfg.runner), int(data_cfg.workers), tuple(str(data_cfg.beam_options).split()))


def fingerprint_hash(key: dict) -> str:
  """The short hash of a `Settings.fingerprint` key that a manifest records and a rerun compares."""
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
