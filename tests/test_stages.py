"""Task adaptation, assembly and zero-shot evaluation on tiny models."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from rewire.stages.assemble import assemble
from rewire.workdir import load_params
from rewire.errors import UserError
from rewire.stages.evaluate import evaluate_model, results_table, write_results
from rewire.telemetry import read_records
from rewire import sharding
from rewire.config import pretrain_defaults

from conftest import flat

EMB = "roberta/embeddings/word_embeddings/embedding"


@pytest.fixture(scope="module")
def mesh_rules():
  cfg = pretrain_defaults().mesh
  return sharding.make_mesh(cfg, jax.devices()[:1]), sharding.rules_from_config(cfg.rules)


def test_finetuning_keeps_embeddings_frozen_and_selects_the_best_epoch(tiny_runs):
  pre, _ = tiny_runs("one_device")
  ft, summary = tiny_runs("finetuned_nli")
  before, after = flat(load_params(str(pre))[0]), flat(load_params(str(ft))[0])
  np.testing.assert_array_equal(after[EMB], before[EMB])
  assert "lm_head/bias" not in after and "classifier/out_proj/kernel" in after
  changed = [k for k in after if k in before and k != EMB and not np.array_equal(after[k], before[k])]
  assert "roberta/encoder/layer/0/output/dense/kernel" in changed
  info = json.load(open(os.path.join(ft, "model.json")))
  assert info["architecture"] == "RobertaForSequenceClassification" and info["num_labels"] == 3
  curve = [r for r in read_records(os.path.join(ft, "metrics.jsonl")) if "dev_accuracy" in r and "event" not in r]
  assert len(curve) == 2
  best = max(curve, key=lambda r: r["dev_accuracy"])
  assert summary["best_step"] == best["step"] and summary["best_dev_accuracy"] == best["dev_accuracy"]
  assert load_params(str(ft))[1] == best["step"]  # the kept checkpoint is the best epoch's
  opt = summary["state"]["opt_state"][-1].inner_states
  assert jax.tree.leaves(opt["frozen"]) == []


@pytest.fixture(scope="module")
def assembled(tiny_runs):
  return tiny_runs("finetuned_nli")[0], tiny_runs("adapted")[0], tiny_runs("assembled")[0]


def test_assembly_rejects_mismatches(assembled, tiny_runs, tmp_path):
  ft, ad, _ = assembled
  bad = tmp_path / "bad_vocab"
  shutil.copytree(ad, bad)
  shutil.copyfile(os.path.join(tiny_runs("one_device")[0], "tokenizer.json"), bad / "tokenizer.json")
  with pytest.raises(UserError, match=r"vocabulary mismatch: .* has 400 entries but the embedding .* has \d+ rows"):
    assemble(str(ft), str(bad), str(tmp_path / "out1"))
  wide = tmp_path / "bad_hidden"
  shutil.copytree(ad, wide)
  info = json.load(open(wide / "model.json"))
  info["hidden_size"] = 64
  json.dump(info, open(wide / "model.json", "w"))
  with pytest.raises(UserError, match="hidden size mismatch"):
    assemble(str(ft), str(wide), str(tmp_path / "out2"))
  with pytest.raises(UserError, match="not a task model"):
    assemble(str(ad), str(ad), str(tmp_path / "out3"))
  assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


def test_zero_shot_evaluation_scores_each_language(assembled, mesh_rules, tmp_path):
  _, _, out = assembled
  mesh, rules = mesh_rules
  scores = evaluate_model(str(out), "bundled:verse_nli:test", "es", mesh=mesh, rules=rules, batch_size=32,
                          max_examples=64)
  assert set(scores) == {"accuracy"} and 0.0 <= scores["accuracy"] <= 100.0
  bad = tmp_path / "test.jsonl"
  rows = [{"premise": "a b", "hypothesis": "c d", "label": "entailment"},
          {"premise": "e f", "hypothesis": "g h", "label": "unrelated"}]
  bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  with pytest.raises(UserError, match="unrelated"):
    evaluate_model(str(out), f"files:{bad}", "es", mesh=mesh, rules=rules)


def test_results_table_and_headline_statistic(tmp_path):
  results = {"standard": {"de": {"f1": 50.0}, "ar": {"f1": 20.0}},
             "forget": {"de": {"f1": 60.0}, "ar": {"f1": 40.0}}}
  summary = write_results(results, str(tmp_path))
  assert summary["relative_gain"]["f1"] == pytest.approx(60.0)  # mean(+20%, +100%)
  assert summary["average"]["forget"]["f1"] == pytest.approx(50.0)
  table = open(tmp_path / "results.md").read()
  assert "| relative gain (%) | +100.0 | +20.0 | +60.0 |" in table
  assert "| forget | 40.0 | 60.0 | 50.0 |" in table
  assert json.load(open(tmp_path / "results.json"))["relative_gain"]["f1"] == pytest.approx(60.0)
  assert results_table(results, "f1").splitlines()[0] == "| f1 | ar | de | avg |"
