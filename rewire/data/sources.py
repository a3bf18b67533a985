"""Text sources named by one source string, read as streams of documents split into independent units.

A config names its corpus with a single string, so switching from the bundled demo corpus to local files
or to a hub dataset is a one-line change:

  bundled:en_web                          the English demo corpus shipped in rewire/data/corpora/
  bundled:bible_<lang>                    Old Testament chapters of a verse-aligned Bible (en, es, ja, uk); the
                                          New Testament is held out: it is the test text of the bundled
                                          verse_nli / verse_qa / verse_genre tasks (see `rewire.data.bundled`)
  files:PATTERN[,PATTERN...]              local files (glob patterns): .txt (blank-line-separated
                                          documents, as CC-100 ships them), .jsonl, .parquet; .txt and .jsonl
                                          optionally compressed as .gz, .xz or .zst
  hf:NAME[:CONFIG]:SPLIT                  datasets.load_dataset(NAME, CONFIG, split=SPLIT, streaming=True);
                                          NAME is a hub name (a Parquet-converted dataset works too) or a
                                          local folder
  tfds:NAME[:CONFIG]:SPLIT                tfds.data_source(NAME[/CONFIG], split=SPLIT): array_record,
                                          random access, no TensorFlow
  cipher:SEED:SOURCE                      SOURCE with every character enciphered by a seeded bijection: a
                                          controlled new language with the source's structure and no
                                          surface form in common with it (`rewire.data.cipher`)

Nothing here holds a corpus in memory. `plan_units` cuts a source into *units* -- a file, an interleaved
part of a big file, a hub dataset's shard, a range of a TFDS split -- and `read_unit` streams one unit's
documents, so the units can be read in parallel by different workers (see `rewire.data.build`). The
units of a source, in order, give its documents in a deterministic order. `load_documents` reads a whole
(small) source into a list, for tests and task fixtures.

Problems the user can fix (bad string, missing file, missing field, undecodable or empty input) raise
`UserError` naming the file.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Iterable, Iterator

from rewire.data import cipher
from rewire.data.bundled import bundled_path, read_bundled
from rewire.data.file_formats import BLOCK, EXTENSIONS, read_file
from rewire.errors import UserError

FORMS = ("bundled:NAME, files:PATTERN[,PATTERN...], hf:NAME[:CONFIG]:SPLIT, "
         "tfds:NAME[:CONFIG]:SPLIT or cipher:SEED:SOURCE")
_HF = re.compile(r"^hf:(?P<name>[^:]+)(?::(?P<config>[^:]+))?:(?P<split>[^:\[\]]+(?:\[[^\]]*\])?)$")
_TFDS = re.compile(r"^tfds:(?P<name>[^:]+)(?::(?P<config>[^:]+))?:(?P<split>[^:\[\]]+(?:\[[^\]]*\])?)$")


@dataclasses.dataclass(frozen=True)
class Unit:
  """One independently readable piece of a source: `read_unit` streams its documents.

  kind: "bundled" | "file" | "hf" | "tfds". locator: the bundled name, the file path, or the source string.
  A file or TFDS split read in `parts` parts is cut into blocks of BLOCK documents (parquet: row groups,
  hf: shards) and part `p` reads the blocks `b` with `b % parts == p`.
  """
  kind: str
  locator: str
  part: int = 0
  parts: int = 1
  size: int = 0  # Bytes on disk, for progress (0: unknown).
  limit: int = 0  # >0: read only this many (non-empty) documents of the unit.
  cipher: int = -1  # >=0: the documents are enciphered with this seed (a cipher:SEED:SOURCE source).

  @property
  def name(self) -> str:
    name = self.locator if self.parts == 1 else f"{self.locator} (part {self.part + 1}/{self.parts})"
    return name if self.cipher < 0 else f"{cipher.PREFIX}{self.cipher}:{name}"


def check_source(source: str) -> str:
  """The stripped source string; UserError for a malformed one."""
  if not isinstance(source, str) or not source.strip():
    raise UserError(f"empty data source {source!r}; expected {FORMS}")
  source = source.strip()
  ciphered = cipher.parse(source)
  if ciphered:
    check_source(ciphered[1])
    return source
  for prefix in ("bundled:", "files:"):
    if source.startswith(prefix):
      return source
  if source.startswith("hf:"):
    if not _HF.match(source):
      raise UserError(f"bad data source {source!r}; expected hf:NAME[:CONFIG]:SPLIT, "
                      "e.g. hf:wikitext:wikitext-103-raw-v1:train or hf:/path/to/folder:train")
    return source
  if source.startswith("tfds:"):
    if not _TFDS.match(source):
      raise UserError(f"bad data source {source!r}; expected tfds:NAME[:CONFIG]:SPLIT, e.g. tfds:c4:en:train")
    return source
  raise UserError(f"unknown data source {source!r}; expected {FORMS}")


def plan_units(source: str, *, parts_per_file: int = 1, tfds_data_dir: str = "", max_documents: int = 0) -> list[Unit]:
  """The units of `source`, in document order. Checks that files exist (not that they decode).

  `max_documents` > 0 caps the source at about that many documents: each of its n units reads at most
  ceil(max_documents / n) (exactly max_documents for a single unit).
  """
  units = _plan_units(source, parts_per_file, tfds_data_dir)
  if max_documents > 0:
    limit = -(-int(max_documents) // len(units))
    units = [dataclasses.replace(u, limit=limit) for u in units]
  return units


def _plan_units(source: str, parts_per_file: int, tfds_data_dir: str) -> list[Unit]:
  source = check_source(source)
  ciphered = cipher.parse(source)
  if ciphered:
    seed, inner = ciphered
    return [dataclasses.replace(u, cipher=seed) for u in _plan_units(inner, parts_per_file, tfds_data_dir)]
  parts = max(1, int(parts_per_file))
  if source.startswith("bundled:"):
    name = source[len("bundled:"):]
    path = bundled_path(name)
    return [Unit("bundled", name, size=os.path.getsize(path))]
  if source.startswith("files:"):
    units = []
    for path in expand_patterns(source[len("files:"):]):
      if not path.endswith(EXTENSIONS):
        raise UserError(f"{path}: unsupported file type; expected one of {', '.join(EXTENSIONS)}")
      size = os.path.getsize(path)
      if size == 0:
        raise UserError(f"{path}: the file is empty")
      units.extend(Unit("file", path, p, parts, size) for p in range(parts))
    return units
  if source.startswith("hf:"):
    ds = _hf_stream(source)
    shards = int(getattr(ds, "n_shards", 1) or 1)
    if _HF.match(source)["split"].endswith("]"):
      shards = 1  # A sliced split is read as one stream.
    return [Unit("hf", source, i, shards) for i in range(shards)]
  return [Unit("tfds", source, p, parts) for p in range(parts)]


def read_unit(unit: Unit, *, text_field: str = "text", tfds_data_dir: str = "",
              progress: list[int] | None = None) -> Iterator[str]:
  """The non-empty documents (stripped) of one unit, streamed.

  `progress`, if given, is a one-element list that receives the bytes read so far from disk.
  """
  if unit.kind == "bundled":
    docs: Iterable[str] = read_bundled(unit.locator, progress)
  elif unit.kind == "file":
    docs = read_file(unit.locator, text_field, unit.part, unit.parts, progress)
  elif unit.kind == "hf":
    docs = _read_hf(unit, text_field)
  elif unit.kind == "tfds":
    docs = _read_tfds(unit, text_field, tfds_data_dir)
  else:
    raise ValueError(f"unknown unit kind {unit.kind!r}")
  count = 0
  for doc in docs:
    if isinstance(doc, str):
      doc = doc.strip()
      if doc:
        yield doc if unit.cipher < 0 else cipher.encipher(doc, unit.cipher)
        count += 1
        if count == unit.limit:
          return


def iter_documents(source: str, *, text_field: str = "text", tfds_data_dir: str = "") -> Iterator[str]:
  """Every document of `source`, in order (the units read one after another)."""
  for unit in plan_units(source, tfds_data_dir=tfds_data_dir):
    yield from read_unit(unit, text_field=text_field, tfds_data_dir=tfds_data_dir)


def load_documents(source: str, *, text_field: str = "text", tfds_data_dir: str = "") -> list[str]:
  """All documents of a small `source` as a list; UserError if it holds none."""
  docs = list(iter_documents(source, text_field=text_field, tfds_data_dir=tfds_data_dir))
  if not docs:
    raise UserError(f"corpus {source.strip()!r} is empty: it holds no non-empty document")
  return docs


def fingerprint(source: str, *, parts_per_file: int = 1) -> list:
  """What identifies the inputs of `source`: file paths with sizes and mtimes, or the dataset names.

  A hub or TFDS dataset is identified by its name only (plus the TFDS version prepared on disk), so a
  changed upstream dataset is not noticed: prepare into a new directory for a new revision.
  """
  source = check_source(source)
  ciphered = cipher.parse(source)
  if ciphered:
    return [cipher.PREFIX + str(ciphered[0]), *fingerprint(ciphered[1], parts_per_file=parts_per_file)]
  if source.startswith("files:"):
    out = []
    for path in expand_patterns(source[len("files:"):]):
      st = os.stat(path)
      out.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    return out
  if source.startswith("bundled:"):
    path = bundled_path(source[len("bundled:"):])
    return [source, os.path.getsize(path)]
  return [source]


# --- local files -----------------------------------------------------------------------------------


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


# --- Hugging Face datasets and TFDS ---------------------------------------------------------------


def _hf_stream(source: str):
  """`datasets.load_dataset(..., streaming=True)` for an hf: source (a `[:N]` slice becomes take(N))."""
  import datasets  # Imported lazily: it is slow to import and only this source needs it.

  m = _HF.match(source)
  split, take = m["split"], None
  if split.endswith("]"):
    split, _, rest = split.partition("[")
    sl = re.fullmatch(r":(\d+)\]", rest)
    if not sl:
      raise UserError(f"{source!r}: a streamed split takes only a [:N] slice")
    take = int(sl[1])
  try:
    ds = datasets.load_dataset(m["name"], m["config"], split=split, streaming=True)
  except Exception as e:  # datasets raises many types (hub, offline, missing config or split).
    raise UserError(hf_load_error(source, e)) from e
  return ds.take(take) if take is not None else ds


def _read_hf(unit: Unit, text_field: str) -> Iterator[str]:
  ds = _hf_stream(unit.locator)
  if unit.parts > 1:
    ds = ds.shard(num_shards=unit.parts, index=unit.part)
  for row in ds:
    if text_field not in row:
      raise UserError(f"{unit.locator!r} has no field {text_field!r}; its fields: {', '.join(row)}")
    yield row[text_field]


def _read_tfds(unit: Unit, text_field: str, data_dir: str) -> Iterator[str]:
  m = _TFDS.match(unit.locator)
  import tensorflow_datasets as tfds  # Imports without TensorFlow; data_source reads array_record.

  name = m["name"] + (f"/{m['config']}" if m["config"] else "")
  try:
    ds = tfds.data_source(name, split=m["split"], data_dir=data_dir or None)
  except Exception as e:  # tfds raises many types (unknown name, not prepared, bad split).
    first = str(e).splitlines()[0] if str(e) else ""
    raise UserError(f"cannot load {unit.locator!r} with tfds.data_source: {type(e).__name__}: {first}") from e
  for start in range(unit.part * BLOCK, len(ds), unit.parts * BLOCK):
    for row in ds.__getitems__(list(range(start, min(start + BLOCK, len(ds))))):
      if text_field not in row:
        raise UserError(f"{unit.locator!r} has no field {text_field!r}; its fields: {', '.join(row)}")
      text = row[text_field]
      yield text.decode("utf-8") if isinstance(text, bytes) else text


def hf_load_error(source: str, e: Exception) -> str:
  """One line for a failed `datasets.load_dataset`, with a way out for script-only hub datasets."""
  first = str(e).splitlines()[0] if str(e) else ""
  hint = ""
  if "scripts are no longer supported" in first:
    # cc100 (statmt/cc100) is one: datasets>=4 cannot run its loading script. Its raw files
    # (data.statmt.org/cc-100/de.txt.xz) work as files: -- see configs/prepare.py:cc100.
    hint = ("; this hub dataset needs a loading script, which datasets>=4 cannot run: use a Parquet "
            "copy of it or download its files and use files:PATTERN (configs/prepare.py:cc100)")
  return f"cannot load {source!r} with datasets.load_dataset: {type(e).__name__}: {first}{hint}"
