"""The study's machinery: its statistics on known answers, its graph of steps, and a micro study end to end
on a 2-node localhost cluster with a pretraining step's worker killed, then rerun and changed."""

import contextlib
import json
import os

import numpy as np
import pytest

from rewire import workdir as rworkdir
from rewire.errors import UserError
from rewire.steps.progress import eta
from rewire.study.report import REPORT_FILES
from rewire.study.statistics import bootstrap_gain
from rewire.telemetry import read_records


def test_seed_bootstrap_of_the_gain():
  same = {"standard": {"a": [50.0, 50.0, 50.0]}, "forget": {"a": [60.0, 60.0, 60.0]}}
  g = bootstrap_gain(same, ["a"], resamples=500)
  assert g["mean"] == g["low"] == g["high"] == pytest.approx(20.0)
  spread = {"standard": {"a": [40.0, 50.0, 60.0], "b": [50.0, 50.0, 50.0]},
            "forget": {"a": [50.0, 55.0, 60.0], "b": [45.0, 55.0, 65.0]}}
  g = bootstrap_gain(spread, ["a", "b"], resamples=2000)
  assert g["low"] < g["mean"] < g["high"]
  # Every resample's gain is bounded by the extreme seeds: a = (50 - 60)/60 .. (60 - 40)/40, b = -10% .. +30%.
  assert g["low"] >= np.mean([-100 / 6, -10]) - 1e-9 and g["high"] <= np.mean([50, 30]) + 1e-9
  # Any variant against the baseline, the others left out.
  three = {**same, "weight_decay": {"a": [45.0, 45.0, 45.0]}}
  assert bootstrap_gain(three, ["a"], resamples=100, variant="weight_decay")["mean"] == pytest.approx(-10.0)


def test_eta_counts_down_while_a_job_runs_and_never_sticks_when_it_overruns():
  done = [("pretrain", 100.0)]
  left = [eta(done, [], [("pretrain", e)], workers=1) for e in (0.0, 30.0, 60.0, 89.0)]
  assert left == pytest.approx([100.0, 70.0, 40.0, 11.0])  # expected duration less the elapsed time
  # Past its expected duration a job is taken to be 90% done: the remainder stays positive and grows with it.
  over = [eta(done, [], [("pretrain", e)], workers=1) for e in (100.0, 150.0, 300.0)]
  assert over == pytest.approx([100 / 9, 150 / 9, 300 / 9])
  # ... and the pending jobs of its kind are expected to take as long.
  assert eta(done, ["pretrain"], [("pretrain", 180.0)], workers=1) == pytest.approx(200.0 + 20.0)
  # Two workers share the work, but the longest job bounds it from below.
  assert eta(done, ["pretrain"] * 3, [("pretrain", 40.0)], workers=2) == pytest.approx((300 + 60) / 2)
  assert eta(done, [], [("pretrain", 40.0)], workers=2) == pytest.approx(60.0)
  assert eta([], ["pretrain"], [("pretrain", 5.0)], workers=1) is None  # nothing finished: no estimate


def test_eta_learns_each_kind_from_its_finished_jobs():
  pending = ["pretrain", "probe"]
  first = eta([("pretrain", 100.0)], pending, [], workers=1)
  assert first == pytest.approx(200.0)  # a kind without finished jobs: the mean of all of them
  assert eta([("pretrain", 100.0), ("pretrain", 200.0)], pending, [], workers=1) == pytest.approx(300.0)
  assert eta([("pretrain", 100.0), ("probe", 10.0)], pending, [], workers=1) == pytest.approx(110.0)
  # The bug this guards: a quick data job taken for a pretraining run froze the ETA while pretraining ran.
  data_only = [("prepare pretraining corpus", 20.0)]
  running = [eta(data_only, ["pretrain"] * 2, [("pretrain", e), ("pretrain", e)], workers=2) for e in (60, 120, 240)]
  assert running[0] < running[1] < running[2]


