"""Multi-host, for real: jobs of 2 processes x 2 CPU devices on localhost, each a separate OS process.

The processes join one JAX job (`--distributed=on`, a coordinator on a free port, gloo collectives) and
run the ordinary command line (the uninterrupted 2-process job through `launch/local_multiprocess.sh`),
through `tests/multihost_worker.py`, which records the rows each process
fed to every step and can signal one process at a known step. The reference is the same run in one
process with 4 devices.

Tolerance: a job of 2 processes reduces gradients across processes with gloo, in another order than one
process does across its own devices, so float32 values agree to rounding, not to the bit (seen here: equal
for 10 of 12 updates, then 1e-7 apart). Losses are compared with rtol 1e-5, far above that rounding and
far below any real change (one update of a different batch moves the loss by 1e-2). Runs of the same
topology are compared bit for bit.
"""

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import K, TOTAL, losses, tiny_cli, xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
RTOL = 1e-5
TIMEOUT = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(workdir, processes: int, *overrides, config="configs/pretrain_forget.py", signal_at=None,
           flags=None, fail_save_at=None):
  """Runs one job of `processes` processes (2 devices each, or 4 for a single process); returns their
  (exit status, output) in process order. `signal_at=(process, "STEP:SIG")` signals that process only;
  `fail_save_at=(process, STEP)` fails that process's own writes of checkpoint STEP."""
  base, env = tiny_cli(workdir)
  cmd = [sys.executable, WORKER, f"--config={config}", f"--workdir={workdir}",
         *(flags if flags is not None else base[4:]), *overrides]
  devices = 4 if processes == 1 else 2
  port = _free_port()
  procs = []
  for i in range(processes):
    penv = dict(env, XLA_FLAGS=xla_flags(devices), REWIRE_TEST_FED_LOG=str(workdir) + ".fed{process}.jsonl")
    if processes > 1:
      penv.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes),
                  JAX_PROCESS_ID=str(i))
    if signal_at is not None and signal_at[0] == i:
      penv["REWIRE_TEST_SIGNAL"] = signal_at[1]
    if fail_save_at is not None and fail_save_at[0] == i:
      penv["REWIRE_TEST_FAIL_SAVE"] = str(fail_save_at[1])
    procs.append(subprocess.Popen(cmd + (["--distributed=on"] if processes > 1 else ["--distributed=off"]),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                  env=penv))
  out = []
  for p in procs:
    text, _ = p.communicate(timeout=TIMEOUT)
    out.append((p.returncode, text))
  return out


def fed(workdir, process: int) -> list[list[str]]:
  path = str(workdir) + f".fed{process}.jsonl"
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def params(workdir):
  from rewire.workdir import load_params
  import jax
  p, step = load_params(str(workdir))
  return step, [np.asarray(x) for x in jax.tree.leaves(p)]


def _ok(results):
  for code, text in results:
    assert code == 0, text[-3000:]


