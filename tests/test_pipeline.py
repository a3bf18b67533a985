"""The whole method on micro settings: every stage runs, for the forgetting variant, as steps on Ray started
on this machine (the embedded default), and the report is written; a rerun runs nothing. (A step left RUNNING by a
killed driver is taken over in test_steps.py; a real stage retried after its worker was killed resumes
bit-identically in test_study.py.)"""

import json
import os

import pytest

from rewire.config import pipeline_preset
from rewire.study.pipeline import run

from conftest import finetune_config, shared_tokenizer, tiny_config


def micro_config():
  """The tiny pipeline preset cut down to seconds per stage."""
  c = pipeline_preset("tiny")
  c.pretrain = tiny_config()
  c.pretrain.data.tokenizer = shared_tokenizer()
  c.forget_every = 4
  c.adapt.update(total_steps=6, batch_size=16, log_every=1, eval_every=6, checkpoint_every=6, token_budget=4000)
  c.adapt.data.update(seq_len=32, vocab_size=300, max_valid_sequences=32, max_documents=120)  # a quick tokenizer
  c.finetune = finetune_config("", task="qa")
  c.finetune.update(epochs=1, max_train_examples=48)
  c.evaluate.max_examples = 16
  c.variants = ("forget",)  # the stages are the same for both; a study compares the two (test_study.py)
  return c


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
  """The pipeline on the embedded default: Ray started on this machine, and stopped after the module."""
  from conftest import disconnect_ray
  disconnect_ray()
  root = tmp_path_factory.mktemp("pipeline")
  yield root, run(micro_config(), str(root))
  disconnect_ray()


def test_pipeline_writes_a_report_from_real_runs(pipeline_run):
  root, summary = pipeline_run
  dirs = summary["dirs"]
  for step in ("pretrain", "adapt_es", "finetune_qa", "assembled_qa_es"):
    assert dirs[f"forget/{step}"].startswith(os.path.join(str(root), "forget", step + "-")), step
    assert os.path.exists(os.path.join(dirs[f"forget/{step}"], "model.json")), step
  assert not [name for name in dirs if name.startswith("standard/")]
  resets = json.load(open(os.path.join(dirs["forget/pretrain"], "summary.json")))["resets"]
  assert resets == [4, 8]
  results = json.load(open(os.path.join(root, "results.json")))
  assert set(results["results"]) == {"forget"}
  scores = results["results"]["forget"]["es"]
  assert set(scores) == {"f1", "exact_match"} and 0 <= scores["f1"] <= 100
  report = open(os.path.join(root, "report.md")).read()
  assert "| f1 | es | avg |" in report and "adaptation.png" in report
  assert os.path.getsize(os.path.join(root, "adaptation.png")) > 1000
  assert summary["english"]["forget"] is not None


def test_pipeline_resumes_without_redoing_finished_steps(pipeline_run):
  root, first = pipeline_run
  from rewire.telemetry import read_records
  ft = lambda v: os.path.join(first["dirs"][f"{v}/finetune_qa"], "metrics.jsonl")
  before = len(read_records(ft("forget")))
  again = run(micro_config(), str(root))
  assert again["results"] == first["results"] and again["dirs"] == first["dirs"]
  assert len(read_records(ft("forget"))) == before
