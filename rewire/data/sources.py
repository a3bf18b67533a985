"""Text sources named by one source string: bundled corpora, local files, or Hugging Face `datasets`.

A config names its corpus with a single string, so switching from the bundled demo corpus to local files
or to a hub dataset (CC-100, Wikipedia) is a one-line change:

  bundled:en_web                          the English demo corpus shipped in rewire/data/corpora/
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
  return read_file(bundled_path(name), "text")


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
    raise UserError(f"cannot load {source!r} with datasets.load_dataset: "
                    f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
  if text_field not in ds.column_names:
    raise UserError(f"{source!r} has no field {text_field!r}; its fields: {', '.join(ds.column_names)}")
  return list(ds[text_field])


def _clean(docs: Iterable[object]) -> list[str]:
  return [d.strip() for d in docs if isinstance(d, str) and d.strip()]
