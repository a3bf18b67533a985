"""Task examples (NLI, extractive QA, classification) from the hub, TFDS, local files or the bundled tasks.

Fine-tuning and zero-shot evaluation read their data through one call, so a config switches between the
bundled demo tasks and the paper's benchmarks by changing one source string:

  hf:NAME[:CONFIG]:SPLIT        datasets.load_dataset(NAME, CONFIG, split=SPLIT): hf:multi_nli:train,
                                hf:multi_nli:validation_matched, hf:xnli:de:test, hf:squad:validation,
                                hf:mlqa:mlqa.de.de:test, hf:xquad:xquad.de:validation; NAME may be a local
                                folder that load_dataset reads
  tfds:NAME[:CONFIG]:SPLIT      tfds.data_source(NAME[/CONFIG], split=SPLIT, data_dir=data_dir), array_record,
                                no TensorFlow: tfds:xnli:test, tfds:multi_nli:validation_matched,
                                tfds:squad:v1.1:validation, tfds:xquad:de:test, tfds:mlqa:de:test
  files:PATTERN[,PATTERN...]    local .jsonl(.gz), .json (SQuAD/MLQA nesting or a list of records), .tsv(.gz)
                                with a header row, .parquet
  bundled:verse_nli:SPLIT       the bundled synthetic tasks (rewire/data/bundled_tasks/README.md): train and dev in
  bundled:verse_qa:SPLIT        English, test in every shipped language (`lang`, default en); verse_genre is
  bundled:verse_genre:SPLIT     task "classify" (labels GENRE_LABELS), the others nli and qa
  cipher:SEED:SOURCE            SOURCE's examples in a controlled new language: the same items and labels,
                                their text enciphered (`rewire.data.cipher`, as the text source of that name)

Canonical examples: nli -> {"premise", "hypothesis", "label"} with the label as a name string;
classify -> {"text", "label"} (plus "id" if the row has one), the label a name string, or the class index
where the source names no classes; qa -> {"id", "question", "context", "answers": {"text": [...],
"answer_start": [...]}}. Field names accepted for classify: text or sentence, label.

Field names accepted for NLI: premise or sentence1, hypothesis or sentence2, label or gold_label (XNLI and
MultiNLI .tsv files). Integer labels are mapped through the dataset's ClassLabel names (hub, TFDS, Parquet
written by `datasets`) or else the XNLI order entailment/neutral/contradiction; -1 and "-" (no gold label)
are dropped. Multilingual rows (XNLI's all_languages config, TFDS xnli) give the text of `lang`
(default en), and rows with a language/lang field are kept only when it equals `lang` (if given), so the
15-language xnli.test.tsv works as it is. QA answers may be nested (`answers`, also as a JSON string in a
.tsv) or flat (`answer_text` + `answer_start`). Errors name the file and line (1-based) or the row
(0-based index) and the field.

CC-100 for pretraining text goes through `rewire.data.sources` instead; its hub configs are language
codes (hf:cc100:de:train), but it needs a loading script, which datasets>=4 refuses: see
`sources.hf_load_error` and `configs/prepare.py:cc100`.
"""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rewire.data import cipher, sources
from rewire.errors import UserError

from rewire.tasks.names import TASKS
from rewire.tasks.schema import (LABEL_FIELDS, classify_example, enciphered, label_name, nli_example, plain,
                                 qa_example, same_language)
FORMS = ("hf:NAME[:CONFIG]:SPLIT, tfds:NAME[:CONFIG]:SPLIT, files:PATTERN[,PATTERN...], bundled:TASK:SPLIT or "
         "cipher:SEED:SOURCE")
_TFDS = re.compile(r"^tfds:(?P<name>[^:]+)(?::(?P<config>[^:]+))?:(?P<split>[^:\[\]]+(?:\[[^\]]*\])?)$")
_BUNDLED = re.compile(r"^bundled:(?P<name>[^:]+):(?P<split>[^:]+)$")
_FILE_TYPES = (".jsonl", ".jsonl.gz", ".json", ".tsv", ".tsv.gz", ".parquet")
BUNDLED_TASKS = {"verse_nli": "nli", "verse_qa": "qa", "verse_genre": "classify"}  # bundled name -> task

Rows = Iterable[tuple[str, Mapping[str, Any]]]  # (where, row): where is "path:line" or "source row i".


