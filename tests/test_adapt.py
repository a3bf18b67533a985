"""Language adaptation: a new tokenizer and new embeddings on a frozen pretrained body."""

import os

import jax
import numpy as np
import pytest

from rewire.data.tokenizer import SpecialIds
from rewire.errors import UserError
from rewire.telemetry import read_records
from rewire.stages.pretrain_setup import Setup
from rewire.stages.pretrain import train_and_evaluate
from rewire import sharding

from conftest import adapt_config, new_language_corpus

EMB = "roberta/embeddings/word_embeddings/embedding"


@pytest.fixture(scope="module")
def new_language(tmp_path_factory):
  return new_language_corpus(tmp_path_factory.mktemp("lang"))


@pytest.fixture(scope="module")
def adapted(tiny_runs):
  source, _ = tiny_runs("one_device")
  workdir, summary = tiny_runs("adapted")
  return source, workdir, summary


def test_adaptation_curve_is_recorded_and_falls(adapted):
  _, workdir, summary = adapted
  records = read_records(os.path.join(workdir, "metrics.jsonl"))
  losses = [r["loss"] for r in records if "loss" in r and "event" not in r]
  assert len(losses) == 8 and losses[-1] < losses[0]
  assert not [r for r in records if r.get("event") == "forget"]
  start = records[0]
  assert start["event"] == "start" and start["train_tokens"] <= 6000 + 32


def test_embedding_only_step_computes_no_body_weight_gradient(adapted, new_language):
  source, _, _ = adapted
  c = adapt_config(source, new_language)
  from rewire.stages.warm_start import adopt_model_shape
  adopt_model_shape(c)
  mesh = sharding.make_mesh(c.mesh, jax.devices()[:1])
  specials = SpecialIds.layout(300)
  h, f = c.model.hidden_size, c.model.intermediate_size

  def weight_grad_shapes(cfg):
    setup = Setup(cfg, mesh, specials)
    tokens = jax.ShapeDtypeStruct((cfg.batch_size, cfg.data.seq_len), np.int32)
    jaxpr = jax.make_jaxpr(setup.train_step)(setup.abstract_state, tokens)
    shapes = []

    def visit(jx):
      for eqn in jx.eqns:
        if eqn.primitive.name == "dot_general":
          shapes.append(tuple(eqn.outvars[0].aval.shape))
        for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else []:
          visit(sub)
        for p in eqn.params.values():
          if hasattr(p, "jaxpr"):
            visit(p.jaxpr if hasattr(p.jaxpr, "eqns") else p.jaxpr.jaxpr)
    visit(jaxpr.jaxpr)
    return shapes

  body_weight_shapes = {(h, f), (f, h), (h, h)}
  adapt_shapes = weight_grad_shapes(c)
  assert not body_weight_shapes & set(adapt_shapes), adapt_shapes
  full = adapt_config(source, new_language)
  adopt_model_shape(full)
  full.optim.rules = ((".*", "train"),)
  assert body_weight_shapes <= set(weight_grad_shapes(full))  # the check can see weight gradients


def test_adaptation_needs_a_pretrained_model_and_a_corpus(tmp_path, new_language):
  c = adapt_config("", new_language)
  with pytest.raises(UserError, match="needs init_from"):
    train_and_evaluate(c, str(tmp_path / "a"))
  c = adapt_config(tmp_path / "nowhere", new_language)
  with pytest.raises(UserError, match="does not exist"):
    train_and_evaluate(c, str(tmp_path / "b"))
  empty = tmp_path / "empty.txt"
  empty.write_text("\n")
  (tmp_path / "src").mkdir()
  c = adapt_config(tmp_path / "src", empty)
  with pytest.raises(UserError):
    train_and_evaluate(c, str(tmp_path / "c"))
  assert not (tmp_path / "c").exists() or not os.listdir(tmp_path / "c")


def test_warm_start_names_missing_and_mismatched_parameters(tiny_runs, new_language, tmp_path):
  source, _ = tiny_runs("one_device")
  c = adapt_config(source, new_language)
  c.reinit.pattern = ""  # keep the 400-row source embedding for a 300-entry tokenizer
  with pytest.raises(UserError, match=r"mismatched shapes .*word_embeddings/embedding \(400, 32\) vs \(\d+, 32\)"
                                      r".*reinit\.pattern"):
    train_and_evaluate(c, str(tmp_path / "a"), devices=jax.devices()[:1])
  c = adapt_config(source, new_language)
  c.model.num_layers = 2  # the source has one layer: layer 1 is missing
  from rewire.stages.warm_start import adopt_model_shape, initial_params
  adopt_model_shape(c)
  c.model.num_layers = 2
  mesh = sharding.make_mesh(c.mesh, jax.devices()[:1])
  setup = Setup(c, mesh, SpecialIds.layout(300))
  with pytest.raises(UserError, match=r"lacks \d+ parameter\(s\) the model needs: roberta/encoder/layer/1/"):
    initial_params(c, setup.abstract_state["params"], pad_id=1)
