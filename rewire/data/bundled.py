"""The corpora shipped inside the package (rewire/data/corpora/): the English demo corpus and the Bibles.

It is apart from `rewire.data.sources` because the bundled files are a contract of their own: where they
live, which names `bundled:NAME` accepts, and the verse-aligned Bibles' layout (`BBCCCVVV` verse ids,
Old Testament books 01-39). Task builders and tests read the verses directly (`bible_verses`); as a text
source a Bible gives only its Old Testament chapters (`bible_chapters`), because the New Testament is the
test text of the bundled verse_nli / verse_qa / verse_genre tasks (rewire/data/bundled_tasks/).
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import os
from collections.abc import Iterable

from rewire.data.file_formats import read_file
from rewire.errors import UserError

OT_BOOKS = 39  # Books 01-39 of the BBCCCVVV verse ids are the Old Testament, 40-66 the New.
_SUFFIX = ".jsonl.gz"


def _root():
  return importlib.resources.files("rewire") / "data" / "corpora"


def bundled_corpora() -> list[str]:
  """Names of the corpora shipped with rewire (usable as `bundled:NAME`)."""
  return sorted(p.name[:-len(_SUFFIX)] for p in _root().iterdir() if p.name.endswith(_SUFFIX))


def bundled_path(name: str) -> str:
  """The local path of bundled corpus `name`; UserError listing the available ones if unknown."""
  available = bundled_corpora()
  if name not in available:
    raise UserError(f"unknown bundled corpus {name!r}; available: {', '.join(available) or 'none'}")
  return str(_root() / f"{name}{_SUFFIX}")


def read_bundled(name: str, progress: list[int] | None = None) -> Iterable[str]:
  """The documents of bundled corpus `name`: a Bible's Old Testament chapters, else one per record.

  `progress`, if given, is a one-element list that receives the bytes read so far from disk.
  """
  if name.startswith("bible_"):
    if progress is not None:
      progress[0] += os.path.getsize(bundled_path(name))
    return bible_chapters(name)
  return read_file(bundled_path(name), "text", 0, 1, progress)


def bible_verses(name: str) -> list[dict[str, object]]:
  """The verse records `{"id": "BBCCCVVV", "text", "aligned"}` of bundled Bible `name` (e.g. bible_es)."""
  with gzip.open(bundled_path(name), "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def bible_chapters(name: str, books: range = range(1, OT_BOOKS + 1)) -> list[str]:
  """Chapter documents (verses joined by spaces, in id order) of the given books of a bundled Bible.

  The default, the Old Testament only, keeps the New Testament (the bundled tasks' test text) out of
  adaptation and pretraining corpora.
  """
  chapters: dict[str, list[str]] = {}
  for verse in sorted(bible_verses(name), key=lambda v: str(v["id"])):
    vid = str(verse["id"])
    if int(vid[:2]) in books:
      chapters.setdefault(vid[:5], []).append(str(verse["text"]))
  return [" ".join(chapters[key]) for key in sorted(chapters)]
