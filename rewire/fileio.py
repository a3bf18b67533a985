"""File helpers every on-disk contract shares: sha256 checksums and atomic JSON writes.

Prepared corpora (`rewire.data.corpus`), workdirs (`rewire.workdir`) and checkpoint seals
(`rewire.checkpoint`) all write JSON that a reader must never see half-written, and all verify files by
their sha256; they do it through these two functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any


def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def write_json_atomic(path: str, obj: Any, *, indent: int | None = 1) -> None:
  """Writes JSON through a temporary file and a rename, so a reader never sees half a file."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=indent)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
