"""The forgetting transformation and the stage optimizer, on a small RoBERTa-shaped param tree."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from rewire import forgetting, optim
from rewire.models import registry
from rewire.errors import UserError

EMB = "roberta/embeddings/word_embeddings/embedding"
K, TOTAL, PAD = 3, 9, 1


def make_params(seed=0):
  ks = jax.random.split(jax.random.key(seed), 4)
  return {
      "roberta": {
          "embeddings": {"word_embeddings": {"embedding": jax.random.normal(ks[0], (12, 4))},
                         "position_embeddings": {"embedding": jax.random.normal(ks[1], (8, 4))}},
          "encoder": {"dense": {"kernel": jax.random.normal(ks[2], (4, 4)), "bias": jnp.zeros(4)}},
      },
      "lm_head": {"bias": jax.random.normal(ks[3], (12,))},
  }


def optim_cfg(clip=0.5):
  return ml_collections.ConfigDict(dict(lr=1e-2, warmup_steps=3, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01,
                                        clip_norm=clip))


def make_tx(params, every=K, rules=((".*", "train"),), clip=0.5, seed=0, pattern=EMB, until=0,
            reset_optimizer=True):
  """The stage optimizer as every stage builds it (`optim.stage_optimizer`): tx, labels, schedules."""
  cfg = optim_cfg(clip)
  cfg.rules = rules
  forget = ml_collections.ConfigDict(dict(pattern=pattern, init_std=0.02, until=until,
                                          reset_optimizer=reset_optimizer))
  opt = optim.stage_optimizer(cfg, registry.family("roberta"), params, total_steps=TOTAL, forget_every=every,
                              forget_cfg=forget, seed=seed, pad_id=PAD)
  return opt.tx, opt.labels, opt.schedules


def grads_for(step, params):
  return jax.tree.map(lambda p: jnp.sin(p * (step + 1.0)) * 0.1, params)


def run(tx, params, steps):
  """Applies `steps` updates; returns the history of (params, state, updates)."""
  state = tx.init(params)
  update = jax.jit(tx.update)
  hist = []
  for s in range(steps):
    updates, state = update(grads_for(s, params), state, params)
    params = optax.apply_updates(params, updates)
    hist.append((params, state, updates))
  return hist


def leaves_by_path(tree):
  return {optim.path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_reset_touches_only_embeddings_and_restarts_their_state():
  params = make_params()
  hist_f = run(make_tx(params)[0], params, K + 1)
  after = hist_f[K - 1][0]  # params after update K, which a reset follows
  emb = after["roberta"]["embeddings"]["word_embeddings"]["embedding"]
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), forgetting._SALT), K)
  expected = 0.02 * jax.random.normal(jax.random.fold_in(key, 0), emb.shape)
  np.testing.assert_array_equal(np.asarray(emb[PAD]), 0.0)
  rows = np.array([i for i in range(emb.shape[0]) if i != PAD])
  # params + (fresh - params) lands on the sample up to one rounding at the old values' scale (~1 here).
  np.testing.assert_allclose(emb[rows], expected[rows], atol=2.5e-7, rtol=0)
  assert abs(float(jnp.std(emb[rows])) - 0.02) < 0.01
  # The embedding group's Adam moments are zero and its counts restart; the body's are untouched.
  adam, _, sched = optim.group_state(hist_f[K - 1][1], optim.FORGET)
  for leaf in jax.tree.leaves(adam.mu) + jax.tree.leaves(adam.nu):
    assert not np.any(np.asarray(leaf))
  assert int(adam.count) == 0 and int(sched.count) == 0
  body_adam = optim.group_state(hist_f[K - 1][1], optim.TRAIN)[0]
  assert int(body_adam.count) == K
  # One update later the embedding group counts from 1 again.
  assert int(optim.group_state(hist_f[K][1], optim.FORGET)[0].count) == 1


def test_body_update_across_reset_equals_update_without_reset():
  params = make_params()
  tx_f = make_tx(params)[0]
  # Same optimizer groups and clipping, but the reset never fires.
  tx_n = make_tx(params, every=TOTAL * 10)[0]
  # Feed both the same params and grads at the reset step, so the comparison is exact.
  state_f, state_n = tx_f.init(params), tx_n.init(params)
  for s in range(K):
    g = grads_for(s, params)
    upd_f, state_f = jax.jit(tx_f.update)(g, state_f, params)
    upd_n, state_n = jax.jit(tx_n.update)(g, state_n, params)
  uf, un = leaves_by_path(upd_f), leaves_by_path(upd_n)
  for name in uf:
    if name == EMB:
      assert not np.array_equal(np.asarray(uf[name]), np.asarray(un[name]))
    else:
      np.testing.assert_array_equal(np.asarray(uf[name]), np.asarray(un[name]), err_msg=name)
  body_f = jax.tree.leaves(optim.group_state(state_f, optim.TRAIN))
  body_n = jax.tree.leaves(optim.group_state(state_n, optim.TRAIN))
  for a, b in zip(body_f, body_n):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resets_at_multiples_of_k_and_never_after_the_last_update():
  due = [s for s in range(1, TOTAL + 1) if bool(forgetting.reset_due(jnp.int32(s), K, TOTAL))]
  assert due == [3, 6]  # 9 is the final update: no reset after it
  params = make_params()
  hist = run(make_tx(params)[0], params, TOTAL)
  counts = [int(optim.group_state(st, optim.FORGET)[0].count) for _, st, _ in hist]
  assert counts == [1, 2, 0, 1, 2, 0, 1, 2, 3]


def test_standard_run_never_resets():
  assert not any(bool(forgetting.reset_due(jnp.int32(s), 0, TOTAL)) for s in range(1, TOTAL + 1))
  params = make_params()
  tx, labels, _ = make_tx(params, every=0)
  assert optim.FORGET not in jax.tree.leaves(labels)
  hist = run(tx, params, TOTAL)
  emb = [np.asarray(p["roberta"]["embeddings"]["word_embeddings"]["embedding"]) for p, _, _ in hist]
  # The embedding evolves smoothly by Adam steps: never more than ~lr per entry per update.
  for a, b in zip(emb, emb[1:]):
    assert np.abs(a - b).max() < 0.05


def test_reset_is_a_function_of_seed_and_step():
  params = make_params()
  a = run(make_tx(params)[0], params, K)[-1][0]
  b = run(make_tx(params)[0], params, K)[-1][0]
  c = run(make_tx(params, seed=1)[0], params, K)[-1][0]
  ea, eb, ec = (x["roberta"]["embeddings"]["word_embeddings"]["embedding"] for x in (a, b, c))
  np.testing.assert_array_equal(ea, eb)
  assert not np.allclose(ea, ec)


def test_embedding_group_replays_schedule_in_each_episode():
  scheds = optim.make_schedules(optim_cfg(), TOTAL, K, ["forget", "train"])
  body = [float(scheds.rates(jnp.int32(s), K)["train"]) for s in range(1, TOTAL + 1)]
  emb = [float(scheds.rates(jnp.int32(s), K)["forget"]) for s in range(1, TOTAL + 1)]
  assert emb[0:3] == emb[3:6] == emb[6:9]
  assert body[0] != body[3]
  np.testing.assert_allclose(body, [float(optim.warmup_linear_decay(1e-2, 3, TOTAL)(s)) for s in range(TOTAL)])


def test_label_table_requires_full_coverage_and_frozen_has_no_state():
  params = make_params()
  with pytest.raises(UserError, match="lm_head/bias"):
    optim.label_params(params, ((r"roberta/.*", "train"),))
  rules = ((EMB, "train"), (".*", "frozen"))
  tx, labels, _ = make_tx(params, every=0, rules=rules)
  state = tx.init(params)
  trained = leaves_by_path(optim.group_state(state, optim.TRAIN)[0].mu)
  assert list(trained) == [EMB]
  assert jax.tree.leaves(optim.group_state(state, "frozen")) == []
  hist = run(tx, params, 2)
  for name, x in leaves_by_path(hist[-1][0]).items():
    if name != EMB:
      np.testing.assert_array_equal(np.asarray(x), np.asarray(leaves_by_path(params)[name]))


def test_forget_pattern_must_match_a_trainable_parameter():
  params = make_params()
  labels = optim.label_params(params, ((".*", "train"),))
  with pytest.raises(UserError, match="matches no parameter"):
    optim.relabel(params, labels, "nothing/here", optim.FORGET)
  frozen = optim.label_params(params, ((".*", "frozen"),))
  with pytest.raises(UserError, match="freezes"):
    optim.relabel(params, frozen, EMB, optim.FORGET)


def embedding(params):
  return np.asarray(params["roberta"]["embeddings"]["word_embeddings"]["embedding"])


def test_until_stops_resets_and_runs_the_last_episode_to_the_end():
  """`forget.until=4` with K=3 over 9 updates: one reset (after update 3), none after; the episode after it
  lasts 6 updates and replays the schedule compressed into 6, not 3, updates."""
  due = [s for s in range(1, TOTAL + 1) if bool(forgetting.reset_due(jnp.int32(s), K, TOTAL, 4))]
  assert due == [3]
  assert forgetting.last_reset(K, TOTAL, 4) == 3 and forgetting.last_reset(K, TOTAL) == 6
  params = make_params()
  tx, _, scheds = make_tx(params, until=4)
  hist = run(tx, params, TOTAL)
  counts = [int(optim.group_state(st, optim.FORGET)[0].count) for _, st, _ in hist]
  assert counts == [1, 2, 0, 1, 2, 3, 4, 5, 6]
  emb = [embedding(p) for p, _, _ in hist]
  assert np.abs(emb[2] - emb[1]).max() > 0.5 * np.abs(emb[1]).max()  # the reset: a fresh small sample
  for a, b in zip(emb[2:], emb[3:]):  # after it, smooth Adam steps only
    assert np.abs(a - b).max() < 0.05
  lrs = [float(scheds.rates(jnp.int32(s), K)["forget"]) for s in range(1, TOTAL + 1)]
  episode = optim.warmup_linear_decay(1e-2, round(3 * 6 / TOTAL), 6)
  np.testing.assert_allclose(lrs[3:], [float(episode(c)) for c in range(6)], rtol=1e-6)
  assert lrs[3:] != lrs[:3] * 2  # not the K-long episode repeated
  # The learning rate the optimizer applied matches the logged one: update = -lr * adam direction.
  last = hist[-1][1]
  assert int(optim.group_state(last, optim.FORGET)[2].count) == 6


def test_until_past_the_end_equals_plain_forgetting():
  params = make_params()
  plain = run(make_tx(params)[0], params, TOTAL)
  late = run(make_tx(params, until=100)[0], params, 2 * K)  # identical through the episodes of length K
  for (a, _, _), (b, _, _) in zip(plain, late):  # (the branch between two schedules compiles differently)
    np.testing.assert_allclose(embedding(a), embedding(b), rtol=1e-5, atol=1e-7)


def only(tree):
  """The one array leaf of a group's moment tree (the forgetting group holds only the embedding)."""
  (leaf,) = jax.tree.leaves(tree)
  return np.asarray(leaf)