def load_task_split(source: str, *, task: str, lang: str | None = None,
                    data_dir: str | None = None) -> list[dict[str, Any]]:
  """Examples of one split in the canonical schema of `task` ("nli", "qa" or "classify"), in source order.

  Args:
    source: a source string (see the module docstring).
    task: "nli", "qa" or "classify".
    lang: the language to keep or pick (multilingual rows, language columns, bundled test files).
    data_dir: TFDS data directory for tfds: sources (default: TFDS's own, e.g. $TFDS_DATA_DIR).

  Raises:
    UserError: a bad source string or task, an unreadable source, a record without a required field
      (naming file and line or row), a label that cannot be mapped, or an empty split.
  """
  if task not in TASKS:
    raise UserError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
  if not isinstance(source, str) or not source.strip():
    raise UserError(f"empty task data source {source!r}; expected {FORMS}")
  source = source.strip()
  ciphered = cipher.parse(source)
  if ciphered:
    seed, inner = ciphered
    return [enciphered(e, task, seed) for e in load_task_split(inner, task=task, lang=lang, data_dir=data_dir)]
  names: Sequence[str] | None = None
  if source.startswith("bundled:"):
    rows = _bundled(source, task, lang)
  elif source.startswith("files:"):
    rows = _files(source[len("files:"):])
  elif source.startswith("hf:"):
    rows, names = _hf(source)
  elif source.startswith("tfds:"):
    rows, names = _tfds(source, data_dir)
  else:
    raise UserError(f"unknown task data source {source!r}; expected {FORMS}")
  examples = []
  for where, row in rows:
    if isinstance(row, Mapping) and lang and not same_language(row, lang):
      continue
    if task == "nli":
      example = nli_example(row, where, names, lang)
    elif task == "classify":
      example = classify_example(row, where, names, lang)
    else:
      example = qa_example(row, where, lang)
    if example is not None:
      examples.append(example)
  if not examples:
    kept = f" for language {lang!r}" if lang else ""
    raise UserError(f"{source!r} holds no labelled {task} example{kept}: the split is empty")
  return examples


# --- Sources -------------------------------------------------------------------------------------------

def _hf(source: str) -> tuple[Rows, Sequence[str] | None]:
  m = sources._HF.match(source)
  if not m:
    raise UserError(f"bad task data source {source!r}; expected hf:NAME[:CONFIG]:SPLIT, e.g. hf:xnli:de:test")
  import datasets  # Slow to import; only this source needs it.

  try:
    ds = datasets.load_dataset(m["name"], m["config"], split=m["split"])
  except Exception as e:  # datasets raises many types (hub, offline, missing config or split, script).
    raise UserError(sources.hf_load_error(source, e)) from e
  names = None
  for key in LABEL_FIELDS:
    feature = ds.features.get(key)
    if isinstance(feature, datasets.ClassLabel):
      names = list(feature.names)
  return ((f"{source} row {i}", row) for i, row in enumerate(ds)), names


def _tfds(source: str, data_dir: str | None) -> tuple[Rows, Sequence[str] | None]:
  m = _TFDS.match(source)
  if not m:
    raise UserError(f"bad task data source {source!r}; expected tfds:NAME[:CONFIG]:SPLIT, "
                    "e.g. tfds:xnli:test or tfds:squad:v1.1:validation")
  import tensorflow_datasets as tfds  # Imports without TensorFlow; data_source reads array_record.

  name = f"{m['name']}/{m['config']}" if m["config"] else m["name"]
  try:
    ds = tfds.data_source(name, split=m["split"], data_dir=data_dir)
  except Exception as e:  # tfds raises many types (unknown name, not prepared, bad split).
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise UserError(f"cannot load {source!r} with tfds.data_source: {type(e).__name__}: {first}") from e
  features = ds.dataset_info.features
  names = None
  for key in LABEL_FIELDS:
    if key in features and getattr(features[key], "names", None):
      names = list(features[key].names)
  return _batched_rows(ds, source), names


def _batched_rows(ds: Any, source: str, size: int = 1024) -> Rows:
  for start in range(0, len(ds), size):
    indices = list(range(start, min(start + size, len(ds))))
    batch = ds.__getitems__(indices) if hasattr(ds, "__getitems__") else [ds[i] for i in indices]
    yield from ((f"{source} row {i}", plain(row)) for i, row in zip(indices, batch))


def _bundled(source: str, task: str, lang: str | None) -> Rows:
  m = _BUNDLED.match(source)
  available = bundled_tasks()
  if not m:
    raise UserError(f"bad task data source {source!r}; expected bundled:TASK:SPLIT, one of "
                    f"{', '.join(available) or 'none'}")
  if BUNDLED_TASKS.get(m["name"]) != task:
    ours = [name for name, t in BUNDLED_TASKS.items() if t == task]
    raise UserError(f"{source!r} is not a {task} task; bundled {task} data: {', '.join(ours)}")
  lang = lang or "en"
  path = importlib.resources.files("rewire") / "data" / "bundled_tasks" / f"{m['name']}.{m['split']}.{lang}.jsonl.gz"
  if not path.is_file():
    raise UserError(f"no bundled {m['name']} split {m['split']!r} in language {lang!r}; available: "
                    f"{', '.join(available)}")
  return _read_file(str(path))


