"""The plasticity probe: statistics on known answers, stacked tables = tables one by one, the stage end to end."""

import io
import itertools
import json
import math
import os

import jax
import ml_collections
import numpy as np
import pytest

from rewire.probe import stage as probe, stats as probe_stats
from rewire import sharding
from rewire.config import probe_defaults
from rewire.data.tokenizer import SpecialIds
from rewire.errors import UserError
from rewire.models.registry import init_variables
from rewire.models.roberta import RobertaConfig
from rewire.models.roberta_heads import RobertaForMaskedLM
from rewire.probe.stacked import StackedProbe, Table, TableData


# -- statistics ----------------------------------------------------------------------------------------------

def test_mean_ci_is_the_student_t_interval():
  r = probe_stats.mean_ci([1.0, 2.0, 3.0])
  # t(0.975, df=2) = 4.302653; sd = 1; half-width = 4.302653 / sqrt(3)
  assert r["mean"] == 2.0 and r["n"] == 3
  assert r["half_width"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
  assert probe_stats.mean_ci([5.0])["half_width"] == 0.0
  assert probe_stats.mean_ci([1.0, float("nan"), 3.0])["n"] == 2
  assert math.isnan(probe_stats.mean_ci([float("nan")])["mean"])


def test_updates_to_target_interpolates_between_evaluations():
  steps = [0, 10, 20, 30]
  assert probe_stats.updates_to_target(steps, [5.0, 3.0, 1.0, 0.5], 2.0) == pytest.approx(15.0)
  assert probe_stats.updates_to_target(steps, [5.0, 3.0, 1.0, 0.5], 3.0) == pytest.approx(10.0)
  assert probe_stats.updates_to_target(steps, [1.0, 0.9, 0.8, 0.7], 2.0) == 0.0
  assert math.isnan(probe_stats.updates_to_target(steps, [5.0, 4.0, 3.0, 2.5], 2.0))
  # The first crossing counts, even if the curve goes back up.
  assert probe_stats.updates_to_target(steps, [5.0, 1.0, 6.0, 1.0], 3.0) == pytest.approx(5.0)


def test_area_under_curve_is_the_mean_loss_over_updates():
  assert probe_stats.area_under_curve([0, 10, 20], [4.0, 2.0, 2.0]) == pytest.approx(2.5)
  assert probe_stats.area_under_curve([0, 10, 30], [3.0, 3.0, 3.0]) == pytest.approx(3.0)


def _mean_of(group):
  return lambda groups: groups[group].mean(axis=-1)


def test_bootstrap_interval_contains_the_estimate_and_collapses_for_constants():
  r = probe_stats.bootstrap(_mean_of("x"), {"x": [1.0, 2.0, 3.0, 4.0]}, resamples=2000)
  assert r["estimate"] == 2.5 and r["resamples"] == 2000
  assert 1.0 <= r["low"] < 2.5 < r["high"] <= 4.0
  c = probe_stats.bootstrap(_mean_of("x"), {"x": [7.0, 7.0, 7.0]}, resamples=100)
  assert c["estimate"] == c["low"] == c["high"] == 7.0


def test_bootstrap_known_answers():
  # The mean of two seeds {0, 1} resampled is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4: the 95% interval is
  # [0, 1], the 40% one (quantiles 0.3 and 0.7) is the single value 1/2.
  two = {"x": [0.0, 1.0]}
  r = probe_stats.bootstrap(_mean_of("x"), two, resamples=4000, level=0.95)
  assert (r["estimate"], r["low"], r["high"]) == (0.5, 0.0, 1.0)
  r = probe_stats.bootstrap(_mean_of("x"), two, resamples=4000, level=0.4)
  assert r["low"] == r["high"] == 0.5
  # Groups are resampled independently: the difference of two such means is -1 with chance 1/16 (> 2.5%),
  # where shared draws would always give 0.
  diff = lambda g: g["a"].mean(axis=-1) - g["b"].mean(axis=-1)
  r = probe_stats.bootstrap(diff, {"a": [0.0, 1.0], "b": [0.0, 1.0]}, resamples=4000)
  assert (r["estimate"], r["low"], r["high"]) == (0.0, -1.0, 1.0)
  # A resample draws whole seeds (the last axis): rows that agree seed by seed keep agreeing.
  rows = lambda g: (g["x"][:, 0] - g["x"][:, 1]).mean(axis=-1)
  r = probe_stats.bootstrap(rows, {"x": [[1.0, 5.0, 9.0], [1.0, 5.0, 9.0]]}, resamples=500)
  assert r["low"] == r["high"] == 0.0
  # Groups may have different numbers of seeds; the same seed gives the same interval.
  uneven = {"a": [1.0, 2.0, 3.0], "b": [10.0, 30.0]}
  assert probe_stats.bootstrap(diff, uneven, resamples=300, seed=3) == probe_stats.bootstrap(diff, uneven,
                                                                                             resamples=300, seed=3)
  r = probe_stats.bootstrap(diff, uneven, resamples=2000)
  assert r["estimate"] == -18.0 and -29.0 <= r["low"] < -18.0 < r["high"] <= -7.0


def test_summarize_counts_seeds_that_reach_the_target():
  s = probe_stats.summarize([0, 10, 20], np.array([[6.0, 4.0, 3.0], [6.0, 5.0, 4.5]]), 4.0)
  assert s["reached_target"] == 1 and s["updates_to_target"]["mean"] == 10.0
  assert s["final_loss"]["mean"] == pytest.approx(3.75)
  assert s["curve"]["mean"] == [6.0, 4.5, 3.75]


# -- stacked training ----------------------------------------------------------------------------------------

V, L, B = 64, 16, 4
SPECIALS = SpecialIds(bos=0, pad=1, eos=2, unk=3, mask=V - 1, vocab_size=V)


def _body():
  mc = RobertaConfig(vocab_size=V, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                   max_position_embeddings=L + 2, dropout=0.1, attention_dropout=0.1)
  params = init_variables(RobertaForMaskedLM(mc), jax.random.key(0), L)["params"]
  return mc, jax.tree.map(np.asarray, params)


def _data(seed):
  rng = np.random.default_rng(seed)
  train = rng.integers(4, V - 1, size=(24, L)).astype(np.int32)
  train[:, -3:] = SPECIALS.pad  # padded tails, as packed sequences have
  return TableData(train=train, valid=rng.integers(4, V - 1, size=(6, L)).astype(np.int32))


def _probe(mc, num_tables):
  optim_cfg = ml_collections.ConfigDict(dict(lr=1e-2, warmup_steps=2, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01))
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)), jax.devices()[:1])
  return StackedProbe(mc, SPECIALS, seq_len=L, mask_prob=0.15, optim_cfg=optim_cfg, total_steps=6,
                      init_std=0.02, mesh=mesh, num_tables=num_tables)


