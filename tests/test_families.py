"""Every registered family through the stages, each property checked once per family.

A third family, `toy` (a one-layer bag-of-words MLP masked LM with a classification head), is defined and
registered here alone: nothing under rewire/ names it. Pretraining with resets, a bit-identical resume,
adaptation on a frozen body, fine-tuning with frozen embeddings, assembly and the probe then run on it
exactly as on RoBERTa and Llama, through the `rewire.models.family.Family` interface.
"""

import dataclasses
import itertools
import os
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rewire import forgetting, optim, sharding
from rewire.workdir import load_params
from rewire.config import probe_defaults
from rewire.data.tokenizer import SpecialIds
from rewire.models import registry
from rewire.models.config_base import ConfigBase
from rewire.models.family import Family
from rewire.models.layers import Dense, logical_param
from rewire.models.mlm import MaskedLM, MaskingSpec, unigram_loss
from rewire.stages.pretrain_setup import Setup

from conftest import K, family_config, flat, losses, run_tiny

# -- the toy family --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ToyConfig(ConfigBase):
  family_name = "toy"
  vocab_size: int
  hidden_size: int = 64
  dropout: float = 0.0            # read by the stages' per-run settings; the toy has no dropout
  attention_dropout: float = 0.0
  init_std: float = 0.02
  pad_token_id: int = 1
  dtype: str = "float32"
  remat: bool = False

  def __post_init__(self):
    self.check_common()


class ToyBody(nn.Module):
  """Token embeddings, plus the mean of the row's embeddings as context, through one MLP layer."""
  config: ToyConfig

  @nn.compact
  def __call__(self, ids, mask):
    cfg = self.config
    emb = logical_param(self, "embedding", nn.initializers.normal(cfg.init_std), (cfg.vocab_size, cfg.hidden_size),
                        ("vocab", "embed"))
    x = emb[ids]
    m = mask[..., None].astype(jnp.float32)
    context = (x * m).sum(1, keepdims=True) / jnp.maximum(m.sum(1, keepdims=True), 1.0)
    h = Dense(cfg.hidden_size, cfg.hidden_size, ("embed", "mlp"), ("mlp",), cfg.init_std, name="mlp")(x + context)
    return nn.gelu(h), emb


class ToyForMaskedLM(nn.Module):
  config: ToyConfig

  @nn.compact
  def __call__(self, ids, mask, masked_positions, *, deterministic):
    h, emb = ToyBody(self.config, name="toy")(ids, mask)
    h = jnp.take_along_axis(h, masked_positions[..., None], axis=1)
    return h @ emb.T  # a tied decoder


class ToyForSequenceClassification(nn.Module):
  config: ToyConfig
  num_labels: int

  @nn.compact
  def __call__(self, ids, mask, *, deterministic):
    h, _ = ToyBody(self.config, name="toy")(ids, mask)
    m = mask[..., None].astype(jnp.float32)
    pooled = (h * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    return Dense(self.config.hidden_size, self.num_labels, ("embed", None), (None,), self.config.init_std,
                 name="score")(pooled)


class Toy(Family):
  name = "toy"
  config_cls = ToyConfig
  architectures = {"ToyForMaskedLM": ToyForMaskedLM, "ToyForSequenceClassification": ToyForSequenceClassification}
  lm = "ToyForMaskedLM"
  task_heads = {"classification": "ToyForSequenceClassification"}
  word_embedding = "toy/embedding"
  body = "toy/"
  shape_keys = ("hidden_size",)
  tiny_shape = {"hidden_size": 32}
  loss_name = "toy MLM"

  def init_args(self, architecture, seq_len):
    ids, mask = super().init_args(architecture, seq_len)
    return (ids, mask, jnp.zeros((1, 1), jnp.int32)) if architecture == self.lm else (ids, mask)

  def objective(self, model, specials, *, mask_prob, max_predictions):
    return MaskedLM(model, MaskingSpec(mask_id=specials.mask, pad_id=specials.pad, vocab_size=specials.vocab_size,
                                       mask_prob=mask_prob, max_predictions=max_predictions))

  def baseline_loss(self, counts, valid, specials):
    return unigram_loss(counts, valid, specials.mask)


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
  registry.register(Toy())
  yield
  registry.unregister("toy")


FAMILIES = [*registry.FAMILIES, "toy"]


def vocab_leaves(family):
  fam = registry.family(family)
  return set(fam.resolve("embeddings").split("|")) | ({fam.vocab_bias} if fam.vocab_bias else set())


# -- one test per property, for every family -------------------------------------------------------------


def _reset_cases():
  """Each family resets its input embeddings; a family with an untied output head resets both matrices."""
  for family in FAMILIES:
    untied = family in registry.FAMILIES and registry.family(family).output_head
    yield family, "both" if untied else "input"


@pytest.mark.parametrize("family,pattern", list(_reset_cases()))
def test_a_reset_resamples_exactly_the_chosen_leaves_and_touches_no_other(family, pattern):
  """Update K with the reset against update K of the same state with resets switched off (`until`)."""
  fam = registry.family(family)
  specials = SpecialIds.layout(400)
  config = family_config(family, pattern=pattern)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  with_reset = Setup(config, mesh, specials)
  other = family_config(family, pattern=pattern)
  other.forget.until = K - 1  # the same optimizer groups, no reset at update K
  without = Setup(other, mesh, specials)
  rng = np.random.default_rng(0)
  batches = [rng.integers(4, 399, (16, 32)).astype(np.int32) for _ in range(K)]
  state = with_reset.init()
  for s in range(1, K):
    state, _ = with_reset.train_step(state, batches[s - 1])
  a, metrics = with_reset.train_step(jax.tree.map(jnp.copy, state), batches[-1])
  b, _ = without.train_step(jax.tree.map(jnp.copy, state), batches[-1])
  assert bool(metrics["forgot"])
  pa, pb = flat(a["params"]), flat(b["params"])
  reset = set(fam.resolve(pattern).split("|"))
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), forgetting._SALT), K)
  group = {k: pa[k] for k in sorted(reset)}  # the group's leaves in tree order
  fresh = forgetting.fresh_leaves(key, list(group.values()), init_std=0.02,
                              pad_id=fam.pad_row(fam.word_embedding, specials.pad))
  for (name, x), f in zip(group.items(), fresh):
    np.testing.assert_allclose(x, np.asarray(f), atol=1e-7, err_msg=name)
    assert np.abs(x - pb[name]).max() > 1e-3
  if fam.zero_pad_row:
    assert not np.any(pa[fam.word_embedding][specials.pad])
  for name in set(pa) - reset:
    np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_is_bit_identical(family, family_runs, tmp_path):
  workdir, summary = family_runs(family, "pretrained")
  assert summary["finished"] and summary["resets"] == [4, 8]
  pattern = "both" if registry.family(family).output_head else "input"
  config = family_config(family, pattern=pattern)
  first = run_tiny(config, tmp_path, devices=jax.devices()[:1], stop_after=6)
  assert first["step"] == 6 and not first["finished"]
  resumed = run_tiny(config, tmp_path, devices=jax.devices()[:1])
  a, b = flat(jax.device_get(summary["state"]["params"])), flat(jax.device_get(resumed["state"]["params"]))
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  assert losses(tmp_path) == losses(workdir)


