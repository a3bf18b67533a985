"""The prepare stage: known-answer shards, engine independence, no-op reruns, commit, and one-line errors."""

import gzip
import json
import lzma
import os
import re
import shutil

import numpy as np
import pytest

from rewire.config import data_defaults
from rewire.data import beam, build, sources
from rewire.data.corpus import SPLITS, open_prepared
from rewire.data.packing import pack_documents
from rewire.data.run_data import check_tokenizer, pretraining_data
from rewire.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from rewire.errors import UserError
from rewire.fileio import sha256_file

from conftest import shared_tokenizer

_WORDS = ("light water earth heaven river stone bread king city land people house day night sea fire "
          "tree mountain field road").split()
L = 16


def _docs(n, seed):
  rng = np.random.default_rng(seed)
  return [f"Doc {seed}-{i}. " + " ".join(rng.choice(_WORDS, size=int(rng.integers(5, 40)))) for i in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Five files in five formats; returns (directory, the documents of each file in sorted file order)."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  import zstandard
  d = tmp_path_factory.mktemp("corpus")
  files = {}
  docs = _docs(30, 1)
  files["a.txt"] = docs
  # Blank lines with spaces and tabs separate documents; a document may span lines.
  (d / "a.txt").write_text("\n \t\n".join(x.replace(". ", ".\n", 1) for x in docs) + "\n\n\n")
  docs = _docs(25, 2)
  files["b.txt.gz"] = docs
  with gzip.open(d / "b.txt.gz", "wt", encoding="utf-8") as f:
    f.write("\n\n".join(docs))
  docs = _docs(40, 3)
  files["c.txt.xz"] = docs
  with lzma.open(d / "c.txt.xz", "wt", encoding="utf-8") as f:
    f.write("\n\n".join(docs))
  docs = _docs(20, 4)
  files["d.jsonl.zst"] = docs
  with open(d / "d.jsonl.zst", "wb") as f:
    f.write(zstandard.ZstdCompressor().compress("".join(json.dumps({"text": x}) + "\n" for x in docs).encode()))
  docs = _docs(35, 5)
  files["e.parquet"] = docs
  pq.write_table(pa.table({"text": docs, "n": list(range(35))}), d / "e.parquet", row_group_size=10)
  return d, files


def _reference_docs(d, files):
  """The documents as today's readers see them, independently of rewire.data.sources."""
  out = []
  for name in sorted(files):
    if name == "a.txt":
      text = (d / name).read_text()
      out += [x.strip() for x in re.split(r"\n[ \t\r\f\v]*\n", text) if x.strip()]
    else:
      out += files[name]
  return out


def settings(source, **kw):
  d = data_defaults()
  d.update(source=source, seq_len=L, tokenizer=shared_tokenizer(), valid_fraction=0.2, workers=1)
  d.update(kw)
  return build.Settings.from_config(d), build.Engine.from_config(d)


def run(source, out, **kw):
  s, e = settings(source, **kw)
  with open(os.devnull, "w") as sink:
    return build.prepare_into(s, str(out), engine=e, log_stream=sink)


def _all_rows(p, split):
  return p.read(split, 0, p.num_sequences(split))


def _listing(root):
  out = {}
  for dirpath, _, names in os.walk(root):
    for n in names:
      path = os.path.join(dirpath, n)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = (f.read(), os.stat(path).st_mtime_ns)
  return out


@pytest.fixture(scope="module")
def prepared_corpus(corpus, tmp_path_factory):
  d, files = corpus
  return run(f"files:{d}/*", tmp_path_factory.mktemp("prep") / "out")


def test_shards_hold_exactly_the_sequences_of_the_packing_rule(corpus, prepared_corpus):
  d, files = corpus
  p = prepared_corpus
  docs = _reference_docs(d, files)
  assert len(docs) == 150
  is_valid = [beam.doc_hash(x, 0, beam._SPLIT_SALT) < 0.2 * 2.0**64 for x in docs]
  train = [x for x, v in zip(docs, is_valid) if not v]
  valid = [x for x, v in zip(docs, is_valid) if v]
  assert 10 < len(valid) < 50
  tok = load_tokenizer(shared_tokenizer())
  np.testing.assert_array_equal(_all_rows(p, "train"), pack_documents(train, tok, L))
  np.testing.assert_array_equal(_all_rows(p, "valid"), pack_documents(valid, tok, L))
  m = p.manifest
  assert m["splits"]["train"]["documents"] == len(train) and m["splits"]["valid"]["documents"] == len(valid)
  rows = pack_documents(train, tok, L)
  assert m["splits"]["train"]["tokens"] == int((rows != 1).sum()) == int(p.unigram_counts().sum())
  np.testing.assert_array_equal(p.unigram_counts(), np.bincount(rows[rows != 1], minlength=p.unigram_counts().size))
  assert p.dtype == np.uint16 and m["seq_len"] == L
  assert [u["name"] for u in m["units"]] == [str(d / n) for n in sorted(files)]
  for shard in m["splits"]["train"]["shards"]:
    assert sha256_file(os.path.join(p.directory, shard["file"])) == shard["sha256"]
  assert not os.path.exists(os.path.join(p.directory, ".staging"))


def test_two_workers_and_interleaved_parts_give_the_same_sequences(corpus, prepared_corpus, tmp_path):
  d, _ = corpus
  two = run(f"files:{d}/*", tmp_path / "two", workers=2)
  shards = lambda p: [(s["records"], s["sha256"]) for s in p.manifest["splits"]["train"]["shards"]]
  assert shards(two) == shards(prepared_corpus)  # the engine's parallelism does not change a byte
  parts = run(f"files:{d}/*", tmp_path / "parts", parts_per_file=3)
  a, b = _all_rows(prepared_corpus, "train"), _all_rows(parts, "train")
  assert len(parts.manifest["units"]) == 15
  np.testing.assert_array_equal(np.unique(a, axis=0), np.unique(b, axis=0))  # same rows, another order
  assert parts.fingerprint != prepared_corpus.fingerprint


def test_rerun_is_a_no_op_and_other_settings_are_refused(corpus, prepared_corpus, monkeypatch):
  d, _ = corpus
  out = prepared_corpus.directory
  before = _listing(out)

  def forbidden(*a, **k):
    raise AssertionError("a rerun on the same inputs must not run a job")

  monkeypatch.setattr(beam, "run_job", forbidden)
  again = run(f"files:{d}/*", out)
  assert again.manifest == prepared_corpus.manifest and _listing(out) == before
  with pytest.raises(UserError, match=r"already holds a corpus prepared from other inputs or settings "
                                      r"\(changed: seq_len\)"):
    run(f"files:{d}/*", out, seq_len=24)
  assert _listing(out) == before


def test_an_interrupted_run_leaves_nothing_a_reader_accepts(corpus, tmp_path, monkeypatch):
  d, _ = corpus
  out = tmp_path / "out"
  real_commit = build._commit

  def crash_after_moving_shards(out_dir, staging, manifest):
    for split in SPLITS:
      os.makedirs(os.path.join(out_dir, split), exist_ok=True)
      for shard in manifest["splits"][split]["shards"]:
        os.replace(os.path.join(staging, shard["file"]), os.path.join(out_dir, shard["file"]))
    raise KeyboardInterrupt

  monkeypatch.setattr(build, "_commit", crash_after_moving_shards)
  with pytest.raises(KeyboardInterrupt):
    run(f"files:{d}/a.txt", out)
  assert os.listdir(out / "train")  # shards are there, but no manifest: not a corpus
  with pytest.raises(UserError, match=r"holds no manifest.json: not a prepared corpus \(its preparation did not "
                                      r"finish"):
    open_prepared(str(out))
  monkeypatch.setattr(build, "_commit", real_commit)
  p = run(f"files:{d}/a.txt", out)
  assert open_prepared(p.directory, verify=True).num_sequences("train") > 0
  assert not os.path.exists(out / ".staging")


def test_sampled_tokenizer_is_seeded_and_reproducible(corpus, tmp_path):
  d, files = corpus
  a = run(f"files:{d}/a.txt,{d}/c.txt.xz", tmp_path / "a", tokenizer="", vocab_size=120, tokenizer_sample_docs=20)
  b = run(f"files:{d}/a.txt,{d}/c.txt.xz", tmp_path / "b", tokenizer="", vocab_size=120, tokenizer_sample_docs=20,
          workers=2)
  assert a.manifest["tokenizer"]["trained_on_documents"] == 20
  assert a.manifest["tokenizer"]["sha256"] == b.manifest["tokenizer"]["sha256"]
  c = run(f"files:{d}/a.txt,{d}/c.txt.xz", tmp_path / "c", tokenizer="", vocab_size=120, tokenizer_sample_docs=20,
          split_seed=1)
  assert c.manifest["tokenizer"]["sha256"] != a.manifest["tokenizer"]["sha256"]


def test_sources_hf_streaming_tfds_and_bundled(tmp_path, corpus):
  pytest.importorskip("datasets")
  d, files = corpus
  folder = tmp_path / "hub"
  folder.mkdir()
  import pyarrow as pa
  import pyarrow.parquet as pq
  for i in range(2):  # a Parquet-converted hub dataset: data/train-0000i-of-00002.parquet
    (folder / "data").mkdir(exist_ok=True)
    pq.write_table(pa.table({"text": files["e.parquet"][i::2]}), folder / "data" / f"train-0000{i}-of-00002.parquet")
  p = run(f"hf:{folder}:train", tmp_path / "hf")
  assert [u["name"] for u in p.manifest["units"]] == [f"hf:{folder}:train (part {i}/2)" for i in (1, 2)]
  assert p.manifest["splits"]["train"]["documents"] + p.manifest["splits"]["valid"]["documents"] == 35
  b = run("bundled:bible_es", tmp_path / "es", valid_fraction=0.05)
  assert b.manifest["splits"]["train"]["documents"] + b.manifest["splits"]["valid"]["documents"] == 929


def test_max_documents_caps_each_source(corpus, tmp_path):
  d, files = corpus
  p = run(f"files:{d}/c.txt.xz", tmp_path / "cap", max_documents=12, valid_fraction=0.5)
  assert sum(p.manifest["splits"][s]["documents"] for s in SPLITS) == 12


def _prepared_copy(prepared_corpus, tmp_path):
  out = tmp_path / "copy"
  shutil.copytree(prepared_corpus.directory, out)
  return out


def test_corrupt_or_missing_shard_is_a_one_line_error_naming_it(prepared_corpus, tmp_path):
  out = _prepared_copy(prepared_corpus, tmp_path)
  shard = out / prepared_corpus.manifest["splits"]["train"]["shards"][0]["file"]
  data = bytearray(shard.read_bytes())
  data[len(data) // 2] ^= 0xFF
  shard.write_bytes(bytes(data))
  with pytest.raises(UserError, match=rf"corrupt file of the prepared corpus: {re.escape(str(shard))} "):
    open_prepared(str(out))
  shard.write_bytes(bytes(data[:-10]))
  with pytest.raises(UserError, match=rf"corrupt shard {re.escape(str(shard))}: "):
    open_prepared(str(out), verify=False)
  shard.unlink()
  with pytest.raises(UserError, match=rf"missing file of the prepared corpus: {re.escape(str(shard))}$"):
    open_prepared(str(out))


def test_a_manifest_with_another_tokenizer_than_the_run_is_refused(prepared_corpus, tmp_path):
  cfg = data_defaults()
  other = tmp_path / "other.json"
  save_tokenizer(train_tokenizer(["some other words for another tokenizer"] * 10, 40), str(other))
  cfg.update(source=f"prepared:{prepared_corpus.directory}", tokenizer=str(other))
  manifest = os.path.join(prepared_corpus.directory, "manifest.json")
  with pytest.raises(UserError, match=rf"^{re.escape(manifest)} was prepared with another tokenizer than data\.tokenizer"):
    check_tokenizer(prepared_corpus, cfg, str(tmp_path))
  cfg.tokenizer = ""
  (tmp_path / "tokenizer.json").write_bytes(other.read_bytes())
  check_tokenizer(prepared_corpus, cfg, str(tmp_path))  # no checkpoint: the workdir's tokenizer pins nothing
  (tmp_path / "checkpoints" / "6").mkdir(parents=True)
  with pytest.raises(UserError, match=r"another tokenizer than .*tokenizer\.json, which this run's checkpoints"):
    check_tokenizer(prepared_corpus, cfg, str(tmp_path))


@pytest.mark.parametrize("case", ["empty", "blank", "not_utf8", "bad_xz"])
def test_bad_inputs_are_one_line_errors_naming_the_file_and_leave_earlier_output_alone(
    case, corpus, prepared_corpus, tmp_path):
  d, _ = corpus
  bad = tmp_path / {"empty": "e.txt", "blank": "b.txt", "not_utf8": "n.txt", "bad_xz": "x.txt.xz"}[case]
  bad.write_bytes({"empty": b"", "blank": b"\n \n\t\n", "not_utf8": "caf\u00e9 au lait\n".encode("latin-1"),
                   "bad_xz": b"\xfd7zXZ\x00 truncated"}[case])
  message = {"empty": "the file is empty", "blank": "holds no non-empty document", "not_utf8": "not UTF-8 text",
             "bad_xz": "cannot read it"}[case]
  out = tmp_path / "out"
  with pytest.raises(UserError, match=rf"^{re.escape(str(bad))}: {message}") as e:
    run(f"files:{d}/a.txt,{bad}", out)
  assert "\n" not in str(e.value)
  assert not (out / "manifest.json").exists()
  before = _listing(prepared_corpus.directory)
  with pytest.raises(UserError):
    run(f"files:{d}/a.txt,{bad}", prepared_corpus.directory)
  assert _listing(prepared_corpus.directory) == before


def test_a_stage_prepares_a_raw_source_into_its_workdir_once(corpus, tmp_path, monkeypatch):
  d, _ = corpus
  cfg = data_defaults()
  cfg.update(source=f"files:{d}/a.txt,{d}/c.txt.xz", seq_len=L, tokenizer=shared_tokenizer(), valid_fraction=0.2,
             workers=1, max_valid_sequences=0)
  workdir = tmp_path / "run"
  with open(os.devnull, "w") as sink:
    first = pretraining_data(cfg, str(workdir), seed=0, global_batch_size=8, log_stream=sink)
  assert (workdir / "data" / "manifest.json").exists()
  assert (workdir / "tokenizer.json").read_bytes() == open(shared_tokenizer(), "rb").read()
  assert first.valid.shape == (first.corpus.num_sequences("valid"), L)
  batches = [next(first.train) for _ in range(4)]

  def forbidden(*a, **k):
    raise AssertionError("a resumed run must not read text or run a job")

  monkeypatch.setattr(beam, "run_job", forbidden)
  monkeypatch.setattr(sources, "read_unit", forbidden)
  second = pretraining_data(cfg, str(workdir), seed=0, global_batch_size=8)
  for want in batches:
    np.testing.assert_array_equal(next(second.train), want)


def test_a_failing_stage_leaves_a_new_workdir_as_it_was(corpus, tmp_path):
  d, _ = corpus
  cfg = data_defaults()
  cfg.update(source=f"files:{d}/a.txt", seq_len=L, tokenizer=shared_tokenizer(), valid_fraction=0.2, workers=1)
  with pytest.raises(UserError, match="fewer than one global batch"):
    pretraining_data(cfg, str(tmp_path / "new"), seed=0, global_batch_size=4096)
  assert not (tmp_path / "new").exists()
  (tmp_path / "old").mkdir()
  with pytest.raises(UserError, match="fewer than one global batch"):
    pretraining_data(cfg, str(tmp_path / "old"), seed=0, global_batch_size=4096)
  assert os.listdir(tmp_path / "old") == []
