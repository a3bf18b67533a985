"""Tests for rewire.models.roberta: HF parity, MLM head only at masked positions, partitioning, dropout.

The reference is transformers 4.57.6's `FlaxRobertaForMaskedLM` (the last release with Flax models), built
from a tiny random config and fed the same params. Every parity check uses perturbed params (non-zero biases,
non-unit LayerNorm scales), so swapped or ignored weights show up.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, PartitionSpec as P
from transformers import FlaxRobertaForMaskedLM, RobertaConfig

from rewire.models import layers
from rewire.models import roberta as rm
from rewire.models.roberta_heads import RobertaForMaskedLM
from rewire.models.registry import init_variables
from rewire.errors import UserError

B, L, M = 3, 16, 5
CFG = rm.RobertaConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                     max_position_embeddings=40, layer_norm_eps=1e-5)
RULES = [("batch", ("data", "fsdp")), ("embed", "fsdp"), ("vocab", "tensor"), ("heads", "tensor"),
         ("mlp", "tensor"), ("length", None), ("embed_out", None)]


def _flat(tree):
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def hf():
  # _do_init=False: HF builds its param *shape* tree with eval_shape instead of a slow eager init.
  return FlaxRobertaForMaskedLM(RobertaConfig(**CFG.to_hf_dict()), _do_init=False)


@pytest.fixture(scope="module")
def params():
  """rewire-initialised params, every leaf perturbed so that biases and LayerNorms are non-trivial."""

  def make(key):
    p = nn.unbox(init_variables(RobertaForMaskedLM(CFG), key, L))["params"]
    leaves, treedef = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    noisy = [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, noisy)

  return make(jax.random.key(0))


def _hf_apply(hf, params, ids, mask, **kw):
  return jax.jit(lambda p, i, m: hf(i, attention_mask=m, params=p, **kw))(params, ids, mask)


def _apply(cfg, params, *args, **kw):
  model = RobertaForMaskedLM(cfg)
  return jax.jit(lambda p, *a: model.apply({"params": p}, *a, **kw))(params, *args)


@pytest.fixture(scope="module")
def batch():
  """Right-padded rows of different lengths (<s> ... </s> <pad> ...), masked positions inside each row."""
  rng = np.random.default_rng(0)
  lengths = [L, 11, 5]
  ids = rng.integers(3, CFG.vocab_size, size=(B, L)).astype(np.int32)
  mask = np.zeros((B, L), np.int32)
  for i, n in enumerate(lengths):
    ids[i, 0], ids[i, n - 1] = 0, 2
    ids[i, n:] = CFG.pad_token_id
    mask[i, :n] = 1
  positions = np.stack([rng.choice(np.arange(1, n - 1), M) for n in lengths]).astype(np.int32)
  return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(positions)


def test_param_tree_equals_hf(hf):
  ours = jax.eval_shape(functools.partial(init_variables, RobertaForMaskedLM(CFG), seq_len=L),
                        jax.random.key(0))
  ours = {k: v.shape for k, v in _flat(nn.unbox(ours)["params"]).items()}
  theirs = {k: v.shape for k, v in _flat(hf.params_shape_tree).items()}
  assert ours == theirs
  assert not any("decoder" in k for k in ours)


def test_mlm_logits_match_hf_at_masked_positions(hf, params, batch):
  ids, mask, positions = batch
  ours = _apply(CFG, params, ids, mask, positions, deterministic=True)
  theirs = _hf_apply(hf, params, ids, mask).logits  # [B, L, V]
  theirs = np.take_along_axis(np.asarray(theirs), np.asarray(positions)[..., None], axis=1)
  assert ours.shape == (B, M, CFG.vocab_size)
  np.testing.assert_array_less(np.abs(np.asarray(ours) - theirs).max(), 1e-5)


def test_hidden_states_match_hf(hf, params, batch):
  ids, mask, _ = batch
  hidden = _apply(CFG, params, ids, mask, deterministic=True, method=RobertaForMaskedLM.encode)
  direct = jax.jit(functools.partial(rm.RobertaModel(CFG).apply, deterministic=True))(
      {"params": params["roberta"]}, ids, mask)
  theirs = _hf_apply(hf, params, ids, mask, output_hidden_states=True).hidden_states[-1]
  np.testing.assert_allclose(hidden, theirs, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(hidden, direct)


def test_dropout_path_attention_matches_fused_path():
  """The written-out attention (used when attention dropout is on) equals jax.nn.dot_product_attention."""
  kq, kk, kv = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(x, (2, 8, 4, 16)) for x in (kq, kk, kv))
  bias = rm.attention_bias(jnp.asarray([[1] * 8, [1] * 5 + [0] * 3]), jnp.float32)
  fused = jax.jit(layers.attention, static_argnums=4)(q, k, v, bias, 0.1, None)
  # A rate this small drops nothing (threshold rounds to 0) but takes the dropout code path.
  written = jax.jit(layers.attention, static_argnums=4)(q, k, v, bias, 1e-9, jax.random.key(1))
  np.testing.assert_allclose(written, fused, atol=1e-6, rtol=0)


def _shapes(jaxpr):
  """Every intermediate shape in a jaxpr, including nested (jit, remat, custom_jvp...) sub-jaxprs."""
  for eqn in jaxpr.eqns:
    yield from (tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (list, tuple)) else [p]):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          yield from _shapes(sub)


def test_head_runs_only_at_masked_positions(hf, params, batch):
  ids, mask, positions = batch
  model = RobertaForMaskedLM(CFG)

  def ours(p):
    return model.apply({"params": p}, ids, mask, positions, deterministic=False,
                       rngs={"dropout": jax.random.key(0)}).sum()

  def theirs(p):
    return hf(ids, attention_mask=mask, params=p).logits.sum()

  full, gathered = (B, L, CFG.vocab_size), (B, M, CFG.vocab_size)
  ours_shapes = set(_shapes(jax.make_jaxpr(jax.grad(ours))(params).jaxpr))
  assert gathered in ours_shapes and full not in ours_shapes
  # The checker does catch a head applied at every position.
  assert full in set(_shapes(jax.make_jaxpr(jax.grad(theirs))(params).jaxpr))


def test_init_pad_row_zero_and_partition_specs():
  cfg = dataclasses.replace(CFG, pad_token_id=5)
  variables = jax.jit(functools.partial(init_variables, RobertaForMaskedLM(cfg), seq_len=L))(
      jax.random.key(0))
  emb = np.asarray(nn.unbox(variables)["params"]["roberta"]["embeddings"]["word_embeddings"]["embedding"])
  assert np.all(emb[5] == 0) and np.all(np.abs(emb[[0, 1, 6]]).sum(-1) > 0)
  assert 0.015 < float(jnp.std(emb)) < 0.025

  abstract = jax.eval_shape(functools.partial(init_variables, RobertaForMaskedLM(CFG), seq_len=L),
                            jax.random.key(0))
  specs = _flat(nn.get_partition_spec(abstract)["params"])
  shapes = _flat(nn.unbox(abstract)["params"])
  assert specs.keys() == shapes.keys()
  for path, spec in specs.items():
    assert isinstance(spec, P) and len(spec) == len(shapes[path].shape), path
  assert specs["['roberta']['embeddings']['word_embeddings']['embedding']"] == P("vocab", "embed")
  assert specs["['lm_head']['bias']"] == P("vocab")
  assert specs["['roberta']['encoder']['layer']['1']['intermediate']['dense']['kernel']"] == P("embed", "mlp")
  assert specs["['roberta']['encoder']['layer']['0']['attention']['self']['query']['kernel']"] == P(
      "embed", "heads")


def test_sharded_init_and_apply_match_unsharded(params, batch):
  """The lead's recipe: logical specs -> mesh shardings -> jit(init), then apply unboxed under the rules."""
  ids, mask, positions = batch
  ids, mask, positions = (jnp.concatenate([x, x[:1]]) for x in (ids, mask, positions))  # batch 4
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("data", "fsdp", "tensor"),
              axis_types=(AxisType.Auto,) * 3)
  model = RobertaForMaskedLM(CFG)
  init = functools.partial(init_variables, model, seq_len=L)
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(jax.eval_shape(init, jax.random.key(0))),
                                          mesh, RULES)
  variables = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
  emb = variables["params"]["roberta"]["embeddings"]["word_embeddings"]["embedding"].value
  assert emb.sharding.spec == P("tensor", "fsdp")

  def forward(p, ids, mask, positions):
    return model.apply({"params": p}, ids, mask, positions, deterministic=False,
                       rngs={"dropout": jax.random.key(3)})

  expected = jax.jit(forward)(params, ids, mask, positions)  # no mesh, no rules
  sharded_params = jax.device_put(params, nn.unbox(shardings)["params"])
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    got = jax.jit(forward)(sharded_params, ids, mask, positions)
  # Same dropout masks on any mesh (counter-based bits), so only float reassociation differs.
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)


