"""The study's machinery: its statistics on known answers, the job runner, and a micro study end to end."""

import functools
import json
import os

import numpy as np
import pytest

from rewire import workdir as rworkdir
from rewire.errors import UserError
from rewire.study.jobs import Job, eta, run_jobs
from rewire.study.report import REPORT_FILES
from rewire.study.statistics import bootstrap_gain


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


def test_study_jobs_have_kinds_that_time_alike(tmp_path):
  from configs.study import get_config
  from rewire.study.graph import build_jobs
  jobs = {j.name: j for j in build_jobs(get_config("micro"), str(tmp_path))}
  assert jobs["data/pretrain"].kind != jobs["standard_s0/pretrain"].kind == jobs["forget_s1/pretrain"].kind
  assert jobs["data/es"].kind == jobs["data/cipher"].kind != jobs["data/pretrain"].kind
  assert {jobs[f"{v}_s0/probe"].kind for v in ("standard", "forget")} == {"probe"}


def test_with_adapt_steps_0_the_probe_tables_go_to_the_zero_shot_test(tmp_path):
  from configs.study import get_config
  from rewire.study.graph import build_jobs
  c = get_config("cpu")
  jobs = {j.name: j for j in build_jobs(c, str(tmp_path))}
  assert c.adapt_steps == 0 and not any(n.endswith(("/adapt", "/adapt_ablation")) for n in jobs)
  assert jobs["forget_s1/probe"].config.save_embeddings
  assert set(jobs["forget_s1/zero_shot"].after) == {"forget_s1/probe", "forget_s1/finetune"}
  assert set(jobs["forget_s0/probe"].after) >= {"forget_s0/pretrain", "data/cipher"}  # new corpora on resume
  probe_languages = jobs["standard_s0/probe"].config.languages
  assert [l.split("=")[0] for l in probe_languages.split(",")] == ["es", "relearned", "cipher"]
  assert jobs["data/cipher"].config.data.source == "cipher:1:bundled:en_web"
  # The forgetting variant alone gets the resets, the clipping and their end (`forget_until`).
  forget, standard = jobs["forget_s1/pretrain"].config, jobs["standard_s1/pretrain"].config
  assert (forget.forget_every, forget.forget.until, forget.optim.clip_norm) == (100, c.forget_until, 0.5)
  assert (standard.forget_every, standard.forget.until, standard.optim.clip_norm) == (0, 0, 0.0)
  assert jobs["data/relearned"].config.data.source == c.pretrain.data.source
  from rewire.study import layout
  assert layout.test_set(c, "cipher") == ("cipher:1:bundled:verse_genre:test", "en")
  assert layout.test_set(c, "relearned") == ("bundled:verse_genre:test", "en")
  assert layout.test_set(c, "es") == ("bundled:verse_genre:test", "es")
  c.adapt_steps = 600  # a separate, longer adaptation: the probe saves nothing
  jobs = {j.name: j for j in build_jobs(c, str(tmp_path))}
  assert not jobs["forget_s1/probe"].config.save_embeddings
  assert set(jobs["forget_s1/zero_shot"].after) == {"forget_s1/adapt", "forget_s1/adapt_ablation", "forget_s1/finetune"}


def _record(order_file, name, workdir, fail=False):
  with open(order_file, "a") as f:
    f.write(name + "\n")
  if fail:
    raise UserError(f"{name} could not finish")
  os.makedirs(workdir, exist_ok=True)
  rworkdir.write_summary(workdir, {"finished": True})


def test_jobs_respect_order_skip_complete_work_and_name_a_failure(tmp_path):
  order = str(tmp_path / "order.txt")
  jobs = [Job(n, None, str(tmp_path / n), after=a, fn=functools.partial(_record, order, n, str(tmp_path / n)))
          for n, a in (("a", ()), ("b", ("a",)), ("c", ("a",)), ("d", ("b", "c")))]
  timings = run_jobs(jobs, workers=2, log_dir=str(tmp_path / "logs"), pin_cores=False, stream=open(os.devnull, "w"))
  ran = open(order).read().split()
  assert sorted(ran) == ["a", "b", "c", "d"] and set(timings) == set(ran)
  assert ran[0] == "a" and ran[-1] == "d"
  assert run_jobs(jobs, workers=2, log_dir=str(tmp_path / "logs"), pin_cores=False,
                  stream=open(os.devnull, "w")) == {}  # all complete: nothing runs again
  bad = [Job("x", None, str(tmp_path / "x"), fn=functools.partial(_record, order, "x", str(tmp_path / "x"), True))]
  with pytest.raises(UserError, match=r"study job x failed \(exit 2\): rewire: error: x could not finish -- see"):
    run_jobs(bad, workers=1, log_dir=str(tmp_path / "logs"), pin_cores=False, stream=open(os.devnull, "w"))
  with pytest.raises(ValueError, match="a cycle"):
    run_jobs([Job("p", None, str(tmp_path / "p"), after=("q",)), Job("q", None, str(tmp_path / "q"), after=("p",))],
             workers=1, log_dir=str(tmp_path / "logs"), pin_cores=False, stream=open(os.devnull, "w"))
  with pytest.raises(ValueError, match="unknown job"):
    run_jobs([Job("y", None, str(tmp_path / "y"), after=("z",))], workers=1, log_dir=str(tmp_path / "logs"),
             pin_cores=False)