def test_study_jobs_have_kinds_that_time_alike():
  from configs.study import get_config
  from rewire.study.graph import build_steps
  jobs = {j.name: j for j in build_steps(get_config("micro"))}
  assert jobs["data/pretrain"].kind != jobs["standard_s0/pretrain"].kind == jobs["forget_s1/pretrain"].kind
  assert jobs["data/es"].kind == jobs["data/cipher"].kind != jobs["data/pretrain"].kind
  assert {jobs[f"{v}_s0/probe"].kind for v in ("standard", "forget")} == {"probe"}


def test_with_adapt_steps_0_the_probe_tables_go_to_the_zero_shot_test():
  from configs.study import get_config
  from rewire.study.graph import build_steps
  c = get_config("cpu")
  jobs = {j.name: j for j in build_steps(c)}
  assert c.adapt_steps == 0 and not any(n.endswith(("/adapt", "/adapt_ablation")) for n in jobs)
  assert jobs["forget_s1/probe"].config.save_embeddings
  assert set(jobs["forget_s1/zero_shot"].inputs) == {"forget_s1/probe", "forget_s1/finetune"}
  assert set(jobs["forget_s0/probe"].inputs) >= {"forget_s0/pretrain", "data/cipher"}  # it reads their outputs
  probe_languages = jobs["standard_s0/probe"].config.languages
  assert [l.split("=")[0] for l in probe_languages.split(",")] == ["es", "relearned", "cipher"]
  assert jobs["data/cipher"].config.data.source == "cipher:1:bundled:en_web"
  # The forgetting variant alone gets the resets, the clipping and their end (`forget_until`).
  forget, standard = jobs["forget_s1/pretrain"].config, jobs["standard_s1/pretrain"].config
  assert (forget.forget_every, forget.forget.until, forget.optim.clip_norm) == (100, c.forget_until, 0.5)
  assert (standard.forget_every, standard.forget.until, standard.optim.clip_norm) == (0, 0, 0.0)
  assert jobs["data/relearned"].config.data.source == c.pretrain.data.source
  # The weight-decay variant: the standard recipe with the study's weight decay, and nothing else.
  c.variants = ("standard", "forget", "weight_decay")
  decayed = {j.name: j for j in build_steps(c)}["weight_decay_s1/pretrain"].config
  assert (decayed.forget_every, decayed.optim.clip_norm, decayed.optim.weight_decay) == (0, 0.0, c.weight_decay)
  assert standard.optim.weight_decay == c.pretrain.optim.weight_decay == 0.01 != c.weight_decay
  from rewire.config import validate
  for bad, match in ((("forget", "weight_decay"), "'standard' .the baseline."), (("standard", "decay"),
                                                                                  "unknown pretraining variant 'decay'")):
    c.variants = bad
    with pytest.raises(UserError, match=match):
      validate(c)
  c.variants = ("standard", "forget")
  from rewire.study import layout
  assert layout.test_set(c, "cipher") == ("cipher:1:bundled:verse_genre:test", "en")
  assert layout.test_set(c, "relearned") == ("bundled:verse_genre:test", "en")
  assert layout.test_set(c, "es") == ("bundled:verse_genre:test", "es")
  c.adapt_steps = 600  # a separate, longer adaptation: the probe saves nothing
  jobs = {j.name: j for j in build_steps(c)}
  assert not jobs["forget_s1/probe"].config.save_embeddings
  assert set(jobs["forget_s1/zero_shot"].inputs) == {"forget_s1/adapt", "forget_s1/adapt_ablation", "forget_s1/finetune"}


def test_the_decoder_study_presets_build_the_same_graph_with_a_llama_body():
  from configs.study import get_config
  from rewire.config import validate
  from rewire.study.graph import build_steps
  from rewire.models import registry
  encoder, decoder = get_config("micro"), get_config("micro-llama")
  validate(decoder)
  assert decoder.pretrain.model.family == "llama" and decoder.pretrain.model.num_kv_heads == 1
  names = lambda c: [j.name for j in build_steps(c)]
  assert names(decoder) == names(encoder)
  family = lambda c: registry.run_family(c.pretrain.model)
  assert family(decoder).loss_name == "next-token" and family(encoder).loss_name == "MLM"
  assert family(decoder).describe(decoder.pretrain.model).startswith("Llama decoder (2 query / 1 key-value heads")
  with pytest.raises(UserError, match="unknown preset"):
    get_config("micro-gpt")


