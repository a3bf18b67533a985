"""What only the Llama family does: output-head resets, next-token loss, its score head, its config keys.

Resets, resume, adaptation and assembly are checked for every family in `test_families.py`."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rewire import optim, sharding
from rewire.workdir import load_params
from rewire.data.tokenizer import SpecialIds
from rewire.errors import UserError
from rewire.stages.pretrain_setup import Setup
from rewire.telemetry import read_records

from conftest import flat, tiny_llama_config

EMB, HEAD = "model/embed_tokens/embedding", "lm_head/kernel"
SPECIALS = SpecialIds.layout(400)


def tokens(step, batch=16, length=32):
  x = np.random.default_rng(step).integers(4, 399, (batch, length)).astype(np.int32)
  x[:, 0], x[::3, 20:] = 0, 1  # <s> first; some rows padded on the right
  return x


def copy(state):
  return jax.tree.map(jnp.copy, state)


def test_a_tied_model_refuses_to_reset_an_output_head_it_does_not_have():
  mesh = sharding.make_mesh(tiny_llama_config().mesh, jax.devices()[:1])
  config = tiny_llama_config(pattern="output")
  config.model.tie_word_embeddings = True
  with pytest.raises(UserError, match="forget.pattern=output .*ties it to the token-embedding matrix"):
    Setup(config, mesh, SPECIALS)


def test_pretraining_resets_every_k_and_records_next_token_loss(family_runs):
  workdir, summary = family_runs("llama", "pretrained")
  assert summary["finished"] and summary["resets"] == [4, 8]
  records = read_records(os.path.join(workdir, "metrics.jsonl"))
  start = records[0]
  assert start["event"] == "start" and 5.0 < start["unigram_loss"] < 6.5  # ln(400) = 6.0: a next-token floor
  assert [r["step"] for r in records if "valid_loss" in r] == [6, 12]
  info = json.load(open(os.path.join(workdir, "model.json")))
  assert info["architecture"] == "LlamaForCausalLM" and info["num_kv_heads"] == 2
  assert sorted(flat(optim.group_state(summary["state"]["opt_state"], "forget")[0].mu)) == [HEAD, EMB]


def test_finetuning_freezes_the_embeddings_and_trains_the_body_and_the_score_head(family_runs):
  (source, _), (workdir, summary) = family_runs("llama", "pretrained"), family_runs("llama", "finetuned")
  before, after = flat(load_params(str(source))[0]), flat(load_params(str(workdir))[0])
  assert set(after) == (set(before) - {HEAD}) | {"score/kernel"}
  np.testing.assert_array_equal(after[EMB], before[EMB])
  assert np.abs(after["model/layers/0/mlp/up_proj/kernel"] - before["model/layers/0/mlp/up_proj/kernel"]).max() > 0
  info = json.load(open(os.path.join(workdir, "model.json")))
  assert info["architecture"] == "LlamaForSequenceClassification" and info["num_labels"] == 2
  assert 0.0 <= summary["best_dev_accuracy"] <= 100.0


def test_runs_written_before_one_family_per_model_group_resume_and_a_family_change_is_refused(tmp_path):
  from rewire.config import pretrain_preset
  from rewire.stages.resume import check_resumed_config
  config = pretrain_preset("tiny", forgetting=True)
  old = json.loads(config.to_json_best_effort())
  # Earlier versions saved both families' keys in one model group; the first ones had no family keys.
  old["model"].update(num_kv_heads=0, head_dim=0, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
  old["forget"]["pattern"] = "roberta/embeddings/word_embeddings/embedding"  # the regex "input" names
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert check_resumed_config(config, str(tmp_path)) == {}
  del old["model"]["family"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert check_resumed_config(config, str(tmp_path)) == {}
  config.model.family = "llama"
  with pytest.raises(UserError, match="model.family 'roberta' -> 'llama'"):
    check_resumed_config(config, str(tmp_path))