def test_stacked_tables_give_the_curves_of_tables_run_one_by_one():
  mc, body = _body()
  tables = [Table("aa", 1000, 0), Table("aa", 1000, 1), Table("bb", 1000, 0), Table("bb", 500, 0)]
  data = [_data(0), _data(0), _data(1), _data(2)]
  steps, stacked, finals = _probe(mc, 4).run(body, tables, data, batch_size=B, eval_every=2)
  assert steps == [0, 2, 4, 6] and stacked.shape == (4, 4)
  one = _probe(mc, 1)
  for i, (t, d) in enumerate(zip(tables, data)):
    s, curve, final = one.run(body, [t], [d], batch_size=B, eval_every=2)
    np.testing.assert_allclose(curve[0], stacked[i], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(final[0]["input"], finals[i]["input"], rtol=1e-4, atol=1e-6)
  # The tables differ by seed (fresh samples, batch orders and masks of their own).
  assert not np.allclose(finals[0]["input"], finals[1]["input"])


def test_a_started_table_takes_the_body_s_rows_and_shares_the_random_table_s_draw():
  """A table started by a recipe holds the body's rows where the recipe copies them, a zero padding row
  (RoBERTa), and elsewhere the very draw of the random table of its seed (the start is not in its key)."""
  from rewire.vocab.recipe import Recipe
  import flax.linen as nn
  mc, body = _body()
  from rewire.optim import with_path
  body = nn.unbox(body)  # as a checkpoint holds it
  path = ("roberta", "embeddings", "word_embeddings", "embedding")
  old = np.array(body["roberta"]["embeddings"]["word_embeddings"]["embedding"])
  old[SPECIALS.pad] = 1.0  # a source whose padding row is not zero
  body = with_path(body, path, old)
  p = _probe(mc, 2)
  tables = [Table("aa", 1000, 0), Table("aa", 1000, 0, "overlap")]
  recipe = Recipe.all_drawn("overlap", V, V)
  recipe.copy_from[[5, 9, SPECIALS.pad]] = [7, 9, SPECIALS.pad]
  state = p.started(p._init(jax.numpy.stack([t.key() for t in tables])), body, tables, [None, recipe],
                    covariance_scale=1.0)
  drawn, started = np.asarray(state["tables"]["input"][0]), np.asarray(state["tables"]["input"][1])
  np.testing.assert_array_equal(started[[5, 9]], old[[7, 9]])
  assert not started[SPECIALS.pad].any()
  rest = np.setdiff1d(np.arange(V), [5, 9])
  np.testing.assert_array_equal(started[rest], drawn[rest])


def test_the_body_is_not_changed_by_a_probe():
  mc, body = _body()
  before = jax.tree.map(np.copy, body)
  _probe(mc, 1).run(body, [Table("aa", 1, 0)], [_data(0)], batch_size=B, eval_every=3)
  jax.tree.map(np.testing.assert_array_equal, body, before)


# -- the stage -----------------------------------------------------------------------------------------------

def micro_probe(init_from, **kw):
  c = probe_defaults()
  c.update(init_from=str(init_from), languages="en=bundled:bible_en,es=bundled:bible_es", token_budgets=(3000,),
           seeds=2, total_steps=6, batch_size=8, eval_every=3)
  c.data.update(seq_len=32, vocab_size=300, max_documents=60, max_valid_sequences=16)
  c.update(**kw)
  return c


@pytest.fixture(scope="module")
def probed(tiny_runs, tmp_path_factory):
  """A probe of the tiny run with two starts, random and overlap; its log (in probe.log) on a fake clock that
  moves 16 s at every reading."""
  workdir = tmp_path_factory.mktemp("probe")
  with open(workdir / "probe.log", "w") as log:
    out = probe.run(micro_probe(tiny_runs("one_device")[0], save_embeddings=True, inits="random,overlap"),
                    str(workdir), log_stream=log, clock=itertools.count(0.0, 16.0).__next__)
  return workdir, out


def test_probe_writes_its_report_for_every_language_and_start(probed):
  workdir, out = probed
  for name in ("probe.json", "probe.md", "probe.png", "summary.json"):
    assert os.path.isfile(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, "probe.json")) as f:
    saved = json.load(f)
  assert set(saved["results"]) == {"en/random", "en/overlap", "es/random", "es/overlap"}
  r = saved["results"]["es/random"]["3000"]
  assert r["seeds"] == 2 and r["steps"] == [0, 3, 6] and len(r["per_seed"]["curves"]) == 2
  assert r["target_loss"] == pytest.approx(r["unigram_loss"] - 0.5)
  assert (r["language"], r["init"]) == ("es", "random") and "rows" not in r
  rows = saved["results"]["en/overlap"]["3000"]["rows"]
  assert rows["copied"] > 20 and rows["mixed"] == 0 and sum(rows.values()) == 300
  report = open(os.path.join(workdir, "probe.md")).read()
  assert "| es/random | — |" in report and f"| en/overlap | {rows['copied']} / 0 / {rows['random']} |" in report
  log = (workdir / "probe.log").read_text()
  assert f"[probe] new rows of en/overlap: overlap: {rows['copied']} rows copied" in log
  # Overlap starts English (the body's own language, through another tokenizer) from the body's rows of
  # the shared pieces: its curves begin below random's, seed by seed.
  start = lambda curve: np.asarray(saved["results"][curve]["3000"]["per_seed"]["curves"])[:, 0]
  assert (start("en/overlap") < start("en/random")).all()