def micro_config():
  from configs.study import get_config
  c = get_config("micro")
  c.relearn = ""
  c.seeds = (0,)  # one model per variant keeps the test short; the intervals then have zero width
  return c


def killed_once(steps):
  """The study's steps, the Ray worker of `forget_s0/pretrain` killed (`kill -9`) after its checkpoint at
  update 10 on the first attempt (`step_fns.pretrain_killed_once`)."""
  for step in steps:
    if step.name == "forget_s0/pretrain":
      step.entry = "step_fns:pretrain_killed_once"
  return steps


@contextlib.contextmanager
def with_a_killed_pretraining_step():
  from rewire.study import graph as study
  real = study.build_steps
  study.build_steps = lambda config: killed_once(real(config))
  try:
    yield study
  finally:
    study.build_steps = real


@pytest.fixture(scope="module")
def cluster_study(ray_cluster, tmp_path_factory):
  """The micro study sent to a 2-node localhost cluster by `ray_address` (1 CPU per node: one step per node
  at a time); a pretraining step's worker is killed once. (The embedded default, Ray started on this
  machine, runs the pipeline in test_pipeline.py.)"""
  c = micro_config()
  c.ray_address = ray_cluster.address
  c.report_dir = str(tmp_path_factory.mktemp("report"))
  root = tmp_path_factory.mktemp("study")
  with with_a_killed_pretraining_step() as study:
    return c, root, study.run(c, str(root)), study.study_graph(c, str(root))


def test_micro_study_end_to_end_on_two_nodes(cluster_study):
  c, root, out, _ = cluster_study
  assert sorted(os.listdir(c.report_dir)) == sorted(REPORT_FILES)
  for name in ("study.md", "study.json", "pretraining.png", "adaptation.png", "zero_shot.png", "transfer.png",
               "summary.json", "graph.json"):
    assert os.path.isfile(root / name), name
  stats = json.load(open(root / "study.json"))
  assert stats["pretrain"]["forget"]["resets"] == [3] and stats["pretrain"]["standard"]["resets"] == [0]
  index = json.load(open(root / "graph.json"))
  # The standard baseline never resets: no reset event, and no learning rate of the forgetting episodes.
  records = read_records(os.path.join(index["standard_s0/pretrain"]["dir"], "metrics.jsonl"))
  keys = {k for r in records for k in r}
  assert not [r for r in records if r.get("event") == "forget"] and "lr_train" in keys and "lr_forget" not in keys
  assert set(stats["zero_shot"]["forget"]["8000"]) == set(stats["zero_shot"]["forget"]["4000"]) == {"es"}
  # The controlled language: adapted at every budget, tested on the enciphered English items, as a ratio.
  transfer = stats["transfer"]["cipher"]
  assert set(transfer) == {"4000", "8000"}
  assert all(entry["state"] == "SUCCESS" for entry in index.values()) and len(index) == 11
  zs = json.load(open(os.path.join(index["forget_s0/zero_shot"]["dir"], "summary.json")))["results"]
  assert transfer["8000"]["forget"]["ratio"]["mean"] == pytest.approx(
      100 * zs["cipher"]["8000"]["accuracy"] / zs["en"]["full"]["accuracy"])
  assert set(stats["adaptation"]["es"]) == {"4000", "8000"}
  text = open(root / "study.md").read()
  assert "Mean per-language relative gain" in text and "| 4,000 |" in text
  assert "## Controlled languages" in text and "| cipher | 8,000 |" in text
  assert out["headline"]["relative_gain"] == pytest.approx(stats["relative_gain"]["forget"]["8000"]["mean"])


