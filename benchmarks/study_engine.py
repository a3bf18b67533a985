"""The study's engine: the micro study on Ray started on this machine against the process pool it replaced.

    python benchmarks/study_engine.py [--pool_commit e0c4b5f] [--rounds 1]

Both sides run `configs/study.py:micro` (one seed, no probe-only language: 15 steps) as a fresh command in
a fresh directory, one after the other, in the same run of this script:

- **pool**: the tree of `--pool_commit` (the last commit with `rewire/study/jobs.py`, a `multiprocessing`
  pool of spawned children, two at a time, pinned to cores), unpacked with `git archive` into a temporary
  directory and run from there;
- **ray**: this tree, whose driver starts Ray on this machine (`ray.init`) and sends each step to it.

For each it prints the wall time of the whole command, the driver's peak resident memory (its own process,
from `getrusage` at exit), and the peak summed resident memory of everything the command started (the
driver, its step processes, and Ray's own daemons on the ray side), sampled every 0.5 s with psutil.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = ("import atexit, resource, runpy, sys\n"
          "atexit.register(lambda: print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
          "file=sys.stderr, flush=True))\n"
          "import rewire; print('REWIRE_FROM', rewire.__file__, file=sys.stderr, flush=True)\n"
          "sys.argv = ['rewire.main'] + sys.argv[1:]\n"
          "runpy.run_module('rewire.main', run_name='__main__')\n")
FLAGS = ["--config=configs/study.py:micro", "--config.seeds=0,", "--config.relearn="]


def _tree_rss(proc: psutil.Process) -> int:
  total = 0
  for p in [proc, *proc.children(recursive=True)]:
    try:
      total += p.memory_info().rss
    except psutil.Error:
      pass
  return total


def _ray_daemons_rss(before: set[int]) -> int:
  """Resident memory of Ray processes started since `before` (Ray's daemons are not the driver's children
  once they detach: gcs_server, raylet, and their helpers)."""
  total = 0
  for p in psutil.process_iter(["pid", "name", "cmdline"]):
    if p.info["pid"] in before:
      continue
    cmd = " ".join(p.info["cmdline"] or [])
    if "ray" in cmd and ("gcs_server" in cmd or "raylet" in cmd or "ray/_private" in cmd or "ray::" in cmd):
      try:
        total += p.memory_info().rss
      except psutil.Error:
        pass
  return total


def run(side: str, cwd: str, workdir: str) -> dict:
  env = dict(os.environ, PYTHONPATH=cwd, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  before = {p.pid for p in psutil.process_iter(["pid"])}
  t0 = time.perf_counter()
  proc = subprocess.Popen([sys.executable, "-c", DRIVER, *FLAGS, f"--workdir={workdir}"], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  handle, peak_all = psutil.Process(proc.pid), 0
  while proc.poll() is None:
    try:
      peak_all = max(peak_all, _tree_rss(handle) + (_ray_daemons_rss(before) if side == "ray" else 0))
    except psutil.Error:
      pass
    time.sleep(0.5)
  out, err = proc.communicate()
  wall = time.perf_counter() - t0
  if proc.returncode != 0:
    raise SystemExit(f"{side} failed ({proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
  peak = next(int(l.split()[1]) for l in err.splitlines() if l.startswith("PEAK_RSS_KB"))
  source = next(l.split()[1] for l in err.splitlines() if l.startswith("REWIRE_FROM"))
  assert source.startswith(cwd), f"{side} imported rewire from {source}, not from {cwd}"
  return {"wall_s": wall, "driver_peak_mib": peak / 1024, "all_peak_mib": peak_all / 2**20}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pool_commit", default="e0c4b5f")
  parser.add_argument("--rounds", type=int, default=1)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    pool_tree = os.path.join(tmp, "pool_tree")
    os.makedirs(pool_tree)
    archive = subprocess.run(["git", "archive", args.pool_commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", pool_tree], input=archive, check=True)
    rows = []
    for r in range(args.rounds):
      for side, cwd in (("pool", pool_tree), ("ray", ROOT)):
        result = run(side, cwd, os.path.join(tmp, f"{side}{r}"))
        rows.append((side, result))
        print(f"{side:5s} round {r}: wall {result['wall_s']:.1f} s, driver peak {result['driver_peak_mib']:.0f} MiB, "
              f"all processes peak {result['all_peak_mib']:.0f} MiB", flush=True)
  print("\n| side | wall (s) | driver peak RSS (MiB) | peak RSS of all its processes (MiB) |\n|---|---|---|---|")
  for side, res in rows:
    print(f"| {side} | {res['wall_s']:.1f} | {res['driver_peak_mib']:.0f} | {res['all_peak_mib']:.0f} |")


if __name__ == "__main__":
  main()