def through_the_launcher(workdir, tmp):
  """Runs the tiny job in 2 processes x 2 devices with `launch/local_multiprocess.sh`, whose Python runs
  `multihost_worker.py` in place of `rewire.main` (a wrapper given as $PYTHON); returns its stdout."""
  base, env = tiny_cli(workdir)
  python = os.path.join(str(tmp), "python")
  with open(python, "w") as f:
    f.write(f"""#!/usr/bin/env bash
if [[ "$1" == -m && "$2" == rewire.main ]]; then shift 2; exec {sys.executable} {WORKER} "$@"; fi
exec {sys.executable} "$@"
""")
  os.chmod(python, 0o755)
  env = dict(env, PYTHON=python, REWIRE_TEST_FED_LOG=str(workdir) + ".fed{process}.jsonl")
  out = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", "--", *base[3:]], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=TIMEOUT)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  return out.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The module's shared runs, made on first use: `runs(name)` -> workdir (`runs.stdout[name]`: what the
  launcher printed)."""
  root = tmp_path_factory.mktemp("multihost")
  made = {}

  def get(name):
    if name in made:
      return made[name]
    wd = root / name
    if name == "one_process":  # the reference: 1 process x 4 devices, uninterrupted
      _ok(launch(wd, 1))
    elif name == "two_processes":  # 2 processes x 2 devices, uninterrupted, started by the local launcher
      get.stdout[name] = through_the_launcher(wd, root)
    made[name] = wd
    return wd

  get.stdout = {}
  return get


def _close(a, b):
  assert [s for s, _ in a] == [s for s, _ in b]
  np.testing.assert_allclose([x for _, x in a], [x for _, x in b], rtol=RTOL)


def test_two_processes_give_the_losses_of_one_resets_included(runs):
  one, two = losses(runs("one_process")), losses(runs("two_processes"))
  assert len(one) == TOTAL
  _close(two, one)
  from rewire.telemetry import read_records
  resets = lambda wd: [r["step"] for r in read_records(os.path.join(str(wd), "metrics.jsonl"))
                       if r.get("event") == "forget"]
  assert resets(runs("two_processes")) == resets(runs("one_process")) == list(range(K, TOTAL, K))


def test_each_process_feeds_a_disjoint_share_and_together_the_global_batch(runs):
  single = fed(runs("one_process"), 0)
  p0, p1 = fed(runs("two_processes"), 0), fed(runs("two_processes"), 1)
  assert len(single) == len(p0) == len(p1) == TOTAL
  for step, (a, b, whole) in enumerate(zip(p0, p1, single), start=1):
    assert len(a) == len(b) == len(whole) // 2, step
    assert not set(a) & set(b), f"step {step}: both processes fed the same sequence"
    assert collections.Counter(a) + collections.Counter(b) == collections.Counter(whole), step


def test_the_local_launcher_runs_a_job_whose_process_0_alone_reports(runs):
  wd = runs("two_processes")
  lines = runs.stdout["two_processes"].splitlines()
  assert sum(l.startswith("[p0] [two_processes] step 12/12") for l in lines) == 2  # training and validation
  assert sum(l.startswith("[p0] done:") for l in lines) == 1
  assert not [l for l in lines if l.startswith("[p1] [two_processes] step") or l.startswith("[p1] done:")]
  with open(wd / "summary.json") as f:
    assert json.load(f)["finished"]


def test_the_local_launcher_dry_run_shows_one_command_per_process():
  out = subprocess.run(["bash", "launch/local_multiprocess.sh", "3", "--dry-run", "--port", "1234", "--",
                        "--config=configs/pretrain_forget.py"], capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 3
  for i, line in enumerate(lines):
    assert f"JAX_PROCESS_ID={i} " in line and "JAX_NUM_PROCESSES=3" in line
    assert "JAX_COORDINATOR_ADDRESS=127.0.0.1:1234" in line
    assert "-m rewire.main --distributed=on --config=configs/pretrain_forget.py" in line


def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes_bit_identically(runs, tmp_path):
  wd = tmp_path / "preempted"
  results = launch(wd, 2, signal_at=(1, "3:TERM"))
  codes = [code for code, _ in results]
  assert codes == [143, 143], results[0][1][-3000:]
  steps = set()
  for _, text in results:
    line = [l for l in text.splitlines() if l.startswith("rewire: preempted at step")]
    assert len(line) == 1, text[-2000:]
    steps.add(int(line[0].split("step ")[1].split(":")[0]))
  (stop,) = steps  # both processes stopped at the same update
  assert 3 <= stop < TOTAL
  assert os.path.isfile(wd / "checkpoint_checksums" / f"{stop}.json")  # complete and sealed
  _ok(launch(wd, 2))
  step, resumed = params(wd)
  ref_step, ref = params(runs("two_processes"))
  assert step == ref_step == TOTAL
  assert all(np.array_equal(a, b) for a, b in zip(resumed, ref))


def test_a_killed_process_stops_the_other_with_one_line_and_the_sealed_checkpoint_resumes(runs, tmp_path):
  wd = tmp_path / "killed"
  start = time.perf_counter()
  results = launch(wd, 2, "--config.async_checkpoints=False", signal_at=(1, "9:KILL"))
  elapsed = time.perf_counter() - start
  (code0, out0), (code1, _) = results
  assert code1 == -signal.SIGKILL
  assert code0 not in (0, 143), out0[-2000:]
  errors = [l for l in out0.splitlines() if l.startswith("rewire: error:")]
  assert len(errors) == 1 and "lost another process of the job" in errors[0], out0[-3000:]
  assert elapsed < 240  # compile and 9 updates, then the survivor stops at once (not after a timeout)
  assert sorted(p.name for p in (wd / "checkpoint_checksums").iterdir()) == ["6.json"]
  os.rename(str(wd) + ".fed0.jsonl", str(wd) + ".first0.jsonl")
  _ok(launch(wd, 1))  # two processes' checkpoint resumed in one
  _close(losses(wd), losses(runs("one_process")))
  assert fed(wd, 0) == fed(runs("one_process"), 0)[6:]  # the global batches of updates 7..12


def test_language_adaptation_and_fine_tuning_run_in_two_processes(runs, tmp_path):
  from conftest import shared_corpus, shared_tokenizer
  source = runs("one_process")
  adapt = ["--config.init_from=" + str(source), f"--config.data.source=prepared:{shared_corpus()}",
           f"--config.data.tokenizer={shared_tokenizer()}", "--config.data.seq_len=32",
           "--config.data.max_valid_sequences=32", "--config.token_budget=4000", "--config.total_steps=6",
           "--config.batch_size=16", "--config.log_every=2", "--config.eval_every=6", "--config.checkpoint_every=6",
           "--config.optim.warmup_steps=2"]
  wd = tmp_path / "adapted"
  _ok(launch(wd, 2, *adapt, config="configs/adapt_language.py", flags=[]))
  assert [s for s, _ in losses(wd)] == [2, 4, 6]
  ft = ["--config.init_from=" + str(source), "--config.epochs=1", "--config.batch_size=16",
        "--config.eval_batch_size=16", "--config.log_every=2", "--config.max_train_examples=64",
        "--config.max_len=32"]
  wd = tmp_path / "finetuned"
  _ok(launch(wd, 2, *ft, config="configs/finetune_nli.py", flags=[]))
  with open(wd / "summary.json") as f:
    summary = json.load(f)
  assert summary["finished"] and summary["steps"] == 4


def test_job_arguments_come_from_flags_then_the_environment_then_detection():
  from rewire.errors import UserError
  from rewire.stages.multihost import job_arguments, launched_multiprocess
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
  assert job_arguments(env=env) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
  assert job_arguments("h:1", 2, 0, env=env) == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 0}
  assert job_arguments(env={}) == {}  # TPU VMs, Slurm, Open MPI: JAX detects them itself
  with pytest.raises(UserError, match="process id 4 is not in"):
    job_arguments("h:1", 2, 4, env={})
  assert launched_multiprocess(env) and launched_multiprocess({"SLURM_NTASKS": "8"})
  assert not launched_multiprocess({"SLURM_NTASKS": "1"}) and not launched_multiprocess({})


def test_a_divergence_with_a_save_in_flight_ends_three_processes_with_one_line_each(tmp_path):
  """lr 1e9, a checkpoint every 2 updates (asynchronous): every process exits within 60 s with one line that
  names the newest sealed checkpoint; none hangs in a save's barrier at shutdown."""
  wd = tmp_path / "diverged"
  start = time.perf_counter()
  results = launch(wd, 3, "--config.batch_size=24", "--config.optim.lr=1e9", "--config.checkpoint_every=2")
  assert time.perf_counter() - start < 120  # compile included; the exits themselves follow at once
  for code, text in results:
    errors = [l for l in text.splitlines() if l.startswith("rewire: error:")]
    assert code == 2 and len(errors) == 1 and "diverged" in errors[0], text[-2000:]
    named = errors[0].split("last checkpoint: ")[1].rstrip(")")
    assert (wd / "checkpoint_checksums" / f"{named}.json").is_file()
  assert not [p for p in (wd / "checkpoints").iterdir() if "tmp" in p.name]