def test_the_killed_pretraining_step_is_retried_resumes_and_ends_bit_identical(cluster_study, tmp_path):
  """Ray retries the step whose worker got the `kill -9`; it resumes from its checkpoint at update 10 (each
  update is logged once) and ends bit-identical to an uninterrupted run of its config, here in-process."""
  from conftest import flat, losses
  from rewire import stages
  from rewire.workdir import load_params
  _, _, _, graph = cluster_study
  name = "forget_s0/pretrain"
  log = open(graph.log(name)).read()
  assert os.path.exists(graph.dirs[name] + ".killed") and log.count(f"[step] {name}") == 2
  assert [s for s, _ in losses(graph.dirs[name])] == [5, 10, 15, 20]  # not restarted: resumed at 10
  with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
    stages.run(graph.config(name), str(tmp_path / "uninterrupted"))
  assert losses(graph.dirs[name]) == losses(tmp_path / "uninterrupted")
  here, there = flat(load_params(graph.dirs[name])[0]), flat(load_params(str(tmp_path / "uninterrupted"))[0])
  assert here.keys() == there.keys() and all(np.array_equal(here[k], there[k]) for k in here)
  first = lambda step: next(l for l in open(graph.log(step)) if l.startswith("[step]")).split(" node ")[1]
  assert first("standard_s0/pretrain") != first(name)  # the two pretraining steps ran side by side, one per node


def test_a_rerun_runs_nothing_and_a_changed_evaluation_key_would_rerun_exactly_its_steps(cluster_study):
  from rewire.steps.graph import RUN, SKIP
  c, root, _, before = cluster_study
  with with_a_killed_pretraining_step() as study:
    study.run(c, str(root))  # every step SUCCESS: only the report is written again
    timings = [json.loads(l) for l in open(root / "timings.jsonl")]
    assert len(timings) == 2 and timings[1]["jobs_s"] == {}
    changed = micro_config()
    changed.evaluate.max_examples = 24  # the zero-shot test alone reads it
    after = study.study_graph(changed, str(root))
  # What a run of the changed study does, step by step (the engine acts on these, and --dry_run prints them).
  actions = {name: after.action(name) for name in after.order}
  rerun = {name for name, act in actions.items() if act != SKIP}
  assert rerun == {f"{v}_s0/zero_shot" for v in ("standard", "forget")}
  assert {actions[name] for name in rerun} == {RUN}
  for name in rerun:  # new directories; the old results stay where they were
    assert after.dirs[name] != before.dirs[name] and rworkdir.read_summary(before.dirs[name]) is not None


def test_sigterm_stops_the_study_and_its_running_steps(ray_cluster, tmp_path):
  """SIGTERM to the driver (a preempted host) stops the running steps and exits 143; nothing is complete."""
  import signal
  import subprocess
  from conftest import _with_tests_on_path
  from rewire.steps import status
  from step_fns import blocked_at, diamond, start_driver_blocked_at
  tmp = str(tmp_path)
  _with_tests_on_path()
  proc = start_driver_blocked_at(tmp, "a", address=ray_cluster.address, stdout=subprocess.PIPE, text=True)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=180)
  assert proc.returncode == 143
  assert "SIGTERM: stopping a" in out
  from rewire.steps.graph import Graph
  record = Graph(diamond(tmp, **blocked_at(tmp, "a")), tmp + "/root").record("a")
  assert record["state"] == status.RUNNING and status.expired(record)  # handed back: a rerun takes it over


def test_the_command_line_dry_run_prints_the_graph_and_runs_nothing(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-m", "rewire.main", "--config=configs/study.py:micro",
                        f"--workdir={tmp_path / 'study'}", "--config.seeds=0,", "--dry_run"],
                       capture_output=True, text=True, cwd=root, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.splitlines()
  assert lines[0].split()[:3] == ["step", "hash", "state"] and len(lines) == 1 + 11  # 3 corpora, 8 model steps
  assert all(line.split()[2:4] == ["PENDING", "run"] for line in lines[1:])
  assert not os.path.exists(tmp_path / "study")


