"""Tests for rewire.data.loader (deterministic, resumable, per-host batches) and rewire.data.pretrain."""

import json
import os

import ml_collections
import numpy as np
import pytest

from rewire.data import loader, pretrain, sources
from rewire.data.packing import pack_documents
from rewire.errors import UserError


def _rows(n, length=4):
  """Row i is filled with i, so a batch shows which rows it holds."""
  return np.repeat(np.arange(n, dtype=np.int32)[:, None], length, axis=1)


def _take(it, k):
  return [next(it) for _ in range(k)]


def test_epochs_follow_seeded_permutations_and_drop_the_remainder():
  it = loader.BatchIterator(_rows(10), 4, seed=7)
  assert it.batches_per_epoch == 2
  got = [b[:, 0].tolist() for b in _take(it, 6)]
  for epoch in range(3):
    perm = np.random.default_rng([7, epoch]).permutation(10)
    assert got[2 * epoch] == perm[0:4].tolist()
    assert got[2 * epoch + 1] == perm[4:8].tolist()
  assert it.epoch == 2


def test_deterministic_and_seed_dependent():
  a = _take(loader.BatchIterator(_rows(50), 8, seed=1), 10)
  b = _take(loader.BatchIterator(_rows(50), 8, seed=1), 10)
  c = _take(loader.BatchIterator(_rows(50), 8, seed=2), 10)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("steps_before", [0, 3, 5, 6, 7])
def test_state_restore_gives_identical_continuation(steps_before):
  # 27 rows, batch 4: 6 batches per epoch, so the continuation crosses epoch boundaries.
  original = loader.BatchIterator(_rows(27), 4, seed=3)
  _take(original, steps_before)
  state = json.loads(json.dumps(original.get_state()))
  expected = _take(original, 14)
  restored = loader.BatchIterator(_rows(27), 4, seed=3)
  _take(restored, 2)  # Wherever it was, set_state moves it.
  restored.set_state(state)
  for want, got in zip(expected, _take(restored, 14)):
    np.testing.assert_array_equal(got, want)


def test_per_host_shares_are_disjoint_and_make_the_global_batch():
  data = _rows(40)
  full = loader.BatchIterator(data, 8, seed=0)
  hosts = [loader.BatchIterator(data, 8, seed=0, process_index=p, process_count=4) for p in range(4)]
  for _ in range(12):
    global_batch = next(full)
    shares = [next(h) for h in hosts]
    assert all(s.shape == (2, 4) for s in shares)
    ids = [set(s[:, 0].tolist()) for s in shares]
    assert sum(len(i) for i in ids) == len(set().union(*ids)) == 8
    np.testing.assert_array_equal(np.concatenate(shares), global_batch)


def test_state_is_global_so_it_restores_on_another_host_count():
  single = loader.BatchIterator(_rows(40), 8, seed=5)
  _take(single, 7)
  state = single.get_state()
  host = loader.BatchIterator(_rows(40), 8, seed=5, process_index=1, process_count=2)
  host.set_state(state)
  np.testing.assert_array_equal(next(host), next(single)[4:8])


def test_loader_errors():
  with pytest.raises(UserError, match="fewer than one global batch"):
    loader.BatchIterator(_rows(7), 8, seed=0)
  with pytest.raises(UserError, match="not divisible"):
    loader.BatchIterator(_rows(40), 6, seed=0, process_index=0, process_count=4)
  it = loader.BatchIterator(_rows(40), 8, seed=0)
  with pytest.raises(UserError, match="num_sequences"):
    it.set_state({**it.get_state(), "num_sequences": 41})
  with pytest.raises(UserError, match="epoch"):
    it.set_state({"position": 1})


def test_eval_batches_cover_once_with_pad_rows():
  data = _rows(11) + 10
  batches = list(loader.eval_batches(data, 4, pad_id=1))
  assert len(batches) == loader.num_eval_batches(11, 4) == 3
  assert all(b.shape == (4, 4) for b in batches)
  stacked = np.concatenate(batches)
  np.testing.assert_array_equal(stacked[:11], data)
  assert np.all(stacked[11:] == 1)
  shares = [list(loader.eval_batches(data, 4, 1, process_index=p, process_count=2)) for p in range(2)]
  for i, b in enumerate(batches):
    np.testing.assert_array_equal(np.concatenate([shares[0][i], shares[1][i]]), b)


# prepare_pretraining_data on a small fixture corpus.

_WORDS = ("light water earth heaven river stone bread king city land people house day night sea fire "
          "tree mountain field road").split()


