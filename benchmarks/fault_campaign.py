"""A randomised fault campaign against one workdir: kill -9, damaged checkpoints, a second process.

1. A reference run of a small forgetting config goes through uninterrupted (`python -m rewire.main`).
2. The same command is run again and again on a second workdir; each attempt is killed with SIGKILL at a
   random moment (also during asynchronous checkpoint saves), `--cycles` times. Between attempts, with
   probability `--corrupt`, a random file of the newest checkpoint is damaged (truncated, emptied,
   deleted or bytes flipped). Once, while an attempt runs, a second process is started on the same
   workdir; it must stop at once with one `rewire: error:` line and exit status 2.
3. The run is then let finish. It must end bit-identical to the reference (every parameter, every logged
   loss and the reset steps), with every damaged checkpoint kept aside in `damaged_checkpoints/`.

Run: `python benchmarks/fault_campaign.py [--cycles 20] [--seed 0]`; it prints its figures and exits 1
if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STEPS = 400


def command(workdir: str, corpus: str) -> list[str]:
  flags = {"total_steps": STEPS, "forget_every": 40, "batch_size": 16, "log_every": 5, "eval_every": 60,
           "checkpoint_every": 10, "model.hidden_size": 32, "model.num_layers": 1, "model.num_heads": 2,
           "model.intermediate_size": 64, "data.source": f"prepared:{corpus}", "data.seq_len": 32,
           "data.max_valid_sequences": 32, "optim.lr": 3e-3, "optim.warmup_steps": 10}
  return [sys.executable, "-m", "rewire.main", "--config=configs/pretrain_forget.py", f"--workdir={workdir}",
          *(f"--config.{k}={v}" for k, v in flags.items())]


ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
           TOKENIZERS_PARALLELISM="false")


def prepare_corpus(root: str) -> str:
  out = os.path.join(root, "corpus")
  subprocess.run([sys.executable, "-m", "rewire.main", "--config=configs/prepare.py", f"--workdir={out}",
                  "--config.data.seq_len=32", "--config.data.vocab_size=400"], cwd=ROOT, env=ENV, check=True,
                 capture_output=True)
  return out


def damage(workdir: str, rng: random.Random) -> str | None:
  ckpts = os.path.join(workdir, "checkpoints")
  steps = sorted((int(s) for s in os.listdir(ckpts) if s.isdigit()), reverse=True) if os.path.isdir(ckpts) else []
  if not steps:
    return None
  files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(ckpts, str(steps[0]))) for f in fs]
  if not files:
    return None
  path, kind = rng.choice(files), rng.choice(["truncate", "empty", "delete", "flip"])
  data = open(path, "rb").read()
  if kind == "delete":
    os.remove(path)
  else:
    if kind == "flip" and data:
      b = bytearray(data)
      for i in range(min(8, len(b))):
        b[(len(b) // 2 + i) % len(b)] ^= 0xA5
      data = bytes(b)
    with open(path, "wb") as f:
      f.write(b"" if kind == "empty" else data[: len(data) // 2] if kind == "truncate" else data)
  return f"{kind} {os.path.relpath(path, workdir)}"


def _latest(workdir: str) -> int | None:
  ckpts = os.path.join(workdir, "checkpoints")
  steps = [int(s) for s in os.listdir(ckpts) if s.isdigit()] if os.path.isdir(ckpts) else []
  return max(steps) if steps else None


def records(workdir: str) -> tuple[list, list]:
  from rewire.telemetry import read_records
  recs = read_records(os.path.join(workdir, "metrics.jsonl"))
  return ([(r["step"], r["loss"]) for r in recs if "loss" in r and "event" not in r],
          [r["step"] for r in recs if r.get("event") == "forget"])


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--cycles", type=int, default=20)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--corrupt", type=float, default=0.4, help="chance of damaging the newest checkpoint per cycle")
  args = ap.parse_args()
  rng = random.Random(args.seed)
  root = tempfile.mkdtemp(prefix="rewire-faults-")
  corpus = prepare_corpus(root)
  ref, run = os.path.join(root, "reference"), os.path.join(root, "campaign")
  t0 = time.time()
  subprocess.run(command(ref, corpus), cwd=ROOT, env=ENV, check=True, capture_output=True)
  ref_seconds = time.time() - t0

  kills = corruptions = refusals = finished_early = 0
  notes, reached, t0 = [], [], time.time()
  for cycle in range(args.cycles):
    proc = subprocess.Popen(command(run, corpus), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(rng.uniform(3.0, 10.0))  # start-up (imports, compile) takes ~5 s here
    if cycle == args.cycles // 2 and proc.poll() is None:  # a second process on the same workdir
      second = subprocess.run(command(run, corpus), cwd=ROOT, env=ENV, capture_output=True, text=True)
      lines = [l for l in second.stderr.splitlines() if l.strip()]
      if second.returncode == 2 and len(lines) == 1 and "is in use by another" in lines[0]:
        refusals += 1
      else:
        notes.append(f"second process: exit {second.returncode}, stderr {second.stderr[-300:]!r}")
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      kills += 1
    else:
      finished_early += proc.returncode == 0
    proc.wait()
    reached.append(_latest(run))
    if rng.random() < args.corrupt:
      what = damage(run, rng)
      if what:
        corruptions += 1
        notes.append(f"cycle {cycle}: {what}")
  final = subprocess.run(command(run, corpus), cwd=ROOT, env=ENV, capture_output=True, text=True)
  campaign_seconds = time.time() - t0

  from rewire.workdir import load_params
  import numpy as np
  import jax
  ok = final.returncode == 0
  a, _ = load_params(ref)
  b, step = load_params(run)
  same_params = step == STEPS and all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  same_metrics = records(ref) == records(run)
  aside = os.path.join(run, "damaged_checkpoints")
  kept = len([d for d in os.listdir(aside) if os.path.isdir(os.path.join(aside, d))]) if os.path.isdir(aside) else 0
  print(json.dumps({"cycles": args.cycles, "kill_9": kills, "finished_before_a_kill": finished_early,
                    "checkpoint_corruptions": corruptions, "damaged_checkpoints_kept_aside": kept,
                    "second_process_refused": refusals, "final_exit": final.returncode,
                    "newest_checkpoint_after_each_cycle": reached,
                    "bit_identical_params": same_params, "identical_metrics": same_metrics,
                    "reference_seconds": round(ref_seconds, 1), "campaign_seconds": round(campaign_seconds, 1)},
                   indent=1))
  for n in notes:
    print(" ", n)
  if not ok:
    print(final.stderr[-2000:])
  return 0 if ok and same_params and same_metrics and refusals == 1 else 1


if __name__ == "__main__":
  sys.exit(main())
