"""The Llama family through every stage: forgetting resets, adaptation, fine-tuning, assembly, resume."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rewire import forgetting, optim, sharding
from rewire.checkpoint import load_params
from rewire.data.tokenizer import SpecialIds
from rewire.errors import UserError
from rewire.stages.pretrain_setup import Setup
from rewire.telemetry import read_records

from conftest import K, losses, run_tiny, tiny_llama_config

EMB, HEAD = "model/embed_tokens/embedding", "lm_head/kernel"
SPECIALS = SpecialIds(bos=0, pad=1, eos=2, unk=3, mask=399, vocab_size=400)


def flat(params):
  return {optim.path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def tokens(step, batch=16, length=32):
  x = np.random.default_rng(step).integers(4, 399, (batch, length)).astype(np.int32)
  x[:, 0], x[::3, 20:] = 0, 1  # <s> first; some rows padded on the right
  return x


def copy(state):
  return jax.tree.map(jnp.copy, state)


@pytest.mark.parametrize("pattern,reset", [("input", {EMB}), ("output", {HEAD}), ("both", {EMB, HEAD})])
def test_a_reset_resamples_exactly_the_chosen_leaves_and_touches_no_other(pattern, reset):
  """Update K with the reset against update K of the same state with resets switched off (`until`)."""
  mesh = sharding.make_mesh(tiny_llama_config().mesh, jax.devices()[:1])
  config = tiny_llama_config(pattern=pattern)
  with_reset = Setup(config, mesh, SPECIALS)
  other = tiny_llama_config(pattern=pattern)
  other.forget.until = K - 1  # the same optimizer groups, no reset at update K
  without = Setup(other, mesh, SPECIALS)
  state = with_reset.init()
  for s in range(1, K):
    state, _ = with_reset.train_step(state, tokens(s))
  a, m = with_reset.train_step(copy(state), tokens(K))
  b, _ = without.train_step(copy(state), tokens(K))
  assert bool(m["forgot"])
  pa, pb = flat(a["params"]), flat(b["params"])
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), forgetting._SALT), K)
  group = {k: pa[k] for k in sorted(reset)}  # the group's leaves in tree order: lm_head before model
  fresh = forgetting.resample(key, list(group.values()), init_std=0.02, pad_id=None)
  for (name, x), f in zip(group.items(), fresh):
    np.testing.assert_allclose(x, np.asarray(f), atol=1e-7, err_msg=name)
    assert np.abs(x - pb[name]).max() > 1e-3
  for name in set(pa) - reset:
    np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)


def test_a_tied_model_refuses_to_reset_an_output_head_it_does_not_have():
  mesh = sharding.make_mesh(tiny_llama_config().mesh, jax.devices()[:1])
  config = tiny_llama_config(pattern="output")
  config.model.tie_word_embeddings = True
  with pytest.raises(UserError, match="forget.pattern=output .*tie_word_embeddings"):
    Setup(config, mesh, SPECIALS)


def test_pretraining_resets_every_k_and_records_next_token_loss(llama_runs):
  workdir, summary = llama_runs["pretrained"]
  assert summary["finished"] and summary["resets"] == [4, 8]
  records = read_records(os.path.join(workdir, "metrics.jsonl"))
  start = records[0]
  assert start["event"] == "start" and 5.0 < start["unigram_loss"] < 6.5  # ln(400) = 6.0: a next-token floor
  assert [r["step"] for r in records if "valid_loss" in r] == [6, 12]
  info = json.load(open(os.path.join(workdir, "model.json")))
  assert info["architecture"] == "LlamaForCausalLM" and info["num_kv_heads"] == 2
  opt = summary["state"]["opt_state"][-1].inner_states
  assert sorted(flat(opt["forget"].inner_state.inner_state[0].mu)) == [HEAD, EMB]


def test_resume_is_bit_identical(llama_runs, tmp_path):
  workdir, summary = llama_runs["pretrained"]
  config = tiny_llama_config(pattern="both")
  first = run_tiny(config, tmp_path, devices=jax.devices()[:1], stop_after=6)
  assert first["step"] == 6 and not first["finished"]
  resumed = run_tiny(config, tmp_path, devices=jax.devices()[:1])
  a, b = flat(jax.device_get(summary["state"]["params"])), flat(jax.device_get(resumed["state"]["params"]))
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  assert losses(tmp_path) == losses(workdir)


def test_adaptation_relearns_both_vocabulary_matrices_on_a_bit_identical_body(llama_runs):
  (source, _), (workdir, summary) = llama_runs["pretrained"], llama_runs["adapted"]
  before, after = flat(load_params(str(source))[0]), flat(load_params(str(workdir))[0])
  vocab = json.load(open(os.path.join(workdir, "model.json")))["vocab_size"]
  assert set(before) == set(after) and vocab != 400
  assert after[EMB].shape == (vocab, 32) and after[HEAD].shape == (32, vocab)
  for name in set(after) - {EMB, HEAD}:
    np.testing.assert_array_equal(after[name], before[name], err_msg=name)
  opt = summary["state"]["opt_state"][-1].inner_states
  assert jax.tree.leaves(opt["frozen"]) == [] and sorted(flat(opt["train"].inner_state[0].mu)) == [HEAD, EMB]
  curve = [r["valid_loss"] for r in read_records(os.path.join(workdir, "metrics.jsonl")) if "valid_loss" in r]
  assert curve and np.isfinite(curve).all()


def test_finetuning_freezes_the_embeddings_and_trains_the_body_and_the_score_head(llama_runs):
  (source, _), (workdir, summary) = llama_runs["pretrained"], llama_runs["finetuned"]
  before, after = flat(load_params(str(source))[0]), flat(load_params(str(workdir))[0])
  assert set(after) == (set(before) - {HEAD}) | {"score/kernel"}
  np.testing.assert_array_equal(after[EMB], before[EMB])
  assert np.abs(after["model/layers/0/mlp/up_proj/kernel"] - before["model/layers/0/mlp/up_proj/kernel"]).max() > 0
  info = json.load(open(os.path.join(workdir, "model.json")))
  assert info["architecture"] == "LlamaForSequenceClassification" and info["num_labels"] == 2
  assert 0.0 <= summary["best_dev_accuracy"] <= 100.0


def test_assembly_puts_the_new_language_embeddings_under_the_task_body(llama_runs):
  task, adapted, assembled = (llama_runs[k][0] for k in ("finetuned", "adapted", "assembled"))
  t, a, out = (flat(load_params(str(w))[0]) for w in (task, adapted, assembled))
  np.testing.assert_array_equal(out[EMB], a[EMB])
  for name in set(out) - {EMB}:
    np.testing.assert_array_equal(out[name], t[name], err_msg=name)


def test_a_run_written_before_the_family_keys_resumes_and_a_family_change_is_refused(tmp_path):
  from rewire.config import pretrain_preset
  from rewire.stages.resume import check_resumed_config
  config = pretrain_preset("tiny", forgetting=True)
  old = json.loads(config.to_json_best_effort())
  for key in ("family", "num_kv_heads", "head_dim", "rms_norm_eps", "rope_theta", "tie_word_embeddings"):
    del old["model"][key]
  old["forget"]["pattern"] = "roberta/embeddings/word_embeddings/embedding"  # the regex "input" names
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert check_resumed_config(config, str(tmp_path)) == {}
  config.model.family = "llama"
  with pytest.raises(UserError, match="model.family 'roberta' -> 'llama'"):
    check_resumed_config(config, str(tmp_path))