def _corpus(tmp_path, n_docs=40):
  rng = np.random.default_rng(0)
  path = tmp_path / "corpus.jsonl"
  with open(path, "w") as f:
    for i in range(n_docs):
      words = rng.choice(_WORDS, size=int(rng.integers(20, 60)))
      f.write(json.dumps({"body": f"Document {i}. " + " ".join(words) + "."}) + "\n")
  return str(path)


def _cfg(source, **kw):
  cfg = dict(source=source, text_field="body", valid_source="", valid_fraction=0.1, seq_len=16,
             tokenizer="", vocab_size=64, max_valid_sequences=1000)
  cfg.update(kw)
  return ml_collections.ConfigDict(cfg)


def _listing(root):
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_prepare_split_is_disjoint_and_matches_packing(tmp_path):
  cfg = _cfg(f"files:{_corpus(tmp_path)}")
  data = pretrain.prepare_pretraining_data(cfg, str(tmp_path / "w"), seed=0, global_batch_size=8)
  train_docs, valid_docs = pretrain._split_documents(pretrain._settings(cfg))
  assert len(valid_docs) == 4 and len(train_docs) == 36
  assert not set(train_docs) & set(valid_docs)
  assert sorted(train_docs + valid_docs) == sorted(sources.load_documents(cfg.source, text_field="body"))
  np.testing.assert_array_equal(data.valid, pack_documents(valid_docs, data.tokenizer, 16))
  train = pack_documents(train_docs, data.tokenizer, 16)
  assert data.num_train_tokens == int((train != data.specials.pad).sum())
  np.testing.assert_array_equal(data.train_sequences, train)
  batch = next(data.train)
  assert batch.shape == (8, 16)
  assert all(any(np.array_equal(row, t) for t in train) for row in batch)
  assert data.specials.mask == data.specials.vocab_size - 1
  assert _listing(tmp_path / "w")[-1] == "tokenizer.json"


def test_prepare_resume_reuses_tokenizer_and_cache(tmp_path, monkeypatch):
  cfg = _cfg(f"files:{_corpus(tmp_path)}")
  workdir = str(tmp_path / "w")
  first = pretrain.prepare_pretraining_data(cfg, workdir, seed=0, global_batch_size=8)
  files = _listing(workdir)
  stamps = {f: os.stat(os.path.join(workdir, f)).st_mtime_ns for f in files}
  assert len([f for f in files if f.startswith("data_cache")]) == 2

  def forbidden(*args, **kwargs):
    raise AssertionError("a resumed run must not re-read the corpus or retrain the tokenizer")

  monkeypatch.setattr(pretrain.sources, "load_documents", forbidden)
  monkeypatch.setattr(pretrain, "train_tokenizer", forbidden)
  second = pretrain.prepare_pretraining_data(cfg, workdir, seed=0, global_batch_size=8)
  assert second.tokenizer.to_str() == first.tokenizer.to_str()
  np.testing.assert_array_equal(second.valid, first.valid)
  assert second.num_train_tokens == first.num_train_tokens
  for _ in range(6):
    np.testing.assert_array_equal(next(second.train), next(first.train))
  assert _listing(workdir) == files
  assert {f: os.stat(os.path.join(workdir, f)).st_mtime_ns for f in files} == stamps


@pytest.mark.parametrize("case", ["empty", "missing", "too_small_for_batch", "no_valid_doc"])
def test_prepare_errors_leave_workdir_untouched(tmp_path, case):
  empty = tmp_path / "empty.txt"
  empty.write_text("\n\n  \n")
  source = {"empty": f"files:{empty}", "missing": f"files:{tmp_path}/nope/*.jsonl"}.get(
      case, f"files:{_corpus(tmp_path)}")
  cfg = _cfg(source, valid_fraction=0.001 if case == "no_valid_doc" else 0.1)
  batch = 4096 if case == "too_small_for_batch" else 8
  for workdir in (tmp_path / "new", tmp_path / "existing"):
    if workdir.name == "existing":
      workdir.mkdir()
    match = {"empty": "is empty", "missing": "nope", "too_small_for_batch": "fewer than one global",
             "no_valid_doc": "valid_fraction"}[case]
    with pytest.raises(UserError, match=match):
      pretrain.prepare_pretraining_data(cfg, str(workdir), seed=0, global_batch_size=batch)
    assert (workdir.name == "existing") == workdir.exists()
    if workdir.exists():
      assert _listing(workdir) == []
