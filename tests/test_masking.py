"""Tests for rewire.data.masking: statistics, invariants, determinism, jit and sharded inputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rewire.data.masking import mask_tokens, max_predictions_for

B, L, VOCAB, NUM_KEYS = 64, 128, 1000, 32
MASK = VOCAB - 1
M = max_predictions_for(L)


def _packed_like_tokens(seed=0):
  """<s> body </s> <pad>..., bodies of varied length with a few <unk> and <mask> inside; 2 pad rows."""
  rng = np.random.default_rng(seed)
  tokens = np.full((B, L), 1, np.int32)
  for b in range(B - 2):
    n = int(rng.integers(1, L - 1)) if b < 4 else int(rng.integers(L // 2, L - 1))
    tokens[b, 0] = 0
    tokens[b, 1:n + 1] = rng.integers(4, MASK, n)
    tokens[b, n + 1] = 2
    body = tokens[b, 1:n + 1]
    body[rng.random(n) < 0.03] = 3
    body[rng.random(n) < 0.03] = MASK
  return tokens


_mask = functools.partial(mask_tokens, mask_id=MASK, vocab_size=VOCAB, max_predictions=M)


@pytest.fixture(scope="module")
def samples():
  tokens = _packed_like_tokens()
  keys = jnp.stack([jax.random.fold_in(jax.random.key(0), s) for s in range(NUM_KEYS)])
  out = jax.jit(jax.vmap(_mask, in_axes=(0, None)))(keys, tokens)
  return tokens, jax.tree.map(np.asarray, out)


def test_shapes_and_dtypes(samples):
  _, out = samples
  assert out["input_ids"].shape == (NUM_KEYS, B, L) and out["input_ids"].dtype == np.int32
  for name, dtype in [("masked_positions", np.int32), ("masked_labels", np.int32),
                      ("masked_weights", np.float32)]:
    assert out[name].shape == (NUM_KEYS, B, M) and out[name].dtype == dtype


def test_selected_count_is_random_rounding_of_mask_prob(samples):
  tokens, out = samples
  eligible = ((tokens >= 4) & (tokens != MASK)).sum(-1)  # [B]
  k = out["masked_weights"].sum(-1)  # [K, B]
  # Per row, exactly floor(0.15 n) or floor(0.15 n) + 1 positions (random rounding).
  low = np.floor(0.15 * eligible)
  assert np.all((k == low) | (k == low + 1))
  # Overall: E[k] = 0.15 n exactly. Var(k) <= 1/4 per row, so over K*B = 2048 rows the selected count
  # has sd <= 23 on ~26k selections of ~175k eligible, i.e. < 1.3e-4 in the fraction; 1e-3 is > 7 sd.
  fraction = k.sum() / (NUM_KEYS * eligible.sum())
  assert abs(fraction - 0.15) < 1e-3
  assert np.all(k[:, -2:] == 0)  # All-pad rows: nothing to predict.


def test_80_10_10_split(samples):
  tokens, out = samples
  w = out["masked_weights"] > 0
  pos = out["masked_positions"]
  corrupted = np.take_along_axis(out["input_ids"], pos, axis=-1)[w]
  labels = out["masked_labels"][w]
  n = w.sum()
  as_mask = (corrupted == MASK).mean()
  as_random = ((corrupted != MASK) & (corrupted != labels)).mean()
  unchanged = (corrupted == labels).mean()
  # ~26k selections: sd of each fraction <= sqrt(.8*.2/26e3) = 0.0025; tolerances are 4 sd. A random replacement
  # equals the original with probability 1/995, which moves 0.1 by 1e-4.
  assert n > 24_000
  assert abs(as_mask - 0.8) < 0.01
  assert abs(as_random - 0.1) < 0.01
  assert abs(unchanged - 0.1) < 0.01
  replaced = corrupted[(corrupted != MASK) & (corrupted != labels)]
  assert replaced.min() >= 4 and replaced.max() < MASK


def test_invariants(samples):
  tokens, out = samples
  w = out["masked_weights"] > 0
  pos, labels = out["masked_positions"], out["masked_labels"]
  originals = np.broadcast_to(tokens, out["input_ids"].shape)
  at_pos = np.take_along_axis(originals, pos, axis=-1)
  np.testing.assert_array_equal(labels[w], at_pos[w])  # Labels are the original ids.
  assert np.all((labels[w] >= 4) & (labels[w] != MASK))  # Never a special, pad, unk or mask.
  assert np.all(pos[~w] == 0) and np.all(labels[~w] == 0)
  # Used slots come first, and the positions of a row are distinct.
  assert np.all(np.diff(w.astype(np.int8), axis=-1) <= 0)
  for kk in range(3):
    for b in range(B):
      p = pos[kk, b][w[kk, b]]
      assert len(set(p.tolist())) == len(p)
  # Outside the selected positions the input is untouched.
  selected = np.zeros(originals.shape, bool)
  np.put_along_axis(selected, pos, w, axis=-1)
  np.testing.assert_array_equal(out["input_ids"][~selected], originals[~selected])


def test_max_predictions_never_truncates():
  for seq_len in (8, 16, 100, 120, 128, 512):
    for p in (0.15, 0.2, 0.25, 0.5):
      m = max_predictions_for(seq_len, p)
      n = np.arange(seq_len + 1, dtype=np.float32)
      u = np.float32(np.nextafter(np.float32(1), np.float32(0)))  # The largest u < 1.
      worst = np.floor(np.float32(p) * n + u).max()
      assert worst <= m <= seq_len, (seq_len, p, worst, m)
  assert max_predictions_for(128) == 20


def test_capacity_matches_uncapped_selection():
  tokens = np.random.default_rng(1).integers(4, MASK, (B, L)).astype(np.int32)  # All eligible.
  for step in range(8):
    rng = jax.random.fold_in(jax.random.key(1), step)
    capped = _mask(rng, tokens)
    uncapped = mask_tokens(rng, tokens, mask_id=MASK, vocab_size=VOCAB, max_predictions=L)
    np.testing.assert_array_equal(capped["masked_weights"].sum(-1), uncapped["masked_weights"].sum(-1))


def test_deterministic_and_step_dependent():
  tokens = _packed_like_tokens(seed=2)
  key = jax.random.key(3)
  a = _mask(jax.random.fold_in(key, 5), tokens)
  b = _mask(jax.random.fold_in(key, 5), tokens)
  c = _mask(jax.random.fold_in(key, 6), tokens)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name])
  assert not np.array_equal(a["masked_positions"], c["masked_positions"])
  assert not np.array_equal(a["input_ids"], c["input_ids"])


def test_jit_and_sharded_inputs_match_eager():
  tokens = _packed_like_tokens(seed=4)
  rng = jax.random.fold_in(jax.random.key(0), 11)
  eager = _mask(rng, tokens)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharded = jax.device_put(tokens, NamedSharding(mesh, P("data")))
  assert len(sharded.sharding.device_set) == len(jax.devices())
  jitted = jax.jit(_mask)(rng, sharded)
  for name in eager:
    np.testing.assert_array_equal(np.asarray(jitted[name]), np.asarray(eager[name]))


def test_bad_arguments():
  tokens = jnp.zeros((2, 8), jnp.int32)
  with pytest.raises(ValueError):
    mask_tokens(jax.random.key(0), tokens, mask_id=MASK, vocab_size=VOCAB, max_predictions=9)
  with pytest.raises(ValueError):
    mask_tokens(jax.random.key(0), tokens, mask_id=2, vocab_size=VOCAB, max_predictions=2)
