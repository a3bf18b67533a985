"""File formats of text corpora, read as streams: .txt, .jsonl (each optionally .gz/.xz/.zst) and .parquet.

A .txt file holds documents separated by blank (whitespace-only) lines, as CC-100 ships them; a .jsonl file
one JSON object per line with the text in a named field; a .parquet file a text column, read one row group
at a time. Reading is streamed and decompression on the fly, so a file of any size costs one block of
memory. A big file can be read in interleaved parts (blocks of BLOCK documents; parquet: row groups) by
different workers. Errors name the file (and the line, for JSON).
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
from collections.abc import Iterable, Iterator

from rewire.errors import UserError

COMPRESSIONS = ("", ".gz", ".xz", ".zst")
EXTENSIONS = tuple(f"{base}{c}" for base in (".txt", ".jsonl") for c in COMPRESSIONS) + (".parquet",)
BLOCK = 1000  # Documents per block when a file is read in interleaved parts.
_BLANK = " \t\r\f\v\n"  # A line of only these characters separates two documents of a .txt file.


class _Counting(io.RawIOBase):
  """A raw file that counts the bytes read from it (the progress of a compressed stream)."""

  def __init__(self, f, counter: list[int] | None):
    self._f, self._counter = f, counter

  def readable(self) -> bool:
    return True

  def readinto(self, b) -> int:
    n = self._f.readinto(b)
    if self._counter is not None and n:
      self._counter[0] += n
    return n

  def close(self) -> None:
    self._f.close()
    super().close()


def _open_binary(path: str, counter: list[int] | None):
  raw = io.BufferedReader(_Counting(open(path, "rb", buffering=0), counter), 1 << 20)
  if path.endswith(".gz"):
    return gzip.GzipFile(fileobj=raw)
  if path.endswith(".xz"):
    return lzma.LZMAFile(raw)
  if path.endswith(".zst"):
    import zstandard
    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
  return raw


def _interleave(records: Iterable, part: int, parts: int) -> Iterator:
  """The records of blocks `b % parts == part` (blocks of BLOCK records)."""
  for i, record in enumerate(records):
    if (i // BLOCK) % parts == part:
      yield record


def read_file(path: str, text_field: str, part: int = 0, parts: int = 1,
              progress: list[int] | None = None) -> Iterator[str]:
  """The documents of one file (or of its interleaved part `part` of `parts`), streamed.

  `progress`, if given, is a one-element list that receives the bytes read so far from disk.
  """
  try:
    if path.endswith(".parquet"):
      yield from _parquet(path, text_field, part, parts, progress)
      return
    with _open_binary(path, progress) as raw:
      lines = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline=None)
      if ".txt" in os.path.basename(path):
        yield from _interleave(_txt_documents(lines), part, parts)
      else:
        for lineno, line in _interleave(((n, l) for n, l in enumerate(lines, 1) if l.strip()),
                                        part, parts):
          yield _jsonl_text(line, path, lineno, text_field)
  except FileNotFoundError as e:
    raise UserError(f"file not found: {path}") from e
  except UnicodeDecodeError as e:
    raise UserError(f"{path}: not UTF-8 text ({e.reason}); convert it to UTF-8") from e
  except UserError:
    raise
  except (EOFError, OSError, lzma.LZMAError, ValueError) as e:
    raise UserError(f"{path}: cannot read it ({type(e).__name__}: {e})") from e
  except Exception as e:  # zstandard.ZstdError and pyarrow errors have no common base.
    raise UserError(f"{path}: cannot read it ({type(e).__name__}: {e})") from e


def _txt_documents(lines: Iterable[str]) -> Iterator[str]:
  """Documents of a text stream: runs of lines separated by blank (whitespace-only) lines."""
  doc: list[str] = []
  for line in lines:
    if line.strip(_BLANK):
      doc.append(line)
    elif doc:
      yield "".join(doc)
      doc = []
  if doc:
    yield "".join(doc)


def _jsonl_text(line: str, path: str, lineno: int, text_field: str) -> str:
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
  if not isinstance(record, dict) or text_field not in record:
    raise UserError(f"{path}:{lineno}: no field {text_field!r} in this JSON line")
  text = record[text_field]
  if not isinstance(text, str):
    raise UserError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, not a string")
  return text


def _parquet(path: str, text_field: str, part: int, parts: int, progress) -> Iterator[str]:
  import pyarrow.parquet as pq
  f = pq.ParquetFile(path)
  if text_field not in f.schema_arrow.names:
    raise UserError(f"{path}: no column {text_field!r}; its columns: {', '.join(f.schema_arrow.names)}")
  for group in range(part, f.num_row_groups, parts):
    column = f.read_row_group(group, columns=[text_field]).column(0)
    if progress is not None:
      progress[0] += f.metadata.row_group(group).total_byte_size
    for text in column.to_pylist():
      if text is not None and not isinstance(text, str):
        raise UserError(f"{path}: column {text_field!r} holds {type(text).__name__}, not strings")
      yield text