def test_dropout_statistics_and_determinism(params, batch):
  x = jnp.ones((8, 256, 128))
  key = jax.random.key(0)
  dropout = jax.jit(layers.dropout, static_argnums=1)
  y = dropout(x, 0.1, key)
  dropped = np.asarray(y == 0)
  assert abs(dropped.mean() - 0.1) < 0.003
  np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / 0.9], rtol=1e-6)
  # The four 16-bit quarters of each hashed block are independent decisions.
  quarters = dropped.reshape(8, 4, 64, 128)
  assert abs((quarters[:, 0] & quarters[:, 1]).mean() - 0.01) < 0.002
  assert abs((quarters[:, 1] & quarters[:, 3]).mean() - 0.01) < 0.002
  assert not np.array_equal(dropped, np.asarray(dropout(x, 0.1, jax.random.key(1)) == 0))
  assert np.array_equal(layers.dropout(x, 0.1, None), x)
  odd = dropout(jnp.ones((64, 7, 9)), 0.25, key)  # no axis divisible by 4: plain Bernoulli
  assert abs(float((odd == 0).mean()) - 0.25) < 0.03

  ids, mask, positions = batch
  model = RobertaForMaskedLM(CFG)
  run = jax.jit(lambda k: model.apply({"params": params}, ids, mask, positions, deterministic=False,
                                      rngs={"dropout": k}))
  a, b, c = run(jax.random.key(0)), run(jax.random.key(0)), run(jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3


def test_remat_matches(batch):
  ids, mask, positions = batch
  cfg = dataclasses.replace(CFG, num_layers=1)
  params = jax.jit(lambda k: nn.unbox(init_variables(RobertaForMaskedLM(cfg), k, L))["params"])(
      jax.random.key(0))

  def loss(cfg, p):
    out = RobertaForMaskedLM(cfg).apply({"params": p}, ids, mask, positions, deterministic=False,
                                           rngs={"dropout": jax.random.key(0)})
    return jnp.mean(out ** 2)

  g1 = jax.jit(jax.grad(functools.partial(loss, cfg)))(params)
  g2 = jax.jit(jax.grad(functools.partial(loss, dataclasses.replace(cfg, remat=True))))(params)
  for path, v in _flat(g1).items():
    np.testing.assert_allclose(_flat(g2)[path], v, atol=1e-6, rtol=1e-4, err_msg=path)


def test_bfloat16_compute_keeps_float32_params(params, batch):
  ids, mask, positions = batch
  cfg = dataclasses.replace(CFG, dtype="bfloat16")
  abstract = jax.eval_shape(functools.partial(init_variables, RobertaForMaskedLM(cfg), seq_len=L),
                            jax.random.key(0))
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(nn.unbox(abstract)))
  logits = _apply(cfg, params, ids, mask, positions, deterministic=True)
  ref = _apply(CFG, params, ids, mask, positions, deterministic=True)
  assert logits.dtype == jnp.bfloat16
  np.testing.assert_allclose(logits.astype(jnp.float32), ref, atol=0.1)


