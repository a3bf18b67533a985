"""Single-text classification (task "classify"): the bundled verse_genre task, features, spec, fine-tuning."""

import collections
import json
import os

import jax
import numpy as np
import pytest

from rewire import sharding
from rewire.config import pretrain_defaults, tiny_stage_config
from rewire.data.bundled import bible_verses
from rewire.data.sources import load_documents
from rewire.data.tokenizer import train_tokenizer
from rewire.errors import UserError
from rewire.stages.evaluate import evaluate_model
from rewire.stages.finetune import train_and_evaluate
from rewire.tasks import loading, schema
from rewire.tasks.names import GENRE_LABELS
from rewire.tasks.nli import prepare_text_features
from rewire.tasks.spec import make_spec

LANGS = ("en", "es", "ja", "uk")
NARRATIVE_BOOKS = set(range(1, 18)) | set(range(40, 45))  # Genesis-Esther, Matthew-Acts.


@pytest.fixture(scope="module")
def tok():
  return train_tokenizer(load_documents("bundled:en_web")[:100], 1000)


@pytest.fixture(scope="module")
def genre_test():
  return {lang: loading.load_task_split("bundled:verse_genre:test", task="classify", lang=lang) for lang in LANGS}


def test_verse_genre_test_is_the_same_examples_in_every_language(genre_test):
  en = genre_test["en"]
  assert len(en) == 1000 and collections.Counter(e["label"] for e in en) == {"narrative": 500, "discourse": 500}
  aligned = set.intersection(*({v["id"] for v in bible_verses(f"bible_{lang}") if v["aligned"]} for lang in LANGS))
  for lang in LANGS:
    rows = genre_test[lang]
    assert [(e["id"], e["label"]) for e in rows] == [(e["id"], e["label"]) for e in en]
    texts = {v["id"]: v["text"] for v in bible_verses(f"bible_{lang}")}
    assert all(e["text"] == texts[e["id"]] and e["id"] in aligned for e in rows)
  assert len({e["id"] for e in en}) == 1000
  for e in en:
    book = int(e["id"][:2])
    assert book > 39 and e["label"] == ("narrative" if book in NARRATIVE_BOOKS else "discourse")
    assert len(e["text"].split()) >= 5
  assert genre_test["uk"][0]["text"] != en[0]["text"] != genre_test["es"][0]["text"]