def test_saved_probe_embeddings_assemble_into_a_task_model(probed, tiny_runs, tmp_path):
  from rewire.stages.assemble import assemble
  workdir, out = probed
  assert set(out["embeddings"]) == {f"{lang}/{init}/3000/{seed}" for lang in ("en", "es")
                                    for init in ("random", "overlap") for seed in (0, 1)}
  assemble(str(tiny_runs("finetuned_nli")[0]), out["embeddings"]["es/overlap/3000/1"], str(tmp_path / "assembled"))
  assert os.path.isfile(tmp_path / "assembled" / "tokenizer.json")


def test_probe_refuses_a_budget_larger_than_the_corpus(tiny_runs, tmp_path):
  c = micro_probe(tiny_runs("one_device")[0], token_budgets=(10_000_000,))
  with pytest.raises(UserError, match=r"probe language en \(bundled:bible_en\).*token_budget 10000000 exceeds"):
    probe.run(c, str(tmp_path / "p"), log_stream=open(os.devnull, "w"))
  assert not os.path.exists(tmp_path / "p" / "probe.json")


def test_probe_refuses_a_missing_step_and_a_model_without_mlm_head(tiny_runs, tmp_path):
  with pytest.raises(UserError, match="no checkpoint for step 999"):
    probe.run(micro_probe(tiny_runs("one_device")[0], init_step=999), str(tmp_path / "a"))
  with pytest.raises(UserError, match="no LM head"):
    probe.run(micro_probe(tiny_runs("finetuned_nli")[0]), str(tmp_path / "b"))
  with pytest.raises(UserError, match="not NAME=VALUE"):
    probe.run(micro_probe(tiny_runs("one_device")[0], languages="bundled:bible_es"), str(tmp_path / "c"))


