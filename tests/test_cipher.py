"""The controlled language (`cipher:SEED:SOURCE`) and the transfer-ratio statistic, on known answers."""

import ml_collections
import pytest

from rewire.data import cipher
from rewire.data.sources import fingerprint, load_documents, plan_units
from rewire.errors import UserError
from rewire.tasks.loading import load_task_split
from rewire.tasks.scoring import transfer_ratio


def test_the_cipher_is_a_bijection_onto_a_disjoint_alphabet_and_its_own_inverse():
  t = cipher.table(5)
  dom = set(cipher.domain())
  images = [t[c] for c in cipher.domain()]
  assert len(set(images)) == len(dom)  # injective on the domain
  assert not dom & set(images)  # no character of the source alphabet survives: no shared surface forms
  assert all(t[t[k]] == k for k in t)  # an involution of the code points it moves: its own inverse
  assert not any(chr(c).isspace() for c in t)  # whitespace is never moved
  text = "In the beginning — «Él dijo» 日本語の文、Привіт!\n\tend"
  assert cipher.decipher(cipher.encipher(text, 5), 5) == text
  assert not set(cipher.encipher(text, 5)) & (set(text) - set(" \n\t"))


def test_the_cipher_is_fixed_by_its_seed():
  text = "the same words in the same order"
  first = cipher.encipher(text, 1)
  cipher.table.cache_clear()
  assert cipher.encipher(text, 1) == first  # drawn afresh from the seed: the same language
  assert cipher.encipher(text, 2) != first
  # The same word gets the same spelling wherever it occurs: a language, not noise.
  words = first.split(" ")
  assert words[1] == words[5] and words[2] != words[6]


def test_a_cipher_source_keeps_documents_and_their_boundaries():
  plain = load_documents("bundled:bible_en")
  coded = load_documents("cipher:3:bundled:bible_en")
  assert len(coded) == len(plain)  # one document for one document, in the same order
  for p, c in zip(plain[:50], coded[:50]):
    assert len(c) == len(p)
    assert [i for i, ch in enumerate(c) if ch.isspace()] == [i for i, ch in enumerate(p) if ch.isspace()]
    assert cipher.decipher(c, 3) == p
  units = plan_units("cipher:3:bundled:bible_en")
  assert [u.cipher for u in units] == [3] and units[0].name == "cipher:3:bible_en"
  assert fingerprint("cipher:3:bundled:bible_en") != fingerprint("bundled:bible_en")
  assert fingerprint("cipher:3:bundled:bible_en") != fingerprint("cipher:4:bundled:bible_en")


@pytest.mark.parametrize("task,name,fields", [("classify", "verse_genre", ("text",)),
                                              ("nli", "verse_nli", ("premise", "hypothesis"))])
def test_a_cipher_test_set_holds_the_same_items_and_labels(task, name, fields):
  plain = load_task_split(f"bundled:{name}:test", task=task, lang="en")
  coded = load_task_split(f"cipher:7:bundled:{name}:test", task=task, lang="en")
  assert len(coded) == len(plain)
  for p, c in zip(plain, coded):
    assert c["label"] == p["label"] and c.get("id") == p.get("id")
    for f in fields:
      assert c[f] != p[f] and cipher.decipher(c[f], 7) == p[f]


def test_a_cipher_qa_set_keeps_its_answers_where_they_were():
  plain = load_task_split("bundled:verse_qa:test", task="qa")
  coded = load_task_split("cipher:7:bundled:verse_qa:test", task="qa")
  for p, c in zip(plain, coded):
    assert c["id"] == p["id"] and c["answers"]["answer_start"] == p["answers"]["answer_start"]
    start, text = c["answers"]["answer_start"][0], c["answers"]["text"][0]
    assert c["context"][start:start + len(text)] == text
    assert cipher.decipher(text, 7) == p["answers"]["text"][0]


@pytest.mark.parametrize("source,match", [("cipher:x:bundled:en_web", "SEED a non-negative integer"),
                                          ("cipher:-1:bundled:en_web", "SEED a non-negative integer"),
                                          ("cipher:1:cipher:2:bundled:en_web", "a cipher of a cipher"),
                                          ("cipher:1:nowhere:x", "unknown data source 'nowhere:x'")])
