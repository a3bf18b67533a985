"""compare.py A B -- compares two dumps of dump.py leaf by leaf; exit status 1 when they differ.

Arrays: same set of keys, and per key the same dtype, the same shape and np.array_equal(equal_nan=True)
(bit-identical values up to NaN payloads). Records (JSON/JSONL/Markdown): the same keys and equal values,
NaN equal to NaN, int and float not interchangeable, dict key order ignored, list order significant.
Prints one summary line per run, then every difference (at most --max per run, default 20).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict

import numpy as np


def load(path: str):
  arrays = np.load(os.path.join(path, "arrays.npz"), allow_pickle=False)
  with open(os.path.join(path, "records.json")) as f:
    records = json.load(f)
  with open(os.path.join(path, "index.json")) as f:
    index = json.load(f)
  return arrays, records, index


def json_diffs(a, b, where: str, out: list[str]) -> None:
  if type(a) is not type(b):
    out.append(f"{where}: type {type(a).__name__} {_short(a)} vs {type(b).__name__} {_short(b)}")
  elif isinstance(a, dict):
    for k in sorted(set(a) | set(b)):
      if k not in a:
        out.append(f"{where}/{k}: only in B ({_short(b[k])})")
      elif k not in b:
        out.append(f"{where}/{k}: only in A ({_short(a[k])})")
      else:
        json_diffs(a[k], b[k], f"{where}/{k}", out)
  elif isinstance(a, list):
    if len(a) != len(b):
      out.append(f"{where}: length {len(a)} vs {len(b)}")
    for i, (x, y) in enumerate(zip(a, b)):
      json_diffs(x, y, f"{where}[{i}]", out)
  elif isinstance(a, float):
    if not (a == b or (math.isnan(a) and math.isnan(b))):
      out.append(f"{where}: {a!r} vs {b!r}")
  elif a != b:
    out.append(f"{where}: {_short(a)} vs {_short(b)}")


def _short(x, n=120) -> str:
  s = repr(x)
  return s if len(s) <= n else s[:n] + "..."


def array_diff(x: np.ndarray, y: np.ndarray) -> str | None:
  if x.dtype != y.dtype:
    return f"dtype {x.dtype} vs {y.dtype}"
  if x.shape != y.shape:
    return f"shape {x.shape} vs {y.shape}"
  equal_nan = x.dtype.kind in "fc"
  if np.array_equal(x, y, equal_nan=equal_nan):
    return None
  if x.dtype.kind in "fc":
    bad = ~((x == y) | (np.isnan(x) & np.isnan(y)))
    d = np.abs(x.astype(np.float64) - y.astype(np.float64))[bad]
    return f"{int(bad.sum())}/{x.size} elements differ, max |diff| {np.nanmax(d):.3g}"
  return f"{int(np.sum(x != y))}/{x.size} elements differ"


def main(argv) -> int:
  args = [a for a in argv[1:] if not a.startswith("--max=")]
  limit = int(next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--max=")), 20))
  if len(args) != 2:
    print(__doc__, file=sys.stderr)
    return 2
  arrays_a, records_a, index_a = load(args[0])
  arrays_b, records_b, index_b = load(args[1])
  diffs: dict[str, list[str]] = defaultdict(list)
  n_arrays: dict[str, int] = defaultdict(int)
  n_records: dict[str, int] = defaultdict(int)
  run_of = lambda key: key.split("::", 1)[0]
  runs = sorted(set(index_a["runs"]) | set(index_b["runs"]))
  for run in runs:
    if run not in index_a["runs"]:
      diffs[run].append("run only in B")
    elif run not in index_b["runs"]:
      diffs[run].append("run only in A")

  keys_a, keys_b = set(arrays_a.files), set(arrays_b.files)
  for key in sorted(keys_a | keys_b):
    run = run_of(key)
    if key not in keys_b:
      diffs[run].append(f"array {key}: only in A")
      continue
    if key not in keys_a:
      diffs[run].append(f"array {key}: only in B")
      continue
    n_arrays[run] += 1
    why = array_diff(arrays_a[key], arrays_b[key])
    if why:
      diffs[run].append(f"array {key}: {why}")

  for key in sorted(set(records_a) | set(records_b)):
    run = run_of(key)
    if key not in records_b:
      diffs[run].append(f"record {key}: only in A")
      continue
    if key not in records_a:
      diffs[run].append(f"record {key}: only in B")
      continue
    a, b = records_a[key], records_b[key]
    n_records[run] += len(a) if isinstance(a, list) and key.endswith(".jsonl") else 1
    out: list[str] = []
    json_diffs(a, b, f"record {key}", out)
    diffs[run].extend(out)

  bad = 0
  for run in runs:
    d = diffs.get(run, [])
    n_bad_a = sum(x.startswith("array") for x in d)
    n_bad_r = sum(x.startswith("record") for x in d)
    arr = f"{n_arrays[run]} leaves " + ("identical" if not n_bad_a else f"compared, {n_bad_a} array differences")
    rec = (("metrics identical" if not n_bad_r else f"{n_bad_r} record differences")
           + f" ({n_records[run]} records)")
    print(f"{run}: {arr}, {rec}" + ("" if not d else f"  ({len(d)} differences)"))
    bad += len(d)
  if bad:
    print(f"\nDIFFERENCES ({bad}):")
    for run in runs:
      for line in diffs.get(run, [])[:limit]:
        print(f"  {run}: {line}")
      if len(diffs.get(run, [])) > limit:
        print(f"  {run}: ... {len(diffs[run]) - limit} more")
    print(f"\ncompare: {args[0]} and {args[1]} DIFFER")
    return 1
  print(f"\ncompare: {args[0]} and {args[1]} are identical "
        f"({sum(n_arrays.values())} array leaves, {sum(n_records.values())} records)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