def test_probe_every_records_plasticity_and_leaves_the_run_unchanged(tiny_runs, tmp_path):
  from conftest import losses, run_tiny, tiny_config
  c = tiny_config()
  c.probe_every = 6
  c.probe.update(languages="es=bundled:bible_es", token_budgets=(2000,), total_steps=4, batch_size=8, eval_every=2)
  c.probe.data.update(seq_len=32, vocab_size=300, max_valid_sequences=8, max_documents=40)
  out = run_tiny(c, tmp_path / "run", devices=jax.devices()[:1])
  from rewire.telemetry import read_records
  recs = read_records(str(tmp_path / "run" / "plasticity.jsonl"))
  assert [r["step"] for r in recs] == [6, 12]
  assert recs[0]["results"]["es"]["2000"]["steps"] == [0, 2, 4]
  assert os.path.isfile(tmp_path / "run" / "plasticity.png")
  # The probe only reads the body: the run's losses and parameters are those of the same run without it.
  ref_dir, ref = tiny_runs("one_device")
  assert losses(tmp_path / "run") == losses(ref_dir)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(out["state"]["params"]),
               jax.device_get(ref["state"]["params"]))


# -- the papercuts: presets, dropout, the figure, progress ---------------------------------------------------

def test_the_probe_config_takes_the_family_presets():
  from configs.probe import get_config
  from rewire import config as rconfig
  assert get_config("tiny").init_from == "runs/forget"
  assert get_config("tiny-llama").init_from == "runs/forget_llama"  # the decoder quick start's run
  base = get_config("base-llama")
  assert base.token_budgets == (5_000_000,) and base.data.seq_len == 512
  for preset in ("tiny", "tiny-llama", "base", "base-llama"):
    rconfig.validate(get_config(preset))
  with pytest.raises(UserError, match=r"unknown preset 'small'.*'tiny-llama'"):
    get_config("small")


