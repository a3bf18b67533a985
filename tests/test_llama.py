"""The Llama-family decoder: parity with Hugging Face (Flax and PyTorch), causal masking, the KV cache."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rewire.hf.convert import to_pytorch
from rewire.models import registry
from rewire.models.llama import LlamaConfig, init_cache

CONFIGS = {  # odd sizes; grouped-query, multi-head and single-kv-head attention; tied and untied
    "gqa_untied": dict(vocab_size=97, hidden_size=48, num_layers=2, num_heads=6, num_kv_heads=2,
                       intermediate_size=70),
    "mha_tied": dict(vocab_size=61, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=40,
                     tie_word_embeddings=True),
    "mqa_untied": dict(vocab_size=50, hidden_size=24, num_layers=3, num_heads=3, num_kv_heads=1,
                       intermediate_size=36, rms_norm_eps=1e-6),
}


def build(name, **extra):
  cfg = LlamaConfig(**{**CONFIGS[name], "max_position_embeddings": 32, "pad_token_id": 1, **extra})
  model = registry.make_model("LlamaForCausalLM", cfg)
  params = jax.tree.map(np.asarray, jax.jit(lambda k: registry.init_variables(model, k)["params"])(
      jax.random.key(3)))
  # Norm weights off 1, so a mix-up of the two norms of a layer shows.
  params = jax.tree.map(lambda x: x + np.float32(0.05) * np.arange(x.size, dtype=np.float32) / x.size
                        if x.ndim == 1 else x, nn.unbox(params))
  return cfg, model, params


def ids_for(cfg, batch=2, length=13, seed=0):
  return np.random.default_rng(seed).integers(4, cfg.vocab_size, (batch, length)).astype(np.int32)


def hf_kwargs(cfg):
  return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
              num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
              num_key_value_heads=cfg.kv_heads, max_position_embeddings=cfg.max_position_embeddings,
              rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta,
              tie_word_embeddings=cfg.tie_word_embeddings, pad_token_id=1)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_equal_hf_flax_llama(name):
  from transformers import FlaxLlamaForCausalLM, LlamaConfig as HFConfig
  cfg, model, params = build(name)
  ids = ids_for(cfg)
  ours = np.asarray(model.apply({"params": params}, ids, deterministic=True))
  hf = FlaxLlamaForCausalLM(HFConfig(**hf_kwargs(cfg)), _do_init=False)
  hf_params = dict(params)
  if cfg.tie_word_embeddings:  # HF Flax Llama always reads lm_head; a tied model's is the embedding
    hf_params["lm_head"] = {"kernel": params["model"]["embed_tokens"]["embedding"].T}
  theirs = np.asarray(hf(ids, params=hf_params).logits)
  assert ours.shape == (2, 13, cfg.vocab_size)
  np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gqa_untied", "mha_tied"])
def test_logits_equal_pytorch_llama_with_a_non_default_rope_theta(name):
  torch = pytest.importorskip("torch")
  from transformers import LlamaConfig as HFConfig, LlamaForCausalLM
  cfg, model, params = build(name, rope_theta=5000.0)  # HF Flax ignores rope_theta; PyTorch reads it
  ids = ids_for(cfg)
  ours = np.asarray(model.apply({"params": params}, ids, deterministic=True))
  pt = LlamaForCausalLM(HFConfig(**hf_kwargs(cfg))).eval()
  missing, unexpected = pt.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in to_pytorch(params).items()},
                                           strict=False)
  assert not unexpected and set(missing) <= ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
  if cfg.tie_word_embeddings:
    pt.tie_weights()
  with torch.no_grad():
    theirs = pt(torch.from_numpy(ids).long()).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=1e-5)


def test_a_future_token_cannot_change_a_past_logit():
  cfg, model, params = build("gqa_untied")
  ids = ids_for(cfg, batch=1, length=12)
  f = jax.jit(lambda x: model.apply({"params": params}, x, deterministic=True))
  base = np.asarray(f(ids))
  for j in (0, 5, 11):
    changed = ids.copy()
    changed[0, j] = (changed[0, j] + 7) % cfg.vocab_size
    out = np.asarray(f(changed))
    np.testing.assert_array_equal(out[:, :j], base[:, :j])
    assert np.abs(out[:, j:] - base[:, j:]).max() > 1e-4


def test_prefill_and_cached_decoding_equal_the_full_forward():
  cfg, model, params = build("gqa_untied")
  ids = ids_for(cfg, batch=2, length=10)
  full = np.asarray(model.apply({"params": params}, ids, deterministic=True))
  cache = init_cache(cfg, 2, 16)
  logits, cache = model.apply({"params": params}, ids[:, :6], cache, jnp.int32(0), method=model.decode)
  steps = [np.asarray(logits)]
  for t in range(6, 10):
    logits, cache = model.apply({"params": params}, ids[:, t:t + 1], cache, jnp.int32(t), method=model.decode)
    steps.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=2e-6)


def test_classifier_reads_the_last_real_token_and_ignores_padding():
  cfg = LlamaConfig(**CONFIGS["gqa_untied"], max_position_embeddings=32)
  model = registry.make_model("LlamaForSequenceClassification", cfg, num_labels=3)
  params = nn.unbox(registry.init_variables(model, jax.random.key(0), 12)["params"])
  assert set(params) == {"model", "score"} and params["score"]["kernel"].shape == (48, 3)
  ids = ids_for(cfg, batch=2, length=12)
  mask = np.ones_like(ids)
  mask[0, 7:] = 0
  ids[0, 7:] = 1
  out = np.asarray(model.apply({"params": params}, ids, mask, deterministic=True))
  other = ids.copy()
  other[0, 7:] = 9  # different padding content after the last real token: the same logits
  np.testing.assert_array_equal(np.asarray(model.apply({"params": params}, other, mask, deterministic=True))[0],
                                out[0])
  lm = registry.make_model("LlamaForCausalLM", cfg)
  h = lm.apply({"params": {"model": params["model"], "lm_head": {"kernel": np.zeros((48, 97), np.float32)}}},
               ids, deterministic=True, method=lambda m, x, deterministic: m.model(x, deterministic=deterministic)[0])
  np.testing.assert_allclose(out[0], np.asarray(h)[0, 6] @ params["score"]["kernel"], atol=1e-5)


def test_remat_gives_the_same_gradients_and_bf16_compute_stays_close():
  cfg, model, params = build("gqa_untied")
  ids = ids_for(cfg)

  def grads(m):
    loss = lambda p: m.apply({"params": p}, ids, deterministic=True).mean()
    return jax.grad(loss)(params)

  variant = lambda **kw: registry.make_model("LlamaForCausalLM", LlamaConfig(
      **{**CONFIGS["gqa_untied"], "max_position_embeddings": 32, "pad_token_id": 1, **kw}))
  remat = variant(remat=True)
  for a, b in zip(jax.tree.leaves(grads(model)), jax.tree.leaves(grads(remat))):
    np.testing.assert_allclose(a, b, atol=1e-7)
  bf16 = variant(dtype="bfloat16")
  full = np.asarray(model.apply({"params": params}, ids, deterministic=True))
  half = np.asarray(bf16.apply({"params": params}, ids, deterministic=True))
  assert half.dtype == np.float32 and np.abs(half - full).max() < 0.05 * np.abs(full).max() + 0.05
