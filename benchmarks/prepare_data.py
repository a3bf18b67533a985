"""Data preparation and reading, measured side by side in one run.

1. A corpus is generated from the bundled text: the World English Bible chapters, repeated and shuffled
   (every copy keeps its text, so tokenization costs what it costs on real prose), written as `--files`
   `.txt.xz` files with blank-line-separated documents (the CC-100 layout) to reach `--mb` MB of text.
2. One unigram tokenizer (`--vocab` pieces) is trained on a sample and given to both sides below, so
   tokenizer training is not timed.
3. Preparation throughput, each side in a fresh subprocess (peak RSS measured per side):
   (a) "single process": today's former path -- every document of the corpus read into memory, then
       `pack_documents` (the `tokenizers` encoder's own Rust thread pool uses every core) and one
       `np.save`;
   (b) "beam": `rewire.data.build.prepare_into` with the DirectRunner and `--workers` processes, which
       writes ArrayRecord shards and the manifest.
   Both give the same multiset of sequences (checked).
4. Decompression alone (xz) against tokenization, per core, to size `parts_per_file`.
5. Reader throughput through grain (`rewire.data.batches.corpus_batches`): one host's share of a global
   batch, `--read-batch` rows x 512 tokens, from the shards written in 3b at seq_len 512.

Run: `python benchmarks/prepare_data.py [--mb 240] [--files 8] [--workers 2]`.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_corpus(out: str, mb: float, files: int, seed: int = 0) -> tuple[list[str], int]:
  """`files` .txt.xz files holding about `mb` MB of text in total; returns their paths and text bytes."""
  from rewire.data.sources import load_documents
  os.makedirs(out, exist_ok=True)
  paths = [os.path.join(out, f"part-{i:03d}.txt.xz") for i in range(files)]
  stamp = os.path.join(out, "done.json")
  if os.path.exists(stamp):
    with open(stamp) as f:
      info = json.load(f)
    if info["mb"] == mb and info["files"] == files:
      return paths, info["bytes"]
  docs = load_documents("bundled:en_web")
  rng = random.Random(seed)
  target = mb * 1e6 / files
  total = 0
  for path in paths:
    size, chunks = 0, []
    while size < target:
      order = docs[:]
      rng.shuffle(order)
      for d in order:
        chunks.append(d)
        size += len(d.encode()) + 2
        if size >= target:
          break
    text = "\n\n".join(chunks) + "\n"
    total += len(text.encode())
    with lzma.open(path, "wt", encoding="utf-8", preset=1) as f:
      f.write(text)
  with open(stamp, "w") as f:
    json.dump({"mb": mb, "files": files, "bytes": total}, f)
  return paths, total


def side_single(pattern: str, tok_path: str, seq_len: int, out: str) -> dict:
  import numpy as np
  from rewire.data.packing import pack_documents
  from rewire.data.sources import load_documents
  from rewire.data.tokenizer import load_tokenizer
  t = time.perf_counter()
  docs = load_documents(f"files:{pattern}")
  rows = pack_documents(docs, load_tokenizer(tok_path), seq_len)
  np.save(os.path.join(out, "train.npy"), rows)
  seconds = time.perf_counter() - t
  return {"seconds": seconds, "tokens": int((rows != 1).sum()), "sequences": len(rows)}


def side_beam(pattern: str, tok_path: str, seq_len: int, out: str, workers: int) -> dict:
  from rewire.config import data_defaults
  from rewire.data.build import Engine, Settings, prepare_into
  d = data_defaults()
  d.update(source=f"files:{pattern}", tokenizer=tok_path, seq_len=seq_len, valid_fraction=0.001, workers=workers)
  t = time.perf_counter()
  p = prepare_into(Settings.from_config(d), out, engine=Engine.from_config(d))
  seconds = time.perf_counter() - t
  splits = p.manifest["splits"]
  return {"seconds": seconds, "tokens": sum(splits[s]["tokens"] for s in splits),
          "sequences": sum(splits[s]["sequences"] for s in splits),
          "shard_bytes": sum(sh["bytes"] for s in splits for sh in splits[s]["shards"])}


def in_subprocess(name: str, *args) -> dict:
  """Runs side `name` in a fresh interpreter; returns its result plus its peak RSS (with children)."""
  code = (f"import json, sys, resource; sys.path.insert(0, {ROOT!r}); import benchmarks.prepare_data as b; "
          f"r = b.side_{name}(*{args!r}); "
          "r['peak_rss_mb'] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
          "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024; print(json.dumps(r))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def decompress_vs_tokenize(path: str, tok_path: str) -> dict:
  """MB/s of one core decompressing xz, and of one core tokenizing the same text."""
  os.environ["TOKENIZERS_PARALLELISM"] = "false"
  from rewire.data.tokenizer import load_tokenizer
  t = time.perf_counter()
  with lzma.open(path, "rt", encoding="utf-8") as f:
    text = f.read()
  dec = time.perf_counter() - t
  docs = text.split("\n\n")[:4000]
  sample = sum(len(d.encode()) for d in docs)
  tok = load_tokenizer(tok_path)
  t = time.perf_counter()
  tok.encode_batch(docs, add_special_tokens=False)
  enc = time.perf_counter() - t
  return {"xz_mb_per_s": len(text.encode()) / dec / 1e6, "tokenize_mb_per_s_one_core": sample / enc / 1e6}


def reader(prepared_dir: str, rows: int, steps: int) -> dict:
  from rewire.data.batches import corpus_batches
  from rewire.data.corpus import open_prepared
  p = open_prepared(prepared_dir, verify=False)
  it = corpus_batches(p, rows, seed=0)
  next(it)
  t = time.perf_counter()
  n = 0
  for _ in range(steps):
    n += int(next(it).size)
  seconds = time.perf_counter() - t
  return {"tokens_per_s": n / seconds, "rows": rows, "seq_len": p.seq_len}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--mb", type=float, default=240)
  ap.add_argument("--files", type=int, default=8)
  ap.add_argument("--workers", type=int, default=2)
  ap.add_argument("--vocab", type=int, default=8192)
  ap.add_argument("--seq-len", type=int, default=128)
  ap.add_argument("--read-batch", type=int, default=128)
  ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "rewire-bench-corpus"))
  args = ap.parse_args()

  from rewire.data.sources import load_documents
  from rewire.data.tokenizer import save_tokenizer, train_tokenizer
  paths, text_bytes = make_corpus(args.cache, args.mb, args.files)
  disk = sum(os.path.getsize(p) for p in paths)
  print(f"corpus: {len(paths)} .txt.xz files, {text_bytes / 1e6:.0f} MB of text, {disk / 1e6:.1f} MB on disk")
  work = tempfile.mkdtemp(prefix="rewire-bench-")
  tok_path = os.path.join(work, "tokenizer.json")
  save_tokenizer(train_tokenizer(load_documents("bundled:en_web"), args.vocab), tok_path)
  pattern = os.path.join(args.cache, "*.txt.xz")

  beam = in_subprocess("beam", pattern, tok_path, args.seq_len, os.path.join(work, "beam"), args.workers)
  single = in_subprocess("single", pattern, tok_path, args.seq_len, work)
  assert beam["tokens"] == single["tokens"], (beam, single)
  rate = lambda r: r["tokens"] / r["seconds"]
  print(f"\npreparation, {single['tokens'] / 1e6:.1f}M tokens at seq_len {args.seq_len}:")
  print("| side | seconds | tokens/s | peak RSS |\n|---|---|---|---|")
  print(f"| single process (all in memory, Rust thread pool) | {single['seconds']:.1f} | {rate(single) / 1e6:.2f}M "
        f"| {single['peak_rss_mb']:.0f} MB |")
  print(f"| Beam DirectRunner, {args.workers} workers (streamed) | {beam['seconds']:.1f} | {rate(beam) / 1e6:.2f}M "
        f"| {beam['peak_rss_mb']:.0f} MB |")
  print(f"beam / single = {rate(beam) / rate(single):.2f}x; shards {beam['shard_bytes'] / 1e6:.0f} MB for "
        f"{text_bytes / 1e6:.0f} MB of text ({beam['shard_bytes'] / text_bytes:.2f} bytes per byte of text); "
        f"{beam['seconds'] / (text_bytes / 1e9):.0f} s per GB of text")

  dt = decompress_vs_tokenize(paths[0], tok_path)
  print(f"\nxz decompression {dt['xz_mb_per_s']:.0f} MB/s vs tokenization {dt['tokenize_mb_per_s_one_core']:.2f} MB/s "
        f"on one core: {dt['xz_mb_per_s'] / dt['tokenize_mb_per_s_one_core']:.0f}x")

  long_dir = os.path.join(work, "beam512")
  side_beam(pattern.replace("*", "part-00[01]"), tok_path, 512, long_dir, args.workers)
  r = reader(long_dir, args.read_batch, 200)
  print(f"\nreader (grain, {r['rows']} x {r['seq_len']} per host batch): {r['tokens_per_s'] / 1e6:.2f}M tokens/s "
        f"= {r['tokens_per_s'] / 650e3:.1f}x a TPU v4 host's RoBERTa-base consumption (650k tokens/s)")


if __name__ == "__main__":
  main()