def test_config_from_dict():
  d = ml_collections.ConfigDict(dict(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2))
  cfg = rm.RobertaConfig.from_dict(d)
  assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size) == (50, 16, 3072)
  assert rm.RobertaConfig.from_dict(dict(vocab_size=50)) == rm.RobertaConfig(vocab_size=50)
  with pytest.raises(UserError, match="hiden_size.*num_layer"):
    rm.RobertaConfig.from_dict(dict(vocab_size=50, hiden_size=16, num_layer=2))
  with pytest.raises(UserError, match="multiple"):
    rm.RobertaConfig.from_dict(dict(vocab_size=50, hidden_size=10, num_heads=4))
  hf_cfg = RobertaConfig(**CFG.to_hf_dict())
  assert (hf_cfg.num_hidden_layers, hf_cfg.hidden_act, hf_cfg.type_vocab_size) == (2, "gelu", 1)


def test_gelu_custom_derivative_matches_autodiff():
  import math
  from rewire.models.layers import gelu
  x = jnp.linspace(-6.0, 6.0, 2001, dtype=jnp.float32)
  plain = lambda v: v * (0.5 + 0.5 * jax.lax.erf(v / math.sqrt(2.0)))
  np.testing.assert_allclose(gelu(x), plain(x), atol=0, rtol=0)
  g_custom = jax.vmap(jax.grad(gelu))(x)
  g_auto = jax.vmap(jax.grad(plain))(x)
  np.testing.assert_allclose(g_custom, g_auto, atol=2e-6)
