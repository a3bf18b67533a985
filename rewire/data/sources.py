"""Text sources named by one source string: bundled corpora, local files, or Hugging Face `datasets`.

A config names its corpus with a single string, so switching from the bundled demo corpus to local files
or to a hub dataset (CC-100, Wikipedia) is a one-line change:

  bundled:en_web                          the English demo corpus shipped in rewire/data/corpora/
  bundled:bible_<lang>                    Old Testament chapters of a verse-aligned Bible (en, es, ja); the
                                          New Testament is held out: it is the test text of the bundled
                                          verse_nli / verse_qa tasks (rewire/data/tasks/)
  files:PATTERN[,PATTERN...]              local .txt / .jsonl files, each optionally .gz (glob patterns)
  hf:NAME[:CONFIG]:SPLIT                  datasets.load_dataset(NAME, CONFIG, split=SPLIT); NAME may be a
                                          hub name (cc100, wikitext) or a local folder load_dataset reads

Every loader returns a list of non-empty documents (stripped strings) in a deterministic order. Problems
the user can fix (bad string, missing file, missing field, empty corpus) raise `UserError`.
"""

from __future__ import annotations

import glob
import gzip
import importlib.resources
import json
import os
import re
from collections.abc import Iterable

from rewire.errors import UserError

FORMS = "bundled:NAME, files:PATTERN[,PATTERN...] or hf:NAME[:CONFIG]:SPLIT"
_EXTENSIONS = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")
_HF = re.compile(r"^hf:(?P<name>[^:]+)(?::(?P<config>[^:]+))?:(?P<split>[^:\[\]]+(?:\[[^\]]*\])?)$")
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


def load_documents(source: str, *, text_field: str = "text") -> list[str]:
  """Returns the non-empty documents of `source` in a deterministic order.

  Args:
    source: a source string (see the module docstring).
    text_field: the field holding the text in JSONL files and `datasets` rows. Bundled corpora always
      use "text".

  Raises:
    UserError: a malformed source string, missing files, a missing field, or no non-empty document.
  """
  if not isinstance(source, str) or not source.strip():
    raise UserError(f"empty data source {source!r}; expected {FORMS}")
  source = source.strip()
  if source.startswith("bundled:"):
    docs = _bundled(source[len("bundled:"):])
  elif source.startswith("files:"):
    docs = _files(source[len("files:"):], text_field)
  elif source.startswith("hf:"):
    docs = _hf(source, text_field)
  else:
    raise UserError(f"unknown data source {source!r}; expected {FORMS}")
  docs = _clean(docs)
  if not docs:
    raise UserError(f"corpus {source!r} is empty: it holds no non-empty document")
  return docs


def bundled_corpora() -> list[str]:
  """Names of the corpora shipped with rewire (usable as `bundled:NAME`)."""
  root = importlib.resources.files("rewire") / "data" / "corpora"
  suffix = ".jsonl.gz"
  return sorted(p.name[:-len(suffix)] for p in root.iterdir() if p.name.endswith(suffix))


def bundled_path(name: str) -> str:
  """The local path of bundled corpus `name`; UserError listing the available ones if unknown."""
  available = bundled_corpora()
  if name not in available:
    raise UserError(f"unknown bundled corpus {name!r}; available: {', '.join(available) or 'none'}")
  return str(importlib.resources.files("rewire") / "data" / "corpora" / f"{name}.jsonl.gz")


def expand_patterns(spec: str) -> list[str]:
  """Files matched by comma-separated glob patterns, deduplicated and sorted; UserError if none."""
  patterns = [p.strip() for p in spec.split(",") if p.strip()]
  if not patterns:
    raise UserError(f"data source 'files:{spec}' names no file pattern")
  paths: set[str] = set()
  for pattern in patterns:
    matches = [m for m in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(m)]
    if not matches:
      raise UserError(f"no file matches {pattern!r}")
    paths.update(os.path.normpath(m) for m in matches)
  return sorted(paths)


def read_file(path: str, text_field: str = "text") -> list[str]:
  """Documents of one file: .txt splits at blank lines, .jsonl takes `text_field` of each line."""
  if not path.endswith(_EXTENSIONS):
    raise UserError(f"{path}: unsupported file type; expected one of {', '.join(_EXTENSIONS)}")
  try:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
      if path.endswith((".txt", ".txt.gz")):
        return _BLANK_LINES.split(f.read().replace("\r\n", "\n"))
      return list(_jsonl_texts(f, path, text_field))
  except FileNotFoundError as e:
    raise UserError(f"file not found: {path}") from e
  except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, OSError) as e:
    raise UserError(f"{path}: cannot read as UTF-8 text ({type(e).__name__}: {e})") from e


def _jsonl_texts(lines: Iterable[str], path: str, text_field: str) -> Iterable[str]:
  for lineno, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(record, dict) or text_field not in record:
      raise UserError(f"{path}:{lineno}: no field {text_field!r} in this JSON line")
    text = record[text_field]
    if not isinstance(text, str):
      raise UserError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, not a string")
    yield text


def _bundled(name: str) -> list[str]:
  if name.startswith("bible_"):
    return bible_chapters(name)
  return read_file(bundled_path(name), "text")


OT_BOOKS = 39  # Books 01-39 of the BBCCCVVV verse ids are the Old Testament, 40-66 the New.


def bible_verses(name: str) -> list[dict[str, object]]:
  """The verse records `{"id": "BBCCCVVV", "text", "aligned"}` of bundled Bible `name` (e.g. bible_es)."""
  path = bundled_path(name)
  with gzip.open(path, "rt", encoding="utf-8") as f:
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


def _files(spec: str, text_field: str) -> list[str]:
  docs: list[str] = []
  for path in expand_patterns(spec):
    docs.extend(read_file(path, text_field))
  return docs


def _hf(source: str, text_field: str) -> list[str]:
  m = _HF.match(source)
  if not m:
    raise UserError(f"bad data source {source!r}; expected hf:NAME[:CONFIG]:SPLIT, "
                    "e.g. hf:cc100:en:train or hf:wikitext:wikitext-103-raw-v1:train")
  import datasets  # Imported lazily: it is slow to import and only this source needs it.

  name, config, split = m["name"], m["config"], m["split"]
  try:
    ds = datasets.load_dataset(name, config, split=split)
  except Exception as e:  # datasets raises many types (hub, offline, missing config or split).
    raise UserError(hf_load_error(source, e)) from e
  if text_field not in ds.column_names:
    raise UserError(f"{source!r} has no field {text_field!r}; its fields: {', '.join(ds.column_names)}")
  return list(ds[text_field])


def hf_load_error(source: str, e: Exception) -> str:
  """One line for a failed `datasets.load_dataset`, with a way out for script-only hub datasets."""
  first = str(e).splitlines()[0] if str(e) else ""
  hint = ""
  if "scripts are no longer supported" in first:
    # cc100 (statmt/cc100) is one: its config is the language code (hf:cc100:de:train), but datasets>=4
    # cannot run its loading script. Its raw files (data.statmt.org/cc-100/de.txt.xz) work as files:.
    hint = ("; this hub dataset needs a loading script, which datasets>=4 cannot run: use a Parquet "
            "copy of it or download its files and use files:PATTERN")
  return f"cannot load {source!r} with datasets.load_dataset: {type(e).__name__}: {first}{hint}"


def _clean(docs: Iterable[object]) -> list[str]:
  return [d.strip() for d in docs if isinstance(d, str) and d.strip()]
