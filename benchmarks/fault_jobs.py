"""A fault campaign against multi-process jobs: kill -9 and SIGTERM of one process, in and out of saves, a
divergence with a save in flight, and a full disk during a save.

Every job is `python -m rewire.main --distributed=on` in P processes on localhost (1 CPU device each,
asynchronous checkpoints every 5 updates), joined through a coordinator on a free port.

1. A reference job runs uninterrupted.
2. The same job is started again and again on a campaign workdir. Each time, one process picked at random
   gets SIGKILL or SIGTERM, either at a random moment or the moment a save's temporary folder appears
   (a save in flight). A cycle is clean when every process has exited within the heartbeat timeout:
   - SIGTERM: all exit 143, each with one `rewire: preempted at step N` line, the same N, and step N sealed;
   - SIGKILL: every other process exits with one `rewire: error:` line, and no traceback.
3. The job is then let finish: it must be bit-identical to the reference (parameters, logged losses, resets).
4. A divergence (lr 1e9, a save every 2 updates): every process exits 2 with one line naming a sealed
   checkpoint, and no temporary folder is left.
5. A full disk (a tmpfs sized to fill during the third save; needs root to mount, else skipped with a
   line): every process exits with one line naming a sealed checkpoint, no temporary folder is left; the
   disk is then grown and the rerun finishes bit-identical to the reference.
In 4 and 5 the line must be all that a process writes to stderr.

Run: `python benchmarks/fault_jobs.py [--processes 3] [--cycles 8] [--seed 0] [--cases full_disk]`; it
prints a tally and exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fault_campaign import prepare_corpus, records  # noqa: E402

STEPS, SAVE_EVERY = 60, 5
EXIT_WAIT_S = 30 + 60  # the heartbeat timeout (rewire.stages.multihost), and time to write and exit


def flags(corpus: str, processes: int, **extra) -> list[str]:
  values = {"total_steps": STEPS, "forget_every": 20, "batch_size": 8 * processes, "log_every": 5,
            "eval_every": 30, "checkpoint_every": SAVE_EVERY, "model.hidden_size": 32, "model.num_layers": 1,
            "model.num_heads": 2, "model.intermediate_size": 64, "data.source": f"prepared:{corpus}",
            "data.seq_len": 32, "data.max_valid_sequences": 32, "optim.lr": 3e-3, "optim.warmup_steps": 10,
            **extra}
  return [f"--config.{k}={v}" for k, v in values.items()]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Job:
  """P processes of one job; each one's stderr goes to a file (a 900-line traceback must not block a pipe)."""

  def __init__(self, workdir: str, processes: int, config_flags: list[str], logs: str):
    port, self.procs, self.errs = _free_port(), [], []
    os.makedirs(logs, exist_ok=True)
    for i in range(processes):
      env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
                 TOKENIZERS_PARALLELISM="false", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                 JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(i))
      err = os.path.join(logs, f"p{i}.err")
      self.errs.append(err)
      with open(err, "w") as f:
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "rewire.main", "--distributed=on", "--config=configs/pretrain_forget.py",
             f"--workdir={workdir}", *config_flags], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=f))

  def wait(self, timeout: float) -> tuple[list[int | None], bool]:
    """Exit statuses (None: still running when the time ran out, then killed), and whether any hung."""
    deadline, hung = time.time() + timeout, False
    for p in self.procs:
      try:
        p.wait(max(0.1, deadline - time.time()))
      except subprocess.TimeoutExpired:
        hung = True
    codes = [p.poll() for p in self.procs]
    for p in self.procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    return codes, hung

  def stderr(self, i: int) -> str:
    with open(self.errs[i]) as f:
      return f.read()


def _tmp_folders(workdir: str) -> list[str]:
  ckpts = os.path.join(workdir, "checkpoints")
  return [n for n in os.listdir(ckpts) if "tmp" in n] if os.path.isdir(ckpts) else []


def _sealed(workdir: str, step: str) -> bool:
  return os.path.isfile(os.path.join(workdir, "checkpoint_checksums", f"{step}.json"))


def _error_lines(text: str) -> list[str]:
  return [l for l in text.splitlines() if l.startswith("rewire: error:")]


def _named_checkpoint(line: str) -> str | None:
  """The checkpoint an error line names: "(last checkpoint: N)" or "checkpoint N is intact"."""
  if "last checkpoint: " in line:
    return line.split("last checkpoint: ")[1].split(")")[0]
  words = line.split()
  for i in range(len(words) - 2):
    if words[i] == "checkpoint" and words[i + 2:i + 4] == ["is", "intact"]:
      return words[i + 1]
  return None


