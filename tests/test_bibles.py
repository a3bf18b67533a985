"""Tests for the bundled verse-aligned Bibles, the verse tasks built from them, and their build scripts."""

import collections
import functools
import gzip
import importlib.util
import json
import os

import pytest

from rewire.data import sources

ROOT = os.path.join(os.path.dirname(sources.__file__))
LANGS = ("en", "es", "ja")


def _module(path, name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@functools.cache
def bible(lang):
  return {v["id"]: v for v in sources.bible_verses(f"bible_{lang}")}


@functools.cache
def task(name, split, lang):
  with gzip.open(os.path.join(ROOT, "bundled_tasks", f"{name}.{split}.{lang}.jsonl.gz"), "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("lang,verses,aligned,first", [
    ("en", 31095, 31095, "In the beginning God created the heavens and the earth."),
    ("es", 31084, 30823, "En el principio crió Dios los cielos y la tierra."),
    ("ja", 31063, 30820, "元始に神天地を創造たまへり")])
def test_bible_files(lang, verses, aligned, first):
  path = sources.bundled_path(f"bible_{lang}")
  with open(path, "rb") as f:
    head = f.read(10)
  assert head[4:8] == b"\0\0\0\0" and os.path.getsize(path) < 1_500_000  # mtime 0; small.
  b = bible(lang)
  ids = list(b)
  assert ids == sorted(ids) and len(ids) == verses
  assert all(len(i) == 8 and 1 <= int(i[:2]) <= 66 and int(i[2:5]) >= 1 and int(i[5:]) >= 1 for i in ids)
  assert sum(v["aligned"] for v in b.values()) == aligned
  assert b["01001001"]["text"] == first
  texts = [v["text"] for v in b.values()]
  assert all(t and t == t.strip() and "  " not in t for t in texts)
  assert not any(mark in t for t in texts for mark in ("<", ">", "{", "}", "&gt;", "[なし]"))
  assert len({i[:2] for i in ids}) == 66 and len({i[:5] for i in ids}) == 1189


def test_spanish_cleaning_and_known_misalignments():
  es, ja = bible("es"), bible("ja")
  assert es["01002001"]["text"].startswith("Y fueron acabados")  # Drop capital "Y FUERON".
  assert es["19023001"]["text"] == "Salmo de David. Jehová es mi pastor; nada me faltará."
  assert es["45016027"]["text"].endswith("Amén.")  # Subscription "Fué escrita de Corinto..." removed.
  # The Spanish module keeps Hebrew splits in Job 39 (its 39:1 is the English 38:39): flagged.
  assert "leoncillos" in es["18039001"]["text"] and not es["18039001"]["aligned"]
  assert es["43003016"]["aligned"] and ja["43003016"]["aligned"]
  assert not ja["64001014"]["aligned"]  # 3 John 1:14 is split in two in the Japanese.


def test_bundled_bible_sources_hold_only_the_old_testament():
  for lang in LANGS:
    docs = sources.load_documents(f"bundled:bible_{lang}")
    assert len(docs) == 929  # Chapters of Genesis..Malachi; the New Testament is held out.
    assert docs[0].startswith(bible(lang)["01001001"]["text"])
  john = bible("es")["43003016"]["text"]
  assert not any(john in d for d in sources.load_documents("bundled:bible_es"))


def test_gale_church_flags_shifts_and_merges():
  build = _module("../../tools/build_bibles.py", "build_bibles")
  lengths = [20 + (37 * v) % 181 for v in range(1, 41)]  # 40 verses of varied length.
  english = {f"01001{v:03d}": "x" * n for v, n in enumerate(lengths, 1)}
  ids = sorted(english)
  assert build.aligned_ids(english, {k: "y" * len(t) for k, t in english.items()}) == set(ids)
  # Verse 16 missing and every later verse moved one id down: only verses 1-15 keep their content.
  shifted = {k: "y" * n for k, n in zip(ids, lengths[:15] + lengths[16:])}
  assert build.aligned_ids(english, shifted) == set(ids[:15])
  merged = {k: "y" * n for k, n in zip(ids, lengths)}
  merged[ids[9]], merged[ids[10]] = "y" * (lengths[9] + lengths[10]), ""  # Verses 10 and 11 in one.
  assert build.aligned_ids(english, merged) == set(ids) - {ids[9], ids[10]}
  assert build.fix_drop_capital("EN el principio") == "En el principio"
  assert build.fix_drop_capital("Y FUERON acabados") == "Y fueron acabados"
  assert build.fix_drop_capital("¿CAZARÁS tú") == "¿Cazarás tú"
  assert build.fix_drop_capital("Salmo de David. JEHOVÁ es", search=True) == "Salmo de David. Jehová es"


