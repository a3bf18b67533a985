"""Launch scripts, exercised as far as a CPU allows: dry runs, and a real CPU run of the plan they launch."""

import json
import os
import subprocess
import sys

from conftest import QUICK_COMPILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*args, env_extra=None):
  env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
             XLA_FLAGS=QUICK_COMPILE, PYTHONPATH=ROOT, **(env_extra or {}))
  return subprocess.run(["bash", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_tpu_pod_dry_run_creates_installs_and_runs_on_all_workers():
  out = sh("launch/tpu_pod.sh", "--dry-run", "--name", "rw", "--zone", "us-central2-b", "--type", "v4-64", "--",
           "--config=configs/pretrain_forget.py:base", "--workdir=/mnt/shared/runs/f")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert lines[0].startswith("gcloud compute tpus tpu-vm create rw --zone=us-central2-b --accelerator-type=v4-64")
  ssh = [l for l in lines if " tpu-vm ssh " in l]
  assert len(ssh) == 2 and all("--worker=all" in l for l in ssh)
  assert "rewire\\[tpu\\]" in ssh[0]
  assert "python\\ -m\\ rewire.main\\ --distributed=on\\ --config=configs/pretrain_forget.py:base" in ssh[1]
  assert any("tpu-vm scp" in l and "--worker=all" in l for l in lines)


def test_tpu_pod_requires_name_and_zone():
  out = sh("launch/tpu_pod.sh", "--dry-run", "--", "--config=configs/pretrain_forget.py")
  assert out.returncode == 2 and "--name and --zone are required" in out.stderr


def test_slurm_dry_run_uses_srun_and_distributed():
  out = sh("launch/slurm.sbatch", "--config=configs/pretrain_forget.py:base", env_extra={"DRY_RUN": "1"})
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == ("srun --kill-on-bad-exit=1 python -m rewire.main --distributed=on "
                                "--config=configs/pretrain_forget.py:base")
  text = open(os.path.join(ROOT, "launch", "slurm.sbatch")).read()
  assert "#SBATCH --ntasks-per-node=1" in text and "#SBATCH --signal=TERM@" in text


def test_gpu_node_runs_the_main_entry_point():
  dry = sh("launch/gpu_node.sh", "--dry-run", "--gpus", "0,1", "--", "--config=configs/pretrain_forget.py")
  assert dry.returncode == 0, dry.stderr
  assert "CUDA_VISIBLE_DEVICES=0,1" in dry.stdout
  assert "python -m rewire.main --distributed=off --config=configs/pretrain_forget.py" in dry.stdout
  # For real (on this CPU): the launched command checks the paper's recipe and prints its plan.
  out = sh("launch/gpu_node.sh", "--", "--config=configs/pretrain_forget.py:base", "--dry_run")
  assert out.returncode == 0, out.stderr[-2000:]
  plan = json.loads(out.stdout)
  assert 124e6 < plan["params"] < 125e6  # RoBERTa-base with a 50k vocabulary
  assert plan["tokens_per_step"] == 2048 * 512 and plan["forget_every"] == 1000


def test_the_local_launcher_checks_its_arguments_in_one_line(tmp_path):
  import socket
  taken = socket.socket()
  taken.bind(("127.0.0.1", 0))
  taken.listen()
  port = str(taken.getsockname()[1])
  for args, expect in ((["--devices"], "--devices needs a value"),
                       (["--devices", "--workdir=x", "--", "a"], "--devices needs a value"),
                       (["--devices", "abc", "--", "a"], "--devices must be a positive integer, got 'abc'"),
                       (["--devices", "0", "--", "a"], "--devices must be a positive integer, got '0'"),
                       (["--port", port, "--", "--config=configs/pretrain_forget.py"], f"port {port} is in use")):
    out = sh("launch/local_multiprocess.sh", "2", *args)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and expect in lines[0], (args, out.stderr)
  taken.close()


def test_the_local_launcher_stops_the_job_when_one_process_fails(tmp_path):
  """Process 0 fails at start; process 1 ignores SIGTERM (as a process stuck joining would): the launcher
  kills it after the grace period and exits with process 0's status."""
  fake = tmp_path / "python"
  fake.write_text(f"""#!/usr/bin/env bash
[[ "$1" == "-c" ]] && exec {sys.executable} "$@"
if [[ "$JAX_PROCESS_ID" == 0 ]]; then  # fails once process 1 is up and ignoring SIGTERM
  until [[ -s {tmp_path}/survivor.pid ]]; do sleep 0.05; done
  echo "cannot join" >&2; exit 3
fi
trap '' TERM
echo $$ > {tmp_path}/survivor.tmp && mv {tmp_path}/survivor.tmp {tmp_path}/survivor.pid
exec sleep 300
""")
  fake.chmod(0o755)
  import time
  t0 = time.monotonic()
  out = sh("launch/local_multiprocess.sh", "2", "--grace", "2", "--", "--config=x", env_extra={"PYTHON": str(fake)})
  elapsed = time.monotonic() - t0
  assert out.returncode == 3, out.stderr
  assert "process 0 exited with status 3; stopping the other 1" in out.stderr
  assert elapsed < 30
  pid = int((tmp_path / "survivor.pid").read_text())
  assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def _rewire_process(pid, port, *flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=ROOT, JAX_NUM_PROCESSES="2",
             JAX_PROCESS_ID=str(pid), JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}")
  return subprocess.run([sys.executable, "-m", "rewire.main", "--config=configs/pretrain_forget.py",
                         "--distributed=on", *flags], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_a_job_that_cannot_form_ends_each_process_with_one_line(tmp_path):
  import socket
  import time
  with socket.socket() as s:  # a port nobody listens on: process 1's coordinator never comes up
    s.bind(("127.0.0.1", 0))
    free = s.getsockname()[1]
  t0 = time.monotonic()
  out = _rewire_process(1, free, "--join_timeout=3", f"--workdir={tmp_path / 'a'}")
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert out.returncode == 2 and len(lines) == 1 and "did not form within 3 s" in lines[0], out.stderr[-3000:]
  assert time.monotonic() - t0 < 60
  with socket.socket() as taken:  # process 0's coordinator port is taken by another program
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    out = _rewire_process(0, taken.getsockname()[1], f"--workdir={tmp_path / 'b'}")
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert out.returncode == 2 and len(lines) == 1 and "is in use" in lines[0], out.stderr[-3000:]
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