def test_a_probe_keeps_the_body_dropout_unless_it_sets_its_own(probed, tiny_runs):
  from rewire.probe.prober import probed_model_config
  from rewire.workdir import read_model_info
  info = read_model_info(tiny_runs("one_device")[0])
  assert probed[1]["model"] == {"dropout": info["dropout"], "attention_dropout": info["attention_dropout"]}
  info.update(dropout=0.0, attention_dropout=0.0)  # a body pretrained without dropout (a decoder's)
  model = probe_defaults().model
  mc = probed_model_config(info, model)
  assert (mc.dropout, mc.attention_dropout) == (0.0, 0.0)
  model.dropout = 0.2
  mc = probed_model_config(info, model)
  assert (mc.dropout, mc.attention_dropout) == (0.2, 0.0)
  from rewire.config.probe import check_probe
  c = micro_probe("unused")
  c.model.attention_dropout = 1.5
  with pytest.raises(UserError, match=r"model.attention_dropout must be in \[0, 1\), or -1"):
    check_probe(c)
  with pytest.raises(UserError, match="unknown probe inits entry 'fancy'; choose one of random, mean"):
    check_probe(micro_probe("unused", inits="random,fancy"))


def test_the_probe_figure_draws_every_budget():
  import matplotlib.pyplot as plt
  from rewire.probe.report import draw_curves
  curve = lambda b: {"steps": [0, 5, 10], "unigram_loss": 5.5,
                     "curve": {k: [6.0, 5.0, 4.0 + 1e3 / b] for k in ("mean", "low", "high")}}
  runs = {"probe": {"results": {lang: {str(b): curve(b) for b in (1000, 4000, 16000)} for lang in ("en", "es")}}}
  fig = draw_curves(runs, every_budget=True)  # as probe.png is drawn
  assert len(fig.axes) == 2
  for ax in fig.axes:
    lines = [l for l in ax.get_lines() if l.get_label().endswith(" tokens")]
    assert sorted(l.get_label() for l in lines) == ["1,000 tokens", "16,000 tokens", "4,000 tokens"]
    assert len({l.get_linestyle() for l in lines}) == 3
  plt.close(fig)
  fig = draw_curves(runs)  # as the study's adaptation.png: the largest budget only
  assert [l.get_label() for l in fig.axes[0].get_lines()] == ["probe", "unigram"]
  plt.close(fig)


def test_probe_progress_prints_every_30_seconds_between_evaluations():
  now, out = [0.0], io.StringIO()
  lines = probe.ProbeProgress(10, stream=out, clock=lambda: now[0])
  for t in (10.0, 20.0, 30.0, 35.0, 45.0, 55.0, 65.0):
    now[0] = t
    if t == 35.0:
      lines.evaluated(np.array([4.0, 5.0]))  # the evaluation after update 3
    else:
      lines.updated()
  # 30 s after the start, at the evaluation, 30 s after it; the ETA from the updates after the first.
  assert out.getvalue().splitlines() == [
      "[probe] update 3/10 | elapsed 0:00:30 | ETA 0:01:10",
      "[probe] update 3/10: mean valid loss 4.500 | elapsed 0:00:35 | ETA 0:01:27",
      "[probe] update 6/10 | elapsed 0:01:05 | ETA 0:00:44"]


def test_the_probe_stage_prints_progress_by_time(probed):
  log = (probed[0] / "probe.log").read_text().splitlines()
  timed = [l for l in log if l.startswith("[probe] update") and "valid loss" not in l]
  # Its fake clock moves 16 s a reading: a line at update 2 and 5, between the evaluations at 3 and 6.
  assert timed[:2] and timed[0].startswith("[probe] update 2/") and timed[1].startswith("[probe] update 5/")
  assert any(l.startswith("[probe] update 3/") and "mean valid loss" in l for l in log)