@pytest.mark.parametrize("family", FAMILIES)
def test_adaptation_trains_the_new_vocabulary_matrices_on_a_bit_identical_body(family, family_runs):
  fam = registry.family(family)
  (source, _), (workdir, summary) = family_runs(family, "pretrained"), family_runs(family, "adapted")
  before, after = flat(load_params(str(source))[0]), flat(load_params(str(workdir))[0])
  assert set(before) == set(after)
  vocab = after[fam.word_embedding].shape[0]
  assert vocab != before[fam.word_embedding].shape[0]  # the new language's tokenizer
  for name in set(after) - vocab_leaves(family):
    np.testing.assert_array_equal(after[name], before[name], err_msg=name)
  if fam.vocab_bias:
    assert not np.any(after[fam.vocab_bias])  # re-initialised to 0, then frozen
  trained = set(fam.resolve("embeddings").split("|")) & set(after)
  assert jax.tree.leaves(optim.group_state(summary["state"]["opt_state"], "frozen")) == []
  assert set(flat(optim.group_state(summary["state"]["opt_state"], "train")[0].mu)) == trained


@pytest.mark.parametrize("family", FAMILIES)
def test_finetuning_freezes_the_embeddings_and_assembly_swaps_in_the_new_ones(family, family_runs):
  fam = registry.family(family)
  pre, task, adapted, assembled = (flat(load_params(str(family_runs(family, k)[0]))[0])
                                   for k in ("pretrained", "finetuned", "adapted", "assembled"))
  np.testing.assert_array_equal(task[fam.word_embedding], pre[fam.word_embedding])
  body = [k for k in task if k.startswith(fam.body) and k != fam.word_embedding]
  assert any(not np.array_equal(task[k], pre[k]) for k in body)  # the body trained
  assert set(assembled) == set(task)
  for name, x in assembled.items():
    np.testing.assert_array_equal(x, adapted[fam.word_embedding] if name == fam.word_embedding else task[name],
                                  err_msg=name)


# -- the toy family's proof --------------------------------------------------------------------------------


def test_the_toy_family_is_probed_like_any_other(family_runs, tmp_path):
  from rewire.probe import stage as probe
  c = probe_defaults()
  c.update(init_from=str(family_runs("toy", "pretrained")[0]), languages="en=bundled:bible_en",
           token_budgets=(3000,), seeds=1, total_steps=4, batch_size=8, eval_every=2)
  c.data.update(seq_len=32, vocab_size=300, max_documents=60, max_valid_sequences=16)
  with open(os.devnull, "w") as sink:
    out = probe.run(c, str(tmp_path), log_stream=sink, clock=itertools.count(0.0, 1.0).__next__)
  result = out["results"]["en"]["3000"]
  assert np.isfinite(result["final_loss"]["mean"]) and result["final_loss"]["mean"] < result["unigram_loss"] + 2


def test_no_module_under_rewire_names_the_toy_family_or_branches_on_a_family_name():
  root = pathlib.Path(__file__).resolve().parents[1] / "rewire"
  family_modules = {"roberta.py", "roberta_heads.py", "roberta_family.py", "llama.py", "llama_heads.py",
                    "llama_family.py", "registry.py"}
  named = re.compile(r'"llama"|"roberta"|next_token|\btoy\b', re.IGNORECASE)
  found = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if p.name not in family_modules
           for i, line in enumerate(p.read_text().splitlines(), 1) if named.search(line)]
  assert found == []