def _fabricated_models(c, accuracy: dict) -> dict:
  """What the steps of study config `c` would have written, per (variant, seed), with zero-shot accuracy
  `accuracy[variant]` at every curve (language, or language/start) and budget, and every other figure the
  same for all variants; a start other than random adds its index to the accuracy."""
  from rewire.config import parse_pairs
  from rewire.study import layout
  budgets = [str(b) for b in c.probe.token_budgets]
  languages = layout.curves(c, [*parse_pairs(c.languages, "languages"), *layout.controlled(c)])
  result = {"steps": [0, 10], "target_loss": 5.0, "unigram_loss": 5.5, "per_seed": {"curves": [[6.0, 4.5]]},
            "final_loss": {"mean": 4.5}}
  return {(v, s): {
      "pretrain": {"valid_loss": 5.0, "unigram_loss": 6.0, "resets": [3] if v == "forget" else []},
      "pretrain_curve": [(0, 6.0), (20, 5.0)],
      "probe": {"results": {l: {b: result for b in budgets} for l in languages}, "token_budgets": budgets},
      "adapt": {l: {b: result for b in budgets} for l in languages},
      "finetune": {"best_dev_accuracy": 80.0},
      "zero_shot": {"en": {"full": {"accuracy": 80.0}}, **{l: {b: {"accuracy": accuracy[v] + _start_bonus(c, l)}
                                                               for b in budgets} for l in languages}}}
          for v in c.variants for s in c.seeds}


def _start_bonus(c, curve):
  from rewire.config.probe import parse_inits
  return float(parse_inits(c.probe.inits).index(curve.split("/")[1])) if "/" in curve else 0.0


def test_with_several_starts_every_result_is_kept_per_language_and_start():
  """probe.inits=random,overlap: curves es/random and es/overlap (accuracy +1 point), a gain per start."""
  from rewire.study import report, statistics
  c = micro_config()
  c.update(seeds=(0, 1), bootstrap=50)
  c.probe.inits = "random,overlap"
  stats, _ = statistics.compute(c, _fabricated_models(c, {"standard": 50.0, "forget": 60.0}))
  assert stats["languages"] == ["es/random", "es/overlap"] and stats["starts"] == ["random", "overlap"]
  assert stats["zero_shot"]["forget"]["8000"]["es/overlap"]["mean"] == pytest.approx(61.0)
  assert stats["relative_gain"]["forget"]["8000"]["mean"] == pytest.approx(20.0)  # the first start's
  assert stats["relative_gain_by_start"]["overlap"]["forget"]["8000"]["mean"] == pytest.approx(100 * 10 / 51)
  assert set(stats["transfer"]["languages"]) == {"cipher/random", "cipher/overlap"}
  stats.update(wall_s=60.0, job_s=120.0, invocations=1)
  text = "\n".join(report.report_lines(c, stats, 95))
  assert "| variant | es/random | es/overlap |" in text and "rows started by overlap" in text


def test_the_study_statistics_and_report_compare_every_variant_with_standard(tmp_path):
  """Three variants, known answers: zero-shot 50% (standard), 60% (forget), 55% (weight decay) everywhere."""
  from rewire.study import report, statistics
  c = micro_config()
  c.update(variants=("standard", "forget", "weight_decay"), seeds=(0, 1), bootstrap=50)
  stats, probes = statistics.compute(c, _fabricated_models(c, {"standard": 50.0, "forget": 60.0,
                                                               "weight_decay": 55.0}))
  assert set(probes) == {"standard", "forget", "weight_decay"}
  for budget in ("4000", "8000"):
    assert stats["relative_gain"]["forget"][budget]["mean"] == pytest.approx(20.0)
    assert stats["relative_gain"]["weight_decay"][budget]["low"] == pytest.approx(10.0)
  assert stats["headline"] == {"variant": "forget", "relative_gain": pytest.approx(20.0),
                               "relative_gain_low": pytest.approx(20.0), "relative_gain_high": pytest.approx(20.0)}
  assert stats["transfer"]["cipher"]["8000"]["difference"]["weight_decay"]["mean"] == pytest.approx(100 * 5 / 80)
  stats.update(wall_s=60.0, job_s=120.0, invocations=1)
  text = "\n".join(report.report_lines(c, stats, 95))
  assert text.startswith("# Plasticity study: forgetting and weight decay against standard pretraining")
  assert "weight decay 0.1 for the weight_decay variant (the others: 0.01)" in text
  assert "| weight_decay | 55.0 |" in text and "| 8,000 | 50.0 | 60.0 | 55.0 | +20.0% [+20.0, +20.0] | +10.0%" in text
  assert "relative gain of weight decay over standard (the paper's statistic): **+10.0% [+10.0, +10.0]**" in text
  assert "| forget - standard | weight_decay - standard |" in text
