"""Peak memory of a tiny pretraining run against the size of its corpus (1x and 20x the bundled one).

For each size a corpus of `.txt` files is written from the bundled English chapters (repeated and
shuffled), then two runs are measured, each in its own process (peak RSS from `wait4`):
  (a) `prepare`: `configs/prepare.py:tiny` on the files (the DirectRunner's worker processes are separate
      and not counted; they stream one block of documents at a time);
  (b) `train`: `configs/pretrain_forget.py` (tiny) for `--steps` updates reading the prepared corpus.
With the reader streaming shards through grain, (b) should not grow with the corpus.

Run: `python benchmarks/train_memory.py [--steps 100] [--scales 1,20]`.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_corpus(out: str, scale: int, files: int = 4) -> str:
  from rewire.data.sources import load_documents
  docs = load_documents("bundled:en_web")
  os.makedirs(out, exist_ok=True)
  rng = random.Random(scale)
  copies = [d for _ in range(scale) for d in docs]
  rng.shuffle(copies)
  for i in range(files):
    with open(os.path.join(out, f"part-{i}.txt"), "w") as f:
      f.write("\n\n".join(copies[i::files]) + "\n")
  return os.path.join(out, "*.txt")


def peak_rss_mb(cmd: list[str]) -> float:
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  _, status, usage = os.wait4(proc.pid, 0)
  err = proc.stderr.read().decode()
  if status != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
  return usage.ru_maxrss / 1024


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=100)
  ap.add_argument("--scales", default="1,20")
  args = ap.parse_args()
  work = tempfile.mkdtemp(prefix="rewire-mem-")
  rows = []
  for scale in [int(x) for x in args.scales.split(",")]:
    pattern = write_corpus(os.path.join(work, f"text{scale}"), scale)
    size = sum(os.path.getsize(os.path.join(os.path.dirname(pattern), f)) for f in os.listdir(os.path.dirname(pattern)))
    data = os.path.join(work, f"data{scale}")
    prep = peak_rss_mb([sys.executable, "-m", "rewire.main", "--config=configs/prepare.py", f"--workdir={data}",
                        f"--config.data.source=files:{pattern}"])
    train = peak_rss_mb([sys.executable, "-m", "rewire.main", "--config=configs/pretrain_forget.py",
                         f"--workdir={os.path.join(work, f'run{scale}')}", f"--config.data.source=prepared:{data}",
                         f"--config.total_steps={args.steps}", f"--config.eval_every={args.steps}",
                         f"--config.checkpoint_every={args.steps}"])
    rows.append((scale, size, prep, train))
  print("| corpus | text | prepare peak RSS | train peak RSS |\n|---|---|---|---|")
  for scale, size, prep, train in rows:
    print(f"| {scale}x bundled | {size / 1e6:.0f} MB | {prep:.0f} MB | {train:.0f} MB |")
  if len(rows) > 1:
    print(f"train RSS ratio {rows[-1][0]}x / {rows[0][0]}x corpus: {rows[-1][3] / rows[0][3]:.3f}")


if __name__ == "__main__":
  main()
