"""`prepare`: text sources -> a tokenizer and ArrayRecord shards of packed sequences, on Apache Beam.

    python -m rewire.main --config=configs/prepare.py --workdir=data/en --config.data.source=files:en/*.txt.xz

The driver checks everything it can before writing, then runs up to two Beam jobs (`rewire.data.beam`):
a seeded sample of documents for the tokenizer (skipped when `data.tokenizer` names one), and the
tokenization and packing of every unit into shards. Both write under `<out>/.staging/`; only when every
unit has succeeded does the driver move the shards into place and write `manifest.json` last (see
`rewire.data.corpus`). So an interrupted run leaves nothing a reader accepts, and a rerun starts clean.

The manifest records a fingerprint of the inputs and of every setting that changes the sequences. Running
again with the same fingerprint is a no-op; a different one is refused, so nothing prepared earlier is
ever overwritten. Training stages given a raw source call `prepare_into` on `<workdir>/data` themselves:
there is one data path. The settings themselves, and what of them enters the fingerprint, are in
`rewire.data.settings`; `Settings` and `Engine` are importable from here too.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import json
import os
import shutil
import sys
import threading
import time

import numpy as np

from rewire import workdir as rworkdir
from rewire.data import beam, corpus, sources
from rewire.data.settings import Engine, Settings, fingerprint_hash
from rewire.data.tokenizer import load_tokenizer, save_tokenizer, special_ids, train_tokenizer
from rewire.errors import UserError
from rewire.fileio import sha256_file, write_json_atomic
from rewire.telemetry import hms

STAGING = ".staging"


def _check_out_dir(out: str) -> None:
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f"output directory {out} is a file")
  parent = out
  while not os.path.exists(parent):
    parent = os.path.dirname(parent) or "."
  if not os.access(parent, os.W_OK):
    raise UserError(f"cannot write to {parent} (for {out})")


def prepare_into(settings: Settings, out: str, *, engine: Engine = Engine(), name: str | None = None,
                 log_stream=None) -> corpus.Prepared:
  """Prepares `settings` into directory `out` (a no-op when it already holds exactly this)."""
  out = os.path.abspath(out)
  s = settings
  plan = functools.partial(sources.plan_units, parts_per_file=s.parts_per_file, tfds_data_dir=s.tfds_data_dir,
                           max_documents=s.max_documents)
  units = [(u, "train" if s.valid_source else "split") for u in plan(s.source)]
  if s.valid_source:
    units += [(u, "valid") for u in plan(s.valid_source)]
  given_sha = ""
  if s.tokenizer:
    special_ids(load_tokenizer(s.tokenizer))  # the layout, checked before anything is written
    given_sha = sha256_file(s.tokenizer)
  key = s.fingerprint(given_sha)
  fp = fingerprint_hash(key)
  _check_out_dir(out)
  existing = corpus.read_manifest(out) if os.path.isdir(out) else None
  if existing is not None:
    if existing["fingerprint"] == fp:
      return corpus.open_prepared(out, verify=False)
    changed = sorted(k for k in set(key) | set(existing["key"]) if key.get(k) != existing["key"].get(k))
    raise UserError(f"{out} already holds a corpus prepared from other inputs or settings (changed: "
                    f"{', '.join(changed)}); prepare into a new directory")
  created = not os.path.exists(out)
  os.makedirs(out, exist_ok=True)
  try:
    with rworkdir.locked(out):  # one preparation at a time per directory
      return _prepare(s, out, units, key, fp, given_sha, engine, name or os.path.basename(out), log_stream)
  except UserError:  # bad input found by a job: leave no trace (an interrupt leaves staging, never read)
    shutil.rmtree(os.path.join(out, STAGING), ignore_errors=True)
    if created:
      shutil.rmtree(out, ignore_errors=True)
    raise


def _prepare(s: Settings, out: str, units, key: dict, fp: str, given_sha: str, engine: Engine, name: str,
             log_stream) -> corpus.Prepared:
  t0 = time.time()
  staging = os.path.join(out, STAGING)
  shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left: never read
  for sub in ("progress", "sample", "counts", "train", "valid"):
    os.makedirs(os.path.join(staging, sub))
  vocab_limit = s.vocab_size if not s.tokenizer else load_tokenizer(s.tokenizer).get_vocab_size()
  work = beam.Work(staging=staging, text_field=s.text_field,
                   valid_fraction=0.0 if s.valid_source else s.valid_fraction, split_seed=s.split_seed,
                   seq_len=s.seq_len, dtype="uint16" if vocab_limit <= 1 << 16 else "int32",
                   sample_docs=s.tokenizer_sample_docs, tfds_data_dir=s.tfds_data_dir)
  items = [(i, u, role) for i, (u, role) in enumerate(units)]
  total_bytes = sum(u.size for u, _ in units)
  workers = min(len(items), engine.workers or _auto_workers(total_bytes))

  def job(phase: str, fn):
    with _ProgressLine(staging, phase, name, total_bytes, log_stream), _tokenizer_threads(workers):
      summaries = beam.run_job(items, functools.partial(fn, w=work), os.path.join(staging, f"{phase}.json"),
                               runner=engine.runner, workers=workers, beam_args=engine.beam_args)
    errors = [x["error"] for x in summaries if "error" in x]
    if errors:
      raise UserError(errors[0])
    if len(summaries) != len(items):
      raise UserError(f"the {phase} job returned {len(summaries)} of {len(items)} unit summaries")
    return summaries

  tok_path = os.path.join(staging, corpus.TOKENIZER)
  sample_size = 0
  if s.tokenizer:
    shutil.copyfile(s.tokenizer, tok_path)
  else:
    samples = job("sample", beam.sample_unit)
    docs = _merge_samples([x["file"] for x in samples], s.tokenizer_sample_docs)
    if not docs:
      raise UserError(f"{s.source}: no training document to train a tokenizer on")
    sample_size = len(docs)
    print(f"[{name}] training a {s.vocab_size}-piece unigram tokenizer on {len(docs)} sampled documents",
          file=log_stream or sys.stdout, flush=True)
    save_tokenizer(train_tokenizer(docs, s.vocab_size), tok_path)
    del docs
  summaries = job("encode", beam.encode_unit)
  manifest = _manifest(s, units, summaries, key, fp, staging, work.dtype, sample_size, engine, time.time() - t0)
  _commit(out, staging, manifest)
  return corpus.open_prepared(out, verify=False)


def _merge_samples(files: list[str], k: int) -> list[str]:
  """The k documents of smallest hash over all units' sorted samples (a k-way merge, O(units) memory)."""
  handles = [open(f, encoding="utf-8") for f in files]
  try:
    streams = [(json.loads(line) for line in h) for h in handles]
    merged = heapq.merge(*streams)
    return [doc for _, (_, doc) in zip(range(k), merged)]
  finally:
    for h in handles:
      h.close()