def bundled_tasks() -> list[str]:
  """The bundled splits as `NAME:SPLIT (languages)`, e.g. `verse_nli:test (en, es, ja, uk)`."""
  root = importlib.resources.files("rewire") / "data" / "bundled_tasks"
  splits: dict[str, list[str]] = {}
  for entry in root.iterdir() if root.is_dir() else []:
    parts = entry.name.split(".")
    if entry.name.endswith(".jsonl.gz") and len(parts) == 5:
      splits.setdefault(f"{parts[0]}:{parts[1]}", []).append(parts[2])
  return [f"{k} ({', '.join(sorted(v))})" for k, v in sorted(splits.items())]


def _files(spec: str) -> Rows:
  paths = sources.expand_patterns(spec)
  for path in paths:
    if not path.endswith(_FILE_TYPES):
      raise UserError(f"{path}: unsupported file type; expected one of {', '.join(_FILE_TYPES)}")
  for path in paths:
    yield from _read_file(path)


def _read_file(path: str) -> Rows:
  try:
    if path.endswith(".parquet"):
      yield from _parquet_rows(path)
      return
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
      if path.endswith((".tsv", ".tsv.gz")):
        yield from _tsv_rows(f, path)
      elif path.endswith(".json"):
        yield from _json_rows(f, path)
      else:
        yield from _jsonl_rows(f, path)
  except FileNotFoundError as e:
    raise UserError(f"file not found: {path}") from e
  except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
    raise UserError(f"{path}: cannot read as UTF-8 text ({type(e).__name__}: {e})") from e


def _jsonl_rows(lines: Iterable[str], path: str) -> Rows:
  for lineno, line in enumerate(lines, start=1):
    if line.strip():
      try:
        yield f"{path}:{lineno}", json.loads(line)
      except json.JSONDecodeError as e:
        raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e


def _json_rows(f: Any, path: str) -> Rows:
  """SQuAD/MLQA/XQuAD nesting (data > paragraphs > qas) or a plain list of records."""
  try:
    data = json.load(f)
  except json.JSONDecodeError as e:
    raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
  if isinstance(data, list):
    yield from ((f"{path}: record {i}", r) for i, r in enumerate(data))
    return
  if not isinstance(data, Mapping) or not isinstance(data.get("data"), list):
    raise UserError(f"{path}: expected a list of records or SQuAD-style {{\"data\": [...]}} JSON")
  for i, article in enumerate(data["data"]):
    for j, paragraph in enumerate(article.get("paragraphs", [])):
      for k, qa in enumerate(paragraph.get("qas", [])):
        where = f"{path}: data[{i}].paragraphs[{j}].qas[{k}]"
        if "context" not in paragraph:
          raise UserError(f"{path}: data[{i}].paragraphs[{j}]: missing field 'context'")
        yield where, {**qa, "context": paragraph["context"]}


def _tsv_rows(f: Iterable[str], path: str) -> Rows:
  reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
  header = next(reader, None)
  if not header:
    raise UserError(f"{path}: empty file; a .tsv needs a header row naming its fields")
  for lineno, cells in enumerate(reader, start=2):
    if not cells:
      continue
    if len(cells) != len(header):
      raise UserError(f"{path}:{lineno}: {len(cells)} tab-separated fields, the header has {len(header)}")
    yield f"{path}:{lineno}", dict(zip(header, cells))


def _parquet_rows(path: str) -> Rows:
  import pyarrow.parquet as pq

  if not os.path.exists(path):
    raise FileNotFoundError(path)
  try:
    table = pq.read_table(path)
  except Exception as e:  # pyarrow raises ArrowInvalid and others for bad files.
    raise UserError(f"{path}: cannot read as Parquet ({type(e).__name__}: {e})") from e
  names = _parquet_label_names(table.schema.metadata or {})
  for i, row in enumerate(table.to_pylist()):
    if names and isinstance(row.get("label"), int) and row["label"] != -1:
      row["label"] = label_name(row["label"], names, f"{path}: row {i}")
    yield f"{path}: row {i}", row


def _parquet_label_names(metadata: Mapping[bytes, bytes]) -> list[str] | None:
  """ClassLabel names that `datasets` stores in a Parquet file's schema metadata, if any."""
  try:
    features = json.loads(metadata[b"huggingface"])["info"]["features"]
    return list(features["label"]["names"])
  except (KeyError, TypeError, ValueError):
    return None