def test_verse_genre_train_and_dev_are_balanced_old_testament_chapters():
  chapters = {}
  for split, n in (("train", 6000), ("dev", 600)):
    rows = loading.load_task_split(f"bundled:verse_genre:{split}", task="classify")
    assert len(rows) == n and collections.Counter(e["label"] for e in rows) == {"narrative": n // 2,
                                                                               "discourse": n // 2}
    assert len({e["id"] for e in rows}) == n and all(int(e["id"][:2]) <= 39 for e in rows)
    assert all(e["label"] == ("narrative" if int(e["id"][:2]) <= 17 else "discourse") for e in rows)
    chapters[split] = {e["id"][:5] for e in rows}
  assert not chapters["train"] & chapters["dev"]


def test_verse_genre_in_domain_splits_are_new_testament_verses_outside_every_test_item():
  test = {e["id"] for e in loading.load_task_split("bundled:verse_genre:test", task="classify")}
  seen = set()
  for split, n in (("nt_train", 4824), ("nt_dev", 500)):
    rows = loading.load_task_split(f"bundled:verse_genre:{split}", task="classify")
    ids = {e["id"] for e in rows}
    assert len(rows) == len(ids) == n and not ids & test and not ids & seen
    assert collections.Counter(e["label"] for e in rows) == {"narrative": n // 2, "discourse": n // 2}
    assert all(int(e["id"][:2]) >= 40 and e["label"] == ("narrative" if int(e["id"][:2]) <= 44 else "discourse")
               for e in rows)
    seen |= ids
  with pytest.raises(UserError, match=r"no bundled verse_genre split 'train' in language 'uk'"):
    loading.load_task_split("bundled:verse_genre:train", task="classify", lang="uk")
  with pytest.raises(UserError, match=r"not a classify task; bundled classify data: verse_genre"):
    loading.load_task_split("bundled:verse_nli:test", task="classify")
  with pytest.raises(UserError, match=r"not a nli task; bundled nli data: verse_nli"):
    loading.load_task_split("bundled:verse_genre:test", task="nli")


def test_text_features_encode_one_segment(tok, genre_test):
  for lang in ("en", "uk"):
    batch = genre_test[lang][:8]
    feats = prepare_text_features(batch, tok, max_len=48, label_names=GENRE_LABELS)
    assert feats.input_ids.shape == feats.attention_mask.shape == (8, 48) and feats.input_ids.dtype == np.int32
    assert list(feats.labels) == [GENRE_LABELS.index(e["label"]) for e in batch]
    for r, e in enumerate(batch):
      want = [0, *tok.encode(e["text"], add_special_tokens=False).ids[:46], 2]
      assert list(feats.input_ids[r]) == want + [1] * (48 - len(want))
      assert list(feats.attention_mask[r]) == [1] * len(want) + [0] * (48 - len(want))
      if len(want) < 48:  # The tokenizer's own single-sequence template.
        assert tok.encode(e["text"]).ids == want
  long = prepare_text_features([{"text": "the city of light " * 20, "label": 1}], tok, max_len=5,
                               label_names=GENRE_LABELS)
  assert long.attention_mask.all() and long.input_ids[0, 0] == 0 and long.input_ids[0, -1] == 2
  assert set(long.arrays()) == {"input_ids", "attention_mask", "labels"} and list(long.labels) == [1]


def test_text_feature_errors(tok):
  ok = {"text": "a", "label": "narrative"}
  with pytest.raises(UserError, match=r"classification example 1 has label 'poetry'.*label_names"):
    prepare_text_features([ok, dict(ok, label="poetry")], tok, label_names=GENRE_LABELS)
  with pytest.raises(UserError, match=r"classification example 1 has no 'text' field"):
    prepare_text_features([ok, {"label": 0}], tok, label_names=GENRE_LABELS)
  with pytest.raises(UserError, match="max_len >= 3"):
    prepare_text_features([ok], tok, max_len=2, label_names=GENRE_LABELS)
  with pytest.raises(UserError, match="distinct"):
    prepare_text_features([ok], tok, label_names=["x", "x"])


def test_classify_rows_from_files(tmp_path):
  rows = [{"sentence": "good", "label": 1}, {"text": "bad", "label": "0", "id": 7}, {"text": "?", "label": "-"}]
  (tmp_path / "sst.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  got = loading.load_task_split(f"files:{tmp_path}/sst.jsonl", task="classify")
  assert got == [{"text": "good", "label": 1}, {"text": "bad", "label": 0, "id": "7"}]  # indices kept
  assert schema.classify_example({"text": "t", "label": 1}, "w", ["neg", "pos"], None) == {"text": "t", "label": "pos"}
  (tmp_path / "sst2.jsonl").write_text(json.dumps({"premise": "p", "label": 0}) + "\n")
  with pytest.raises(UserError, match=r"sst2.jsonl:1: missing field 'text' or 'sentence'"):
    loading.load_task_split(f"files:{tmp_path}/sst2.jsonl", task="classify")


def test_classify_spec_is_a_classification_scored_by_accuracy():
  spec = make_spec("classify", label_names=GENRE_LABELS)
  assert (spec.head, spec.num_labels, spec.primary, spec.max_len) == ("classification", 2, "accuracy", 128)
  feats = prepare_text_features([{"text": "a", "label": 0}, {"text": "b", "label": 1}],
                                train_tokenizer(["a b c"], 300), max_len=8, label_names=GENRE_LABELS)
  assert spec.score([], feats, np.asarray([[2.0, 0.0], [3.0, 1.0]])) == {"accuracy": 50.0}
  loss = spec.loss(np.asarray([[0.0, 0.0]]), {"labels": np.asarray([1])})
  assert abs(float(loss) - np.log(2)) < 1e-6


def test_finetune_and_evaluate_classify(tiny_runs, tmp_path):
  pre, _ = tiny_runs("one_device")
  c = tiny_stage_config("finetune_nli")
  c.update(task="classify", label_names=GENRE_LABELS, train_source="bundled:verse_genre:train",
           dev_source="bundled:verse_genre:dev", init_from=str(pre), epochs=1, batch_size=16,
           eval_batch_size=32, log_every=4, max_train_examples=64, max_len=32)
  with open(os.devnull, "w") as sink:
    summary = train_and_evaluate(c, str(tmp_path / "ft"), devices=jax.devices()[:1], log_stream=sink)
  assert summary["task"] == "classify" and 0.0 <= summary["best_dev_accuracy"] <= 100.0
  info = json.load(open(tmp_path / "ft" / "model.json"))
  assert info["task"] == "classify" and info["num_labels"] == 2 and info["label_names"] == list(GENRE_LABELS)
  cfg = pretrain_defaults().mesh
  mesh, rules = sharding.make_mesh(cfg, jax.devices()[:1]), sharding.rules_from_config(cfg.rules)
  scores = evaluate_model(str(tmp_path / "ft"), "bundled:verse_genre:test", "uk", mesh=mesh, rules=rules,
                          batch_size=32, max_examples=64)
  assert set(scores) == {"accuracy"} and 0.0 <= scores["accuracy"] <= 100.0