def _manifest(s: Settings, units, summaries: list[dict], key: dict, fp: str, staging: str, dtype: str,
              sample_size: int, engine: Engine, seconds: float) -> dict:
  per_file: dict[str, int] = {}
  for (unit, _), summary in zip(units, summaries):
    per_file[unit.locator] = per_file.get(unit.locator, 0) + sum(summary["docs"].values())
  for locator, n in per_file.items():
    if n == 0:
      raise UserError(f"{locator}: holds no non-empty document")
  tok = load_tokenizer(os.path.join(staging, corpus.TOKENIZER))
  counts = np.zeros(special_ids(tok).vocab_size, np.int64)
  for summary in summaries:
    counts += np.load(summary["counts"])
  np.save(os.path.join(staging, corpus.COUNTS), counts)
  splits = {}
  for split in corpus.SPLITS:
    shards = [shard for x in summaries for shard in x["shards"][split]]
    splits[split] = {"documents": sum(x["docs"][split] for x in summaries), "shards": shards,
                     "sequences": sum(sh["records"] for sh in shards), "tokens": sum(sh["tokens"] for sh in shards)}
  source_of_split = s.valid_source or s.source
  if splits["valid"]["sequences"] == 0:
    raise UserError(f"data.valid_fraction={s.valid_fraction} of {s.source!r} holds out no document; raise it "
                    "or set data.valid_source" if not s.valid_source else f"{source_of_split!r} gives no sequence")
  if splits["train"]["sequences"] == 0:
    raise UserError(f"{s.source!r} leaves no training document (data.valid_fraction={s.valid_fraction})")
  return {
      "format": corpus.FORMAT, "fingerprint": fp, "key": key,
      "sources": {"train": s.source, "valid": s.valid_source or f"{s.source} (held out)"},
      "units": [{"name": u.name, "role": role, "bytes": u.size} for u, role in units],
      "seq_len": s.seq_len, "dtype": dtype,
      "tokenizer": {"file": corpus.TOKENIZER, "sha256": sha256_file(os.path.join(staging, corpus.TOKENIZER)),
                    "vocab_size": int(counts.size), "given": s.tokenizer or None,
                    "trained_on_documents": sample_size or None},
      "unigram_counts_sha256": sha256_file(os.path.join(staging, corpus.COUNTS)),
      "splits": splits,
      "run": {"runner": engine.runner, "workers": engine.workers, "seconds": round(seconds, 1),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
  }


def _commit(out: str, staging: str, manifest: dict) -> None:
  """Moves the staged files into place, then writes the manifest (the commit point), then cleans up."""
  for split in corpus.SPLITS:
    shutil.rmtree(os.path.join(out, split), ignore_errors=True)  # leftovers of an unfinished commit
    os.makedirs(os.path.join(out, split))
    for shard in manifest["splits"][split]["shards"]:
      os.replace(os.path.join(staging, shard["file"]), os.path.join(out, shard["file"]))
  for name in (corpus.TOKENIZER, corpus.COUNTS):
    os.replace(os.path.join(staging, name), os.path.join(out, name))
  write_json_atomic(os.path.join(out, corpus.MANIFEST), manifest)
  shutil.rmtree(staging, ignore_errors=True)


SMALL_CORPUS_BYTES = 8 << 20


def _auto_workers(total_bytes: int) -> int:
  """`workers=0`: one per core, but a corpus under 8 MB is prepared in this process, since starting the
  worker processes (a few seconds each) would take longer than the work."""
  return 1 if total_bytes < SMALL_CORPUS_BYTES else os.cpu_count() or 1


@contextlib.contextmanager
def _tokenizer_threads(workers: int):
  """One tokenizer thread per worker process when several run (else the Rust pool oversubscribes)."""
  old = os.environ.get("TOKENIZERS_PARALLELISM")
  if workers > 1:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
  try:
    yield
  finally:
    if workers > 1:
      if old is None:
        os.environ.pop("TOKENIZERS_PARALLELISM", None)
      else:
        os.environ["TOKENIZERS_PARALLELISM"] = old


class _ProgressLine:
  """A background thread that sums the workers' progress files into one line every few seconds."""

  def __init__(self, staging: str, phase: str, name: str, total_bytes: int, stream, every: float = 10.0):
    self.dir = os.path.join(staging, "progress")
    self.phase, self.name, self.total, self.every = phase, name, total_bytes, every
    self.stream = stream or sys.stdout
    self._stop = threading.Event()
    self._t0 = time.time()

  def __enter__(self):
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    if exc[0] is None:
      self.print()

  def _run(self) -> None:
    while not self._stop.wait(self.every):
      self.print()

  def read(self) -> dict:
    total = {"bytes": 0, "docs": 0, "tokens": 0}
    for f in os.listdir(self.dir):
      if f.startswith(self.phase) and f.endswith(".json"):
        try:
          with open(os.path.join(self.dir, f)) as fh:
            rec = json.load(fh)
        except (OSError, json.JSONDecodeError):
          continue
        for k in total:
          total[k] += rec[k]
    return total

  def print(self) -> None:
    p = self.read()
    elapsed = time.time() - self._t0
    parts = [f"[{self.name}] {self.phase}"]
    eta = None
    if self.total:
      frac = min(1.0, p["bytes"] / self.total)
      parts.append(f"{100 * frac:.0f}% of {self.total / 1e6:.1f} MB")
      eta = elapsed * (1 - frac) / frac if frac > 0 else None
    parts.append(f"{p['docs']:,} docs")
    if p["tokens"]:
      parts.append(f"{p['tokens'] / 1e6:.1f}M tokens | {p['tokens'] / max(elapsed, 1e-9) / 1e6:.2f}M tok/s")
    parts.append(f"elapsed {hms(elapsed)}")
    parts.append("ETA " + (hms(eta) if eta is not None else "--"))
    print(" | ".join(parts), file=self.stream, flush=True)