def _wait_for_save(workdir: str, job: Job, limit_s: float) -> bool:
  """Polls until a save's temporary folder appears (True), or the job ends or time runs out (False)."""
  deadline = time.time() + limit_s
  while time.time() < deadline and all(p.poll() is None for p in job.procs):
    if _tmp_folders(workdir):
      return True
    time.sleep(0.005)
  return False


def same_run(a: str, b: str) -> dict:
  from rewire.workdir import load_params
  import jax
  import numpy as np
  pa, _ = load_params(a)
  pb, step = load_params(b)
  params = step == STEPS and all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)))
  return {"bit_identical_params": bool(params), "identical_losses_and_resets": records(a) == records(b)}


def fault_cycle(run: str, corpus: str, args, rng: random.Random, cycle: int) -> dict:
  kind = rng.choice(["kill9", "sigterm"])
  in_save = rng.random() < 0.5
  victim = rng.randrange(args.processes)
  job = Job(run, args.processes, flags(corpus, args.processes), os.path.join(args.root, "logs", f"cycle{cycle}"))
  if in_save:
    in_save = _wait_for_save(run, job, 120)
  else:
    time.sleep(rng.uniform(5.0, 25.0))  # start-up (imports, join, compile) takes ~10 s with 3 processes here
  fired = all(p.poll() is None for p in job.procs)
  if fired:
    job.procs[victim].send_signal(signal.SIGKILL if kind == "kill9" else signal.SIGTERM)
  codes, hung = job.wait(EXIT_WAIT_S)
  out = {"cycle": cycle, "fault": kind if fired else "none (the job had ended)", "in_save": in_save and fired,
         "victim": victim, "exit": codes, "hung": hung}
  texts = [job.stderr(i) for i in range(args.processes)]
  if not fired:
    out["clean"] = not hung and all(c == 0 for c in codes)
  elif kind == "sigterm":
    lines = [[l for l in t.splitlines() if l.startswith("rewire: preempted at step")] for t in texts]
    steps = {l[0].split("step ")[1].split(":")[0] for l in lines if len(l) == 1}
    out["stopped_at"] = sorted(steps)
    out["clean"] = (not hung and codes == [143] * args.processes and all(len(l) == 1 for l in lines)
                    and len(steps) == 1 and _sealed(run, next(iter(steps))))
  else:
    others = [i for i in range(args.processes) if i != victim]
    out["clean"] = (not hung and codes[victim] == -signal.SIGKILL
                    and all(codes[i] not in (0, None) and len(_error_lines(texts[i])) == 1
                            and "Traceback" not in texts[i] for i in others))
  if not out["clean"]:
    out["stderr_tails"] = [t[-600:] for t in texts]
  return out


def stopped_with_one_line(job: Job, codes, hung, workdir: str, processes: int) -> dict:
  """The check for a run that must stop: one error line per process and nothing else on its stderr, naming
  a sealed checkpoint, no tmp."""
  texts = [job.stderr(i) for i in range(processes)]
  lines = [_error_lines(t) for t in texts]
  only = all([l for l in t.splitlines() if l.strip()] == e for t, e in zip(texts, lines))
  named = {_named_checkpoint(l[0]) for l in lines if len(l) == 1}
  out = {"exit": codes, "hung": hung, "named_checkpoint": sorted(n or "-" for n in named),
         "tmp_left": _tmp_folders(workdir)}
  out["only_the_line"] = only
  out["clean"] = (not hung and only and all(c not in (0, None) for c in codes) and all(len(l) == 1 for l in lines)
                  and len(named) == 1 and None not in named and _sealed(workdir, next(iter(named)))
                  and not out["tmp_left"])
  if not out["clean"]:
    out["stderr_tails"] = [t[-600:] for t in texts]
  return out


def divergence(corpus: str, args) -> dict:
  wd = os.path.join(args.root, "diverged")
  job = Job(wd, args.processes, flags(corpus, args.processes, **{"optim.lr": 1e9, "checkpoint_every": 2}),
            os.path.join(args.root, "logs", "diverged"))
  codes, hung = job.wait(EXIT_WAIT_S + 120)
  return stopped_with_one_line(job, codes, hung, wd, args.processes)


