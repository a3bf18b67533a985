"""Builds rewire's bundled demo tasks, `verse_nli`, `verse_qa` and `verse_genre`, from the verse-aligned Bibles.

Why: the paper's recipe fine-tunes on an English task and evaluates zero-shot in other languages on
translations of the same test set (XNLI, MLQA, XQuAD). No such labelled data ships in any package here, so
these synthetic tasks are built from Bible verses, which line up across translations. They are
format-compatible stand-ins (XNLI/MultiNLI and SQuAD/MLQA schemas, and one-text classification), not real
entailment, reading comprehension or genre judgements: see rewire/data/bundled_tasks/README.md.

- verse_nli: {"premise", "hypothesis", "label", "premise_id", "hypothesis_id"}. The premise is a verse;
  the hypothesis is the next verse ("entailment"), another verse of the same chapter at least two verses
  away ("neutral"), or a verse of a different book of the same split ("contradiction").
- verse_qa: {"id", "question", "context", "answers": {"text": [..], "answer_start": [..]}, "question_id",
  "answer_id"}. Take k+1 consecutive verses of a chapter (k = 4, 5 or 6); one of them, not the last, is
  the question and is cut out; the context is the other k joined by single spaces; the answer is the
  verse that followed the question, a whole verse of the context. The question is never in the context,
  and the answer's position in it varies, so it must be found by content (what follows the question).
- verse_genre: {"text", "label", "id"}. One verse of at least MIN_WORDS English words; the label is the
  genre of its book: "narrative" (Genesis-Esther, Matthew-Acts) or "discourse" (Job-Malachi,
  Romans-Revelation). Trained on the Old Testament, tested on the New (a transfer of genre, not of text).

Splits: train and dev in English from disjoint Old Testament chapters (dev: a seeded 10% of the chapters);
test from the New Testament, the same examples (same verse ids) in every language of LANGS, using only
verses whose alignment with English was checked (`"aligned": true` in every Bible). Labels are balanced
exactly; everything is drawn from random.Random(SEED). The New Testament is what `bundled:bible_<lang>`
leaves out, so adapting to a language on that corpus never sees the test text.

Reproduce (from the repository root, after the Bibles exist): python3 tools/build_tasks.py
Outputs: verse_{nli,qa,genre}.{train,dev}.en.jsonl.gz and verse_{nli,qa,genre}.test.<lang>.jsonl.gz, gzip
mtime 0. The verse_genre draws come after all verse_nli/verse_qa draws, so adding it left their train and
dev files unchanged.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Callable

from rewire.data.bundled import OT_BOOKS, bible_verses
from rewire.tasks.names import GENRE_LABELS
from rewire.tasks.names import NLI_LABELS as LABELS

LANGS = ("en", "es", "ja", "uk")
SIZES = {"nli": {"train": 6000, "dev": 600, "test": 600},
         "qa": {"train": 4000, "dev": 600, "test": 600},  # QA contexts are long: 4000 keeps it < 1.3 MB.
         "genre": {"train": 6000, "dev": 600, "test": 1000, "nt_dev": 500, "nt_train": 0}}  # 0: all there are
SEED = 2307  # arXiv 2307.01163.
DEV_FRACTION = 0.1
MIN_WORDS = 5  # verse_genre skips verses shorter than this in English ("Jesus wept.").

Chapter = list[int]  # Verse numbers present (non-empty) in a chapter, ascending.


class Bibles:
  """Verse texts per language and the chapters of the English numbering."""

  def __init__(self, langs: tuple[str, ...] = LANGS):
    self.text: dict[str, dict[str, str]] = {}
    self.aligned: set[str] | None = None
    for lang in langs:
      records = bible_verses(f"bible_{lang}")
      self.text[lang] = {str(r["id"]): str(r["text"]) for r in records}
      ok = {str(r["id"]) for r in records if r.get("aligned")}
      self.aligned = ok if self.aligned is None else self.aligned & ok
    self.chapters: dict[str, Chapter] = {}
    for vid in sorted(self.text["en"]):
      self.chapters.setdefault(vid[:5], []).append(int(vid[5:]))


def vid(chapter: str, verse: int) -> str:
  return f"{chapter}{verse:03d}"


def split_chapters(bibles: Bibles, rng: random.Random) -> dict[str, list[str]]:
  """OT chapters into train/dev (disjoint, seeded); NT chapters are the test pool."""
  ot = [c for c in bibles.chapters if int(c[:2]) <= OT_BOOKS]
  dev = set(rng.sample(ot, round(DEV_FRACTION * len(ot))))
  return {"train": [c for c in ot if c not in dev], "dev": sorted(dev),
          "test": [c for c in bibles.chapters if int(c[:2]) > OT_BOOKS]}


def build_nli(bibles: Bibles, chapters: list[str], ok: Callable[[str], bool], n: int,
              rng: random.Random) -> list[dict[str, str]]:
  """`n` premise/hypothesis id pairs, n/3 per label, each premise used once."""
  usable = {c: [v for v in bibles.chapters[c] if ok(vid(c, v))] for c in chapters}
  pool = [(c, v) for c in chapters for v in usable[c]]
  premises = rng.sample(pool, len(pool))
  en = bibles.text["en"]
  pairs: list[dict[str, str]] = []
  for c, v in premises:
    if len(pairs) == n:
      break
    label = LABELS[len(pairs) % 3]
    if label == "entailment":
      hyp = (c, v + 1) if v + 1 in usable[c] else None
    elif label == "neutral":
      far = [w for w in usable[c] if abs(w - v) >= 2]
      hyp = (c, rng.choice(far)) if far else None
    else:
      while (other := rng.choice(pool))[0][:2] == c[:2]:
        pass
      hyp = other
    if hyp is None or en[vid(*hyp)] == en[vid(c, v)]:
      continue
    pairs.append({"premise_id": vid(c, v), "hypothesis_id": vid(*hyp), "label": label})
  if len(pairs) < n:
    raise RuntimeError(f"only {len(pairs)} NLI pairs of {n} could be built")
  rng.shuffle(pairs)
  return pairs


def build_qa(bibles: Bibles, chapters: list[str], ok: Callable[[str], bool], n: int,
             rng: random.Random, langs: tuple[str, ...]) -> list[dict[str, object]]:
  """`n` (question id, context ids, answer id) triples; each question verse used once."""
  usable = {c: set(v for v in bibles.chapters[c] if ok(vid(c, v))) for c in chapters}
  pool = [(c, v) for c in chapters for v in sorted(usable[c])]
  items: list[dict[str, object]] = []
  for c, q in rng.sample(pool, len(pool)):
    if len(items) == n:
      break
    a = rng.randrange(6)  # Position of the answer among the k context verses, uniform over 0-5.
    k = rng.choice([size for size in (4, 5, 6) if size > a])
    run = list(range(q - a, q + k - a + 1))
    if not all(v in usable[c] for v in run):
      continue
    context_ids = [vid(c, v) for v in run if v != q]
    question_id, answer_id = vid(c, q), vid(c, q + 1)
    texts = {lang: [bibles.text[lang][i] for i in context_ids] for lang in langs}
    if any(_ambiguous(bibles.text[lang][question_id], bibles.text[lang][answer_id], texts[lang])
           for lang in langs):
      continue
    items.append({"question_id": question_id, "answer_id": answer_id, "context_ids": context_ids})
  if len(items) < n:
    raise RuntimeError(f"only {len(items)} QA examples of {n} could be built")
  return items


def genre(verse_id: str) -> str:
  """"narrative" for Genesis-Esther (01-17) and Matthew-Acts (40-44); "discourse" for the other books."""
  book = int(verse_id[:2])
  return GENRE_LABELS[0] if book <= 17 or 40 <= book <= 44 else GENRE_LABELS[1]


def build_genre(bibles: Bibles, chapters: list[str], ok: Callable[[str], bool], n: int,
                rng: random.Random) -> list[dict[str, str]]:
  """`n` distinct verse ids of at least MIN_WORDS English words, n/2 per genre, in shuffled order."""
  en = bibles.text["en"]
  pools: dict[str, list[str]] = {label: [] for label in GENRE_LABELS}
  for c in chapters:
    for v in bibles.chapters[c]:
      if ok(vid(c, v)) and len(en[vid(c, v)].split()) >= MIN_WORDS:
        pools[genre(vid(c, v))].append(vid(c, v))
  if any(len(pool) < n // len(pools) for pool in pools.values()):
    raise RuntimeError(f"too few verses for {n} genre examples: {({k: len(v) for k, v in pools.items()})}")
  items = [{"id": i, "label": label} for label in GENRE_LABELS for i in rng.sample(pools[label], n // len(pools))]
  rng.shuffle(items)
  return items


def genre_records(items: list[dict[str, str]], text: dict[str, str]) -> list[dict[str, str]]:
  return [{"text": text[i["id"]], "label": i["label"], "id": i["id"]} for i in items]


def _ambiguous(question: str, answer: str, context: list[str]) -> bool:
  """True if the answer is not unique in the context, or the question text appears in it."""
  joined = " ".join(context)
  return joined.count(answer) != 1 or question in joined or question == answer


def nli_records(pairs: list[dict[str, str]], text: dict[str, str]) -> list[dict[str, str]]:
  return [{"premise": text[p["premise_id"]], "hypothesis": text[p["hypothesis_id"]], "label": p["label"],
           "premise_id": p["premise_id"], "hypothesis_id": p["hypothesis_id"]} for p in pairs]


def qa_records(items: list[dict[str, object]], text: dict[str, str], split: str) -> list[dict[str, object]]:
  records = []
  for i, item in enumerate(items):
    verses = [text[v] for v in item["context_ids"]]  # type: ignore[union-attr]
    answer_id = str(item["answer_id"])
    start = sum(len(v) + 1 for v in verses[:list(item["context_ids"]).index(answer_id)])  # type: ignore
    context, answer = " ".join(verses), text[answer_id]
    assert context[start:start + len(answer)] == answer, (split, i)
    records.append({"id": f"verse_qa-{split}-{i:05d}", "question": text[str(item["question_id"])],
                    "context": context, "answers": {"text": [answer], "answer_start": [start]},
                    "question_id": item["question_id"], "answer_id": answer_id})
  return records


def write_jsonl_gz(records: list[dict[str, object]], path: str) -> str:
  """Writes gzip'd JSON Lines (level 9, mtime 0, no name); returns the sha256 of the file."""
  payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
  with open(path, "wb") as raw:
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as f:
      f.write(payload)
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def build(out_dir: str, langs: tuple[str, ...] = LANGS) -> None:
  bibles = Bibles(langs)
  rng = random.Random(SEED)
  pools = split_chapters(bibles, rng)
  english = lambda v: True  # noqa: E731  Every English verse present is usable for train/dev.
  aligned = lambda v: v in bibles.aligned  # noqa: E731
  for split in ("train", "dev", "test"):
    ok = aligned if split == "test" else english
    split_langs = langs if split == "test" else ("en",)
    pairs = build_nli(bibles, pools[split], ok, SIZES["nli"][split], rng)
    items = build_qa(bibles, pools[split], ok, SIZES["qa"][split], rng, split_langs)
    for lang in split_langs:
      for task, records in (("nli", nli_records(pairs, bibles.text[lang])),
                            ("qa", qa_records(items, bibles.text[lang], split))):
        path = os.path.join(out_dir, f"verse_{task}.{split}.{lang}.jsonl.gz")
        digest = write_jsonl_gz(records, path)
        print(f"{os.path.basename(path)}: {len(records)} examples, {os.path.getsize(path)} bytes, "
              f"sha256 {digest}")
    positions = Counter(list(i["context_ids"]).index(i["answer_id"]) for i in items)  # type: ignore
    print(f"  {split}: labels {dict(Counter(p['label'] for p in pairs))}; "
          f"QA answer positions {dict(sorted(positions.items()))}")
  held_out: set[str] = set()
  for split in ("train", "dev", "test"):  # After every NLI/QA draw: their files do not depend on this task.
    genres = build_genre(bibles, pools[split], aligned if split == "test" else english, SIZES["genre"][split], rng)
    for lang in langs if split == "test" else ("en",):
      path = os.path.join(out_dir, f"verse_genre.{split}.{lang}.jsonl.gz")
      digest = write_jsonl_gz(genre_records(genres, bibles.text[lang]), path)  # type: ignore[arg-type]
      print(f"{os.path.basename(path)}: {len(genres)} examples, {os.path.getsize(path)} bytes, sha256 {digest}")
    print(f"  {split}: genre labels {dict(Counter(g['label'] for g in genres))}")
    held_out.update(g["id"] for g in genres)
  # After every other draw: in-domain English training for the genre test (verses of the New Testament
  # that are in no test set of this task), so a small body can learn the task the test asks.
  for split in ("nt_dev", "nt_train"):
    free = lambda v: v not in held_out  # noqa: E731
    n = SIZES["genre"][split] or 2 * min(sum(1 for c in pools["test"] for v in bibles.chapters[c]
                                             if free(vid(c, v)) and genre(vid(c, v)) == label
                                             and len(bibles.text["en"][vid(c, v)].split()) >= MIN_WORDS)
                                         for label in GENRE_LABELS)
    genres = build_genre(bibles, pools["test"], free, n, rng)
    held_out.update(g["id"] for g in genres)
    path = os.path.join(out_dir, f"verse_genre.{split}.en.jsonl.gz")
    digest = write_jsonl_gz(genre_records(genres, bibles.text["en"]), path)  # type: ignore[arg-type]
    print(f"{os.path.basename(path)}: {len(genres)} examples, {os.path.getsize(path)} bytes, sha256 {digest}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rewire", "data", "bundled_tasks"))
  build(parser.parse_args().out_dir)


if __name__ == "__main__":
  main()