def test_bad_cipher_sources_are_refused_in_one_line(source, match):
  with pytest.raises(UserError, match=match):
    plan_units(source)


def test_the_transfer_ratio_on_known_answers():
  assert transfer_ratio(40.0, 80.0) == pytest.approx(50.0)
  assert transfer_ratio(80.0, 80.0) == pytest.approx(100.0)
  assert transfer_ratio(65.0, 80.0, chance=50.0) == pytest.approx(50.0)  # half way from chance to the ceiling
  assert transfer_ratio(50.0, 80.0, chance=50.0) == pytest.approx(0.0)
  assert transfer_ratio(45.0, 80.0, chance=50.0) < 0  # below chance reads below zero, not clipped
  with pytest.raises(UserError, match="ceiling above chance"):
    transfer_ratio(50.0, 50.0, chance=50.0)


def _study_config():
  c = ml_collections.ConfigDict({
      "controlled": "relearned={pretrain},cipher=cipher:1:{pretrain}", "bootstrap": 500,
      "variants": ("standard", "forget", "weight_decay"), "probe": {"inits": "random"},
      "pretrain": {"data": {"source": "bundled:en_web"}},
      "finetune": {"task": "classify", "label_names": ("a", "b")}})
  return c


def test_the_study_transfer_statistics_on_known_answers():
  from rewire.study.transfer import compute_transfer, transfer_lines
  zero_shot = {"standard": [60.0, 60.0, 60.0], "forget": [72.0, 68.0, 70.0], "weight_decay": [64.0, 64.0, 64.0]}
  ceiling = {"standard": [80.0, 80.0, 80.0], "forget": [80.0, 80.0, 80.0], "weight_decay": [80.0, 80.0, 80.0]}
  models = {(v, s): {"zero_shot": {"en": {"full": {"accuracy": ceiling[v][s]}},
                                   "cipher": {"400": {"accuracy": zero_shot[v][s]}}}}
            for v in zero_shot for s in range(3)}
  t = compute_transfer(models, _study_config(), [0, 1, 2], ["100", "400"], 0.95)
  assert t["sources"] == {"relearned": "bundled:en_web", "cipher": "cipher:1:bundled:en_web"}
  assert t["relearned"] == {} and set(t["cipher"]) == {"400"}  # only what was evaluated at every seed
  r = t["cipher"]["400"]
  assert r["standard"]["ratio"]["mean"] == pytest.approx(75.0) and r["standard"]["ratio"]["half_width"] == 0
  assert r["forget"]["ratio"]["mean"] == pytest.approx(87.5) and r["forget"]["ratio"]["half_width"] > 0
  assert r["standard"]["ratio_above_chance"]["mean"] == pytest.approx(100 * 10 / 30)
  assert r["forget"]["ratio_above_chance"]["mean"] == pytest.approx(100 * 20 / 30)
  d = r["difference"]["forget"]
  assert d["mean"] == pytest.approx(12.5)
  # Each variant is compared with standard: weight decay's 80% ratio is 5 points above, at every resample.
  assert r["difference"]["weight_decay"]["low"] == r["difference"]["weight_decay"]["high"] == pytest.approx(5.0)
  # Every resample's difference lies between the extreme forget seeds (85 and 90) less the standard 75.
  assert 10.0 - 1e-9 <= d["low"] <= d["mean"] <= d["high"] <= 15.0 + 1e-9
  models[("forget", 2)]["zero_shot"]["en"]["full"]["accuracy"] = 45.0  # a task model below chance
  low = compute_transfer(models, _study_config(), [0, 1, 2], ["400"], 0.95)["cipher"]["400"]["forget"]
  assert low["ratio_above_chance"]["n"] == 2 and low["ratio"]["n"] == 3  # undefined there, not an error
  text = "\n".join(transfer_lines(t, 600, 95))
  assert "| cipher | 400 | 60.0 | 70.0 ± 5.0 | 64.0 | 75.0 | 87.5 ± 6.2 | 80.0 | +12.5 [" in text
  assert "| forget - standard | weight_decay - standard |" in text and "relearned |" not in text