def full_disk(corpus: str, reference: str, args) -> dict:
  """A tmpfs that fills during the third save; then grown, and the run resumed to the end."""
  one = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(reference, "checkpoints", str(STEPS)))
            for f in fs)
  rest = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(reference) for f in fs
             if "checkpoints" not in r)
  size_kb = (rest + int(2.5 * one)) // 1024 + 64
  mount = os.path.join(args.root, "small_disk")
  os.makedirs(mount, exist_ok=True)
  if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", mount], capture_output=True).returncode:
    return {"skipped": "mounting a tmpfs needs root; run as root to inject a full disk"}
  try:
    wd = os.path.join(mount, "run")
    job = Job(wd, args.processes, flags(corpus, args.processes), os.path.join(args.root, "logs", "full_disk"))
    codes, hung = job.wait(EXIT_WAIT_S + 120)
    out = {"disk_kb": size_kb, **stopped_with_one_line(job, codes, hung, wd, args.processes)}
    subprocess.run(["mount", "-o", f"remount,size={size_kb * 20}k", mount], check=True)
    job = Job(wd, args.processes, flags(corpus, args.processes), os.path.join(args.root, "logs", "full_disk_resume"))
    codes, hung = job.wait(EXIT_WAIT_S + 300)
    out["resumed_exit"] = codes
    out.update(same_run(reference, wd) if codes == [0] * args.processes else {"bit_identical_params": False})
    out["clean"] = out["clean"] and out["bit_identical_params"] and out.get("identical_losses_and_resets", False)
    return out
  finally:
    subprocess.run(["umount", mount], capture_output=True)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--processes", type=int, default=3)
  ap.add_argument("--cycles", type=int, default=8)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--cases", default="cycles,divergence,full_disk",
                  help="which parts to run after the reference: cycles (then the final run), divergence, full_disk")
  args = ap.parse_args()
  cases = set(args.cases.split(","))
  rng = random.Random(args.seed)
  args.root = tempfile.mkdtemp(prefix="rewire-fault-jobs-")
  corpus = prepare_corpus(args.root)
  reference, run = os.path.join(args.root, "reference"), os.path.join(args.root, "campaign")
  t0 = time.time()
  codes, _ = Job(reference, args.processes, flags(corpus, args.processes), os.path.join(args.root, "logs", "ref")).wait(900)
  if codes != [0] * args.processes:
    print(f"the reference job failed: {codes}; logs in {args.root}/logs/ref")
    return 1
  tally = {"processes": args.processes, "reference_s": round(time.time() - t0, 1), "cycles": []}
  for cycle in range(args.cycles if "cycles" in cases else 0):
    tally["cycles"].append(fault_cycle(run, corpus, args, rng, cycle))
    print(json.dumps({k: v for k, v in tally["cycles"][-1].items() if k != "stderr_tails"}), flush=True)
  if "cycles" in cases:
    codes, hung = Job(run, args.processes, flags(corpus, args.processes), os.path.join(args.root, "logs", "final")).wait(900)
    tally["final"] = {"exit": codes, **(same_run(reference, run) if codes == [0] * args.processes else {})}
  if "divergence" in cases:
    tally["divergence"] = divergence(corpus, args)
  if "full_disk" in cases:
    tally["full_disk"] = full_disk(corpus, reference, args)
  kinds = {}
  for c in tally["cycles"]:
    k = kinds.setdefault(c["fault"], {"runs": 0, "in_save": 0, "clean": 0})
    k["runs"] += 1
    k["in_save"] += bool(c["in_save"])
    k["clean"] += bool(c["clean"])
  tally["by_fault"] = kinds
  tally["seconds"] = round(time.time() - t0, 1)
  print(json.dumps({k: v for k, v in tally.items() if k != "cycles"}, indent=1))
  final, full = tally.get("final", {"bit_identical_params": True, "identical_losses_and_resets": True}), \
      tally.get("full_disk", {"skipped": "not asked for"})
  ok = (all(c["clean"] for c in tally["cycles"]) and final.get("bit_identical_params")
        and final.get("identical_losses_and_resets") and tally.get("divergence", {"clean": True})["clean"]
        and full.get("clean", "skipped" in full))
  with open(os.path.join(args.root, "tally.json"), "w") as f:
    json.dump(tally, f, indent=1)
  print(f"tally: {args.root}/tally.json ({'all clean' if ok else 'FAILURES above'})")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