def test_micro_study_end_to_end_and_resume(tmp_path):
  from configs.study import get_config
  from rewire.study.graph import run
  c = get_config("micro")
  c.relearn = ""
  c.seeds = (0,)  # one model per variant keeps the test short; the intervals then have zero width
  c.workers, c.pin_cores = 2, False
  c.report_dir = str(tmp_path / "report")
  out = run(c, str(tmp_path / "study"))
  assert sorted(os.listdir(tmp_path / "report")) == sorted(REPORT_FILES)
  root = tmp_path / "study"
  for name in ("study.md", "study.json", "pretraining.png", "adaptation.png", "zero_shot.png", "transfer.png",
               "summary.json"):
    assert os.path.isfile(root / name), name
  stats = json.load(open(root / "study.json"))
  assert stats["pretrain"]["forget"]["resets"] == [3] and stats["pretrain"]["standard"]["resets"] == [0]
  assert set(stats["zero_shot"]["forget"]["8000"]) == set(stats["zero_shot"]["forget"]["4000"]) == {"es"}
  # The controlled language: adapted at every budget, tested on the enciphered English items, as a ratio.
  transfer = stats["transfer"]["cipher"]
  assert set(transfer) == {"4000", "8000"}
  zs = json.load(open(root / "forget_s0" / "zero_shot" / "summary.json"))["results"]
  assert transfer["8000"]["forget"]["ratio"]["mean"] == pytest.approx(
      100 * zs["cipher"]["8000"]["accuracy"] / zs["en"]["full"]["accuracy"])
  assert set(stats["adaptation"]["es"]) == {"4000", "8000"}
  text = open(root / "study.md").read()
  assert "Mean per-language relative gain" in text and "| 4,000 |" in text
  assert "## Controlled languages" in text and "| cipher | 8,000 |" in text
  assert out["headline"]["relative_gain"] == pytest.approx(stats["relative_gain"]["8000"]["mean"])
  # A second invocation finds every job complete and only rewrites the report.
  run(c, str(root))
  timings = [json.loads(l) for l in open(root / "timings.jsonl")]
  assert len(timings) == 2 and timings[1]["jobs_s"] == {}


def _wait_until_killed(fifo):
  import signal
  with open(fifo, "w") as f:
    f.write("started\n")
  signal.pause()


def test_sigterm_stops_the_study_and_its_running_jobs(tmp_path):
  """SIGTERM to the driver (a preempted host) stops the running jobs and exits 143; nothing is complete."""
  import select
  import signal
  import subprocess
  import sys
  fifo = str(tmp_path / "started")
  os.mkfifo(fifo)
  script = (
      "import functools, test_study\n"
      "from rewire.study.jobs import Job, run_jobs\n"
      f"run_jobs([Job('w', None, {str(tmp_path / 'w')!r}, fn=functools.partial(test_study._wait_until_killed, {fifo!r}))],\n"
      f"         workers=1, log_dir={str(tmp_path / 'logs')!r}, pin_cores=False)\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(root, "tests"), root]))
  proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
  fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
  try:
    ready, _, _ = select.select([fd], [], [], 120)  # the job has started (bounded wait, no polling)
    assert ready and os.read(fd, 64) == b"started\n", "the job never started"
  finally:
    os.close(fd)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 143
  assert "SIGTERM: stopping w" in out
  assert not rworkdir.is_complete(str(tmp_path / "w"))


def test_the_decoder_study_presets_build_the_same_graph_with_a_llama_body(tmp_path):
  from configs.study import get_config
  from rewire.config import validate
  from rewire.study.graph import build_jobs
  from rewire.models import registry
  encoder, decoder = get_config("micro"), get_config("micro-llama")
  validate(decoder)
  assert decoder.pretrain.model.family == "llama" and decoder.pretrain.model.num_kv_heads == 1
  names = lambda c: [j.name for j in build_jobs(c, str(tmp_path))]
  assert names(decoder) == names(encoder)
  family = lambda c: registry.run_family(c.pretrain.model)
  assert family(decoder).loss_name == "next-token" and family(encoder).loss_name == "MLM"
  assert family(decoder).describe(decoder.pretrain.model).startswith("Llama decoder (2 query / 1 key-value heads")
  with pytest.raises(UserError, match="unknown preset"):
    get_config("micro-gpt")