def test_a_save_that_fails_on_one_process_ends_both_with_one_line_each(tmp_path):
  """Process 1's own writes of checkpoint 6 fail in the background (a full disk on one host) while process 0
  waits for them in that save's barrier: process 1 stops with its line, process 0 with a line naming
  process 1's error, both within the heartbeat timeout (5 s here) and with nothing else on their output."""
  wd = tmp_path / "failed_save"
  start = time.perf_counter()
  (code0, out0), (code1, out1) = launch(wd, 2, "--heartbeat_timeout=5", fail_save_at=(1, 6))
  assert time.perf_counter() - start < 150  # compile and 6 updates, then the exits (orbax's own wait: 20 min)
  lines0, lines1 = ([l for l in out.splitlines() if l.startswith("rewire:")] for out in (out0, out1))
  assert code1 == 2 and len(lines1) == 1 and "saving checkpoint 6" in lines1[0], out1[-3000:]
  assert "No space left on device" in lines1[0] and "is the disk full" in lines1[0]
  assert code0 == 1 and len(lines0) == 1 and "(process 1 stopped: saving checkpoint 6" in lines0[0], out0[-3000:]
  for out in (out0, out1):  # no traceback, and no error or fatal log line (glog's E/F prefix and date)
    assert "Traceback" not in out and not [l for l in out.splitlines() if l[:1] in "EF" and l[1:5].isdigit()], out[-3000:]


def test_a_two_host_pretraining_step_on_two_ray_nodes_gives_the_losses_of_the_launcher(runs, ray_cluster, tmp_path):
  """A pretraining step of 2 hosts: 2 Ray tasks in a placement group over the cluster's 2 nodes, joined by
  jax.distributed (process 0's node hosts the coordinator), 2 devices each: the topology of
  `two_processes`, so the losses match bit for bit."""
  import io
  from conftest import tiny_config
  from rewire.steps.cluster import Settings
  from rewire.steps.engine import run_graph
  from rewire.steps.graph import Graph
  from rewire.steps.step import Step
  step = Step("pretrain", tiny_config(), hosts=2, resumes=True, resources={"CPU": 1},
              env={"XLA_FLAGS": xla_flags(2)})
  graph = Graph([step], str(tmp_path))
  run_graph(graph, Settings(address=ray_cluster.address), stream=io.StringIO())
  assert graph.record("pretrain")["state"] == "SUCCESS"
  assert losses(graph.dirs["pretrain"]) == losses(runs("two_processes"))
  for process in (0, 1):
    log = graph.log("pretrain") + (f".p{process}" if process else "")
    assert f"process {process} of 2" in open(log).read().splitlines()[0]