def test_nli_task_relations_and_alignment():
  aligned = {i for i, v in bible("es").items() if v["aligned"]} & {
      i for i, v in bible("ja").items() if v["aligned"]}
  chapters = collections.defaultdict(set)
  for split, n in (("train", 6000), ("dev", 600), ("test", 600)):
    rows = task("verse_nli", split, "en")
    assert len(rows) == n and collections.Counter(r["label"] for r in rows) == {
        "entailment": n // 3, "neutral": n // 3, "contradiction": n // 3}
    assert len({r["premise_id"] for r in rows}) == n
    for r in rows:
      p, h = r["premise_id"], r["hypothesis_id"]
      assert (int(p[:2]) > 39) == (split == "test") and (int(h[:2]) > 39) == (split == "test")
      chapters[split].add(p[:5])
      if r["label"] == "entailment":
        assert h == p[:5] + f"{int(p[5:]) + 1:03d}"
      elif r["label"] == "neutral":
        assert h[:5] == p[:5] and abs(int(h[5:]) - int(p[5:])) >= 2
      else:
        assert h[:2] != p[:2]
  assert not chapters["train"] & chapters["dev"]
  test = {lang: task("verse_nli", "test", lang) for lang in LANGS}
  for lang in LANGS:
    assert [(r["premise_id"], r["hypothesis_id"], r["label"]) for r in test[lang]] == [
        (r["premise_id"], r["hypothesis_id"], r["label"]) for r in test["en"]]
    for r in test[lang]:
      assert r["premise_id"] in aligned and r["hypothesis_id"] in aligned
      assert r["premise"] == bible(lang)[r["premise_id"]]["text"]
      assert r["hypothesis"] == bible(lang)[r["hypothesis_id"]]["text"]


def test_qa_task_answers_are_whole_verses_at_exact_offsets():
  positions = collections.Counter()
  for split, lang in [("train", "en"), ("dev", "en")] + [("test", lang) for lang in LANGS]:
    rows = task("verse_qa", split, lang)
    assert len(rows) == {"train": 4000}.get(split, 600)
    for r in rows:
      (answer,), (start,) = r["answers"]["text"], r["answers"]["answer_start"]
      assert r["context"][start:start + len(answer)] == answer == bible(lang)[r["answer_id"]]["text"]
      assert r["context"].count(answer) == 1 and r["question"] not in r["context"]
      assert r["question"] == bible(lang)[r["question_id"]]["text"]
      assert r["answer_id"] == r["question_id"][:5] + f"{int(r['question_id'][5:]) + 1:03d}"
      assert (int(r["answer_id"][:2]) > 39) == (split == "test")
      before = r["context"][:start]
      assert before == "" or before.endswith(" ")
      positions[split, start == 0, start + len(answer) == len(r["context"])] += 1
  # The answer's position among 4-6 verses is uniform over 0-5: first in about 1/6, last in some.
  assert 0.12 < positions["train", True, False] / 4000 < 0.22
  assert 0.1 < sum(n for (s, _, last), n in positions.items() if s == "train" and last) / 4000 < 0.5
  ids = [[r["id"] for r in task("verse_qa", "test", lang)] for lang in LANGS]
  assert ids[0] == ids[1] == ids[2]


def test_build_tasks_reproduces_the_shipped_files(tmp_path):
  _module("../../tools/build_tasks.py", "build_tasks").build(str(tmp_path))
  for name in sorted(os.listdir(tmp_path)):
    with open(tmp_path / name, "rb") as a, open(os.path.join(ROOT, "bundled_tasks", name), "rb") as b:
      assert a.read() == b.read(), name
  assert len(os.listdir(tmp_path)) == 10