def test_reset_optimizer_off_keeps_adam_moments_and_restarts_the_schedule():
  params = make_params()
  cfg = optim_cfg(clip=0.0)
  hists = {}
  for keep in (False, True):
    tx, _, _ = make_tx(params, clip=0.0, reset_optimizer=not keep)
    hists[keep] = run(tx, params, K)
  reset_state = optim.group_state(hists[True][K - 1][1], optim.FORGET)
  zeroed_state = optim.group_state(hists[False][K - 1][1], optim.FORGET)
  # Reset on: moments zeroed, counts restarted.
  assert not np.any(only(zeroed_state[0].mu)) and int(zeroed_state[0].count) == 0
  # Reset off: the moments are Adam's after update K, computed by hand from update K-1's state.
  before = optim.group_state(hists[True][K - 2][1], optim.FORGET)[0]
  g = embedding(grads_for(K - 1, hists[True][K - 2][0]))
  mu = cfg.b1 * only(before.mu) + (1 - cfg.b1) * g
  nu = cfg.b2 * only(before.nu) + (1 - cfg.b2) * g * g
  np.testing.assert_allclose(only(reset_state[0].mu), mu, rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(only(reset_state[0].nu), nu, rtol=1e-5, atol=1e-10)
  assert int(reset_state[0].count) == K  # bias correction goes on with the kept moments
  assert int(reset_state[2].count) == 0  # the schedule episode restarts either way
  # The parameters are reset either way (same fresh sample).
  np.testing.assert_array_equal(embedding(hists[True][K - 1][0]), embedding(hists[False][K - 1][0]))


def test_reset_std_sets_the_spread_of_the_fresh_sample():
  params = {"e": jnp.ones((4000, 8))}
  for std in (0.02, 0.5):
    fresh = forgetting.fresh_leaves(jax.random.key(0), params, init_std=std, pad_id=1)["e"]
    assert not np.any(np.asarray(fresh[1]))
    np.testing.assert_allclose(float(np.std(np.asarray(fresh))), std, rtol=0.03)


def test_pattern_chooses_the_leaves_that_are_reset():
  """`forget.pattern` naming the position embeddings resets those and leaves the token embeddings alone."""
  params = make_params()
  pos = "roberta/embeddings/position_embeddings/embedding"
  hist = run(make_tx(params, pattern=pos)[0], params, K + 1)
  before, after = hist[K - 2][0], hist[K - 1][0]
  get = lambda p, path: np.asarray(leaves_by_path(p)[path])
  # The token embeddings move by one smooth Adam step across update K; the position embeddings are resampled.
  assert np.abs(get(after, EMB) - get(before, EMB)).max() < 0.05
  assert np.abs(get(after, pos) - get(before, pos)).max() > 0.5
  assert abs(float(np.std(get(after, pos)[np.arange(8) != PAD])) - 0.02) < 0.01
