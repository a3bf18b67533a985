"""Batches through grain: a seeded global order, per-host shares, host-count-independent resume, budgets."""

import json

import numpy as np
import pytest

from rewire.data import batches
from rewire.data.corpus import open_prepared
from rewire.errors import UserError

from conftest import shared_corpus


@pytest.fixture(scope="module")
def corpus():
  return open_prepared(shared_corpus())


def take(it, k):
  return [next(it) for _ in range(k)]


def test_epoch_visits_each_record_once_in_a_seeded_order(corpus):
  n = 96  # a prefix of 96 records, batch 8: 12 batches per epoch
  rows = corpus.read("train", 0, n)
  it = batches.corpus_batches(corpus, 8, seed=3, num_records=n)
  epoch = np.concatenate(take(it, 12))
  index = {r.tobytes(): i for i, r in enumerate(rows)}
  assert len(index) == n  # the packed rows of these chapters are distinct
  order = [index[r.tobytes()] for r in epoch]
  assert sorted(order) == list(range(n)) and order != list(range(n))
  second = [index[r.tobytes()] for r in np.concatenate(take(it, 12))]
  assert sorted(second) == list(range(n)) and second != order  # a new permutation each epoch
  other = np.concatenate(take(batches.corpus_batches(corpus, 8, seed=4, num_records=n), 12))
  assert not np.array_equal(other, epoch)
  again = np.concatenate(take(batches.corpus_batches(corpus, 8, seed=3, num_records=n), 12))
  np.testing.assert_array_equal(again, epoch)


@pytest.mark.parametrize("hosts", [2, 4])
def test_host_shares_are_disjoint_and_make_the_global_batch(corpus, hosts):
  full = batches.corpus_batches(corpus, 16, seed=0)
  shares = [batches.corpus_batches(corpus, 16, seed=0, process_index=p, process_count=hosts) for p in range(hosts)]
  for _ in range(5):
    global_batch = next(full)
    parts = [next(s) for s in shares]
    assert all(p.shape == (16 // hosts, corpus.seq_len) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), global_batch)


def test_state_restores_onto_another_host_count(corpus):
  two = [batches.corpus_batches(corpus, 16, seed=1, process_index=p, process_count=2) for p in range(2)]
  for it in two:
    take(it, 7)
  states = [json.loads(json.dumps(it.get_state())) for it in two]
  assert states[0] == states[1]  # the state is global: no host index in it
  expected = np.concatenate([np.concatenate(take(it, 3)) for it in two])
  reference = batches.corpus_batches(corpus, 16, seed=1)
  take(reference, 7)
  want = take(reference, 3)
  for hosts in (1, 4):
    resumed = [batches.corpus_batches(corpus, 16, seed=1, process_index=p, process_count=hosts) for p in range(hosts)]
    for it in resumed:
      it.set_state(states[0])
    got = [np.concatenate([next(it) for it in resumed]) for _ in range(3)]
    for g, w in zip(got, want):
      np.testing.assert_array_equal(g, w)
  assert expected.shape[0] == 48 and resumed[0].batches_read == 10


def test_state_mismatch_is_an_error(corpus):
  it = batches.corpus_batches(corpus, 16, seed=1)
  next(it)
  state = it.get_state()
  with pytest.raises(UserError, match="global_batch_size"):
    batches.corpus_batches(corpus, 32, seed=1).set_state(state)
  with pytest.raises(UserError, match="num_records"):
    batches.corpus_batches(corpus, 16, seed=1, num_records=100).set_state(state)
  with pytest.raises(UserError, match="not saved by this version"):
    it.set_state({"epoch": 0, "position": 3})
  with pytest.raises(UserError, match="fewer than one global batch"):
    batches.corpus_batches(corpus, 16, seed=1, num_records=10)
  with pytest.raises(UserError, match="not divisible"):
    batches.corpus_batches(corpus, 6, seed=0, process_count=4)


def test_token_budget_is_the_exact_prefix(corpus):
  rows = corpus.read("train", 0, 5000)
  tokens = np.cumsum((rows != 1).sum(axis=1))
  budget = int(tokens[700]) - 3  # reached inside row 700
  n, counts = batches.budget_prefix(corpus, budget, min_records=16, chunk=256)  # the prefix spans chunks
  assert n == 701 and tokens[n - 2] < budget <= tokens[n - 1]
  np.testing.assert_array_equal(counts, np.bincount(rows[:n][rows[:n] != 1], minlength=counts.size))
  assert batches.budget_prefix(corpus, 10, min_records=16)[0] == 16  # at least one batch
  with pytest.raises(UserError, match="exceeds the"):
    batches.budget_prefix(corpus, corpus.num_tokens("train") + 1, min_records=16)


def test_eval_batches_cover_once_with_pad_rows():
  data = np.repeat(np.arange(11, dtype=np.int32)[:, None], 4, axis=1) + 10
  out = list(batches.eval_batches(data, 4, pad_id=1))
  assert len(out) == 3
  stacked = np.concatenate(out)
  np.testing.assert_array_equal(stacked[:11], data)
  assert np.all(stacked[11:] == 1)
  shares = [list(batches.eval_batches(data, 4, 1, process_index=p, process_count=2)) for p in range(2)]
  for i, b in enumerate(out):
    np.testing.assert_array_equal(np.concatenate([shares[0][i], shares[1][i]]), b)
