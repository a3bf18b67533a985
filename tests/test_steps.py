"""Steps that are safe to rerun, on a real 2-node Ray cluster on localhost (no mocks of Ray).

The graph's own rules (hashes, references, states) are checked without Ray; the engine's on a cluster that
the module starts and tears down (`ray_cluster` in conftest): order, skipping, a failure named in one line,
placement on the one node with a resource, a resource that no node has, an unreachable address, and a
driver killed mid-graph whose rerun takes over the step it left RUNNING.
"""

import io
import os
import signal
import subprocess
import sys
import time

import pytest

from rewire.errors import UserError
from rewire.steps import graph as rgraph
from rewire.steps import status
from rewire.steps.cluster import Settings, connect
from rewire.steps.engine import run_graph
from rewire.steps.graph import Graph
from rewire.steps.step import Step, ref

from step_fns import blocked_at, diamond, start_driver_blocked_at

QUIET = dict(stream=io.StringIO())
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_changed_key_reaches_exactly_the_dependent_steps_and_cadence_reaches_none(tmp_path):
  base = Graph(diamond(str(tmp_path)), str(tmp_path))
  changed = Graph(diamond(str(tmp_path), b={"lr": 0.1}), str(tmp_path))
  assert {n for n in base.order if base.hashes[n] != changed.hashes[n]} == {"b", "d"}
  cadence = Graph(diamond(str(tmp_path), b={"log_every": 7, "data": {"workers": 3}}), str(tmp_path))
  # data.workers and log_every are UNHASHED; a key that merely looks like one is not
  assert cadence.hashes == Graph(diamond(str(tmp_path), b={"data": {}}), str(tmp_path)).hashes
  assert Graph(diamond(str(tmp_path), b={"workers": 3}), str(tmp_path)).hashes["b"] != base.hashes["b"]
  # Directories: the readable name plus the hash; a reference resolves to the input's directory.
  assert base.dirs["d"] == os.path.join(str(tmp_path), f"d-{base.hashes['d']}")
  assert base.config("d")["inputs"] == [base.dirs["b"], base.dirs["c"]]
  assert base.order.index("a") < base.order.index("b") < base.order.index("d")
  # A study moved to another root keeps its hashes (references, not paths, are hashed).
  assert Graph(diamond(str(tmp_path)), "/elsewhere").hashes == base.hashes
  with pytest.raises(ValueError, match="unknown steps"):
    Graph([Step("x", {"in": ref("nowhere")})], str(tmp_path))
  with pytest.raises(ValueError, match="a cycle"):
    Graph([Step("p", {"in": ref("q")}), Step("q", {"in": ref("p")})], str(tmp_path))


def test_states_say_what_a_run_does_and_the_dry_run_prints_them(tmp_path):
  g = Graph(diamond(str(tmp_path)), str(tmp_path))
  now = time.time()
  status.write(g.dirs["a"], status.SUCCESS)
  status.write(g.dirs["b"], status.RUNNING, owner="other", heartbeat=now, lease_s=60)
  status.write(g.dirs["c"], status.RUNNING, owner="other", heartbeat=now - 61, lease_s=60)
  status.write(g.dirs["d"], status.FAILED, error="boom", log="/x.log")
  assert [g.action(n, owner="me", now=now) for n in "abcd"] == [rgraph.SKIP, rgraph.WAIT, rgraph.TAKE_OVER,
                                                                 rgraph.STOP]
  assert g.action("b", owner="other", now=now) == rgraph.TAKE_OVER  # a retry of the same driver run
  assert g.action("d", rerun_failed=True) == rgraph.RERUN
  out = io.StringIO()
  assert run_graph(g, Settings(), dry_run=True, stream=out) == {}
  lines = out.getvalue().splitlines()
  assert lines[0].split() == ["step", "hash", "state", "a", "run", "would", "directory"]
  assert lines[1].split()[:4] == ["a", g.hashes["a"], "SUCCESS", "skip"]
  assert "wait (lease held by" in lines[2] and "take over" in lines[3] and "stop" in lines[4]
  with pytest.raises(UserError, match=r"step d failed: boom -- see /x.log; .*rerun_failed=True"):
    run_graph(g, Settings(), **QUIET)  # a FAILED step stops the graph before anything runs


def test_a_lease_beats_until_released():
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    with status.Lease(d, step="s", digest="h", owner="o", lease_s=0.2, log="l") as lease:
      first = status.read(d)
      assert first["state"] == status.RUNNING and not status.expired(first)
      deadline = time.time() + 30
      while status.read(d)["heartbeat"] == first["heartbeat"] and time.time() < deadline:
        time.sleep(0.02)  # the heartbeat thread refreshes every lease_s / 4
      assert status.read(d)["heartbeat"] > first["heartbeat"]
      lease.release(status.RUNNING)  # handed back: expired at once
    assert status.read(d)["state"] == status.RUNNING and status.expired(status.read(d))


def test_an_unreachable_address_is_one_line():
  with pytest.raises(UserError, match=r"cannot reach the Ray cluster at 127.0.0.1:9: nothing answers"):
    connect("127.0.0.1:9")


def test_the_study_command_reaches_ray_before_jax_starts_its_backend(tmp_path):
  """Ray forks its node processes with a Python `preexec_fn`, unsafe beside XLA's threads: the command line
  must reach `ray.init` with JAX's backend (and its thread pools) not yet started."""
  probe = (
    "import sys, ray, jax._src.xla_bridge as xb\n"
    "def init(*a, **k):\n"
    "  print('backend started:', xb.backends_are_initialized(), flush=True)\n"
    "  raise SystemExit(0)\n"
    "ray.init = init\n"
    "from absl import app\n"
    "from rewire import main\n"
    f"sys.argv = ['rewire.main', '--config={ROOT}/configs/study.py:micro', '--workdir={tmp_path}/study']\n"
    "app.run(main.main, flags_parser=main.parse_flags)\n")
  out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
  assert "backend started: False" in out.stdout, out.stdout + out.stderr[-2000:]


def test_steps_run_in_order_once_and_a_failure_names_the_step_and_its_log(ray_cluster, tmp_path):
  settings = Settings(address=ray_cluster.address)
  g = Graph(diamond(str(tmp_path)), str(tmp_path))
  timings = run_graph(g, settings, **QUIET)
  ran = open(tmp_path / "order.txt").read().split()
  assert sorted(ran) == ["a", "b", "c", "d"] and set(timings) == set(ran) and ran[0] == "a" and ran[-1] == "d"
  assert all(g.record(n)["state"] == status.SUCCESS for n in g.order)
  assert run_graph(g, settings, **QUIET) == {}  # every step SUCCESS: nothing runs again
  bad = Graph(diamond(str(tmp_path), c={"fail": True}), str(tmp_path))
  with pytest.raises(UserError, match=r"step c failed: c could not finish -- see .*logs/c-\w+\.log"):
    run_graph(bad, settings, **QUIET)
  assert "rewire: error: c could not finish" in open(bad.log("c")).read()
  assert bad.record("c")["state"] == status.FAILED and bad.record("d") is None
  with pytest.raises(UserError, match="rerun_failed=True"):  # stays stopped until asked to rerun
    run_graph(bad, settings, **QUIET)
  with pytest.raises(UserError, match="step c failed"):
    run_graph(bad, Settings(address=ray_cluster.address, rerun_failed=True), **QUIET)
  assert open(tmp_path / "order.txt").read().split().count("c") == 3


def test_a_step_runs_on_the_one_node_with_its_resource_and_one_no_node_has_times_out(ray_cluster, tmp_path):
  steps = diamond(str(tmp_path))
  steps[3].resources = {"CPU": 0.5, "second_node": 1}
  g = Graph(steps, str(tmp_path))
  run_graph(g, Settings(address=ray_cluster.address), **QUIET)
  assert g.record("d")["node"] == ray_cluster.second
  steps[3].resources = {"CPU": 1, "TPU": 4}
  g = Graph(steps, str(tmp_path / "tpu"))
  t0 = time.perf_counter()
  with pytest.raises(UserError, match=r"step d asks for TPU=4 \(the most any node has: 0\), which no node .* after 2 s"):
    run_graph(g, Settings(address=ray_cluster.address, schedule_timeout_s=2), **QUIET)
  assert time.perf_counter() - t0 < 60


def test_a_killed_driver_s_rerun_skips_what_succeeded_and_takes_over_the_step_it_left_running(ray_cluster, tmp_path):
  tmp = str(tmp_path)
  driver = start_driver_blocked_at(tmp, "b", address=ray_cluster.address, lease_s=2,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  driver.send_signal(signal.SIGKILL)
  driver.wait(60)
  os.remove(tmp + "/block")  # b will finish when taken over
  g = Graph(diamond(tmp, **blocked_at(tmp, "b")), tmp + "/root")
  states = {n: status.state(g.record(n)) for n in g.order}
  assert states["a"] == status.SUCCESS and states["b"] == status.RUNNING and states["d"] == status.PENDING
  done_before = {n for n, s in states.items() if s == status.SUCCESS}
  out = io.StringIO()
  timings = run_graph(g, Settings(address=ray_cluster.address, lease_s=2), stream=out)
  assert set(timings) == set(g.order) - done_before  # b (taken over), d, and c if it had not finished
  assert "taking over b: its lease expired" in out.getvalue()
  assert open(tmp + "/order.txt").read().split().count("a") == 1


def test_a_bad_resource_amount_is_one_line():
  import ml_collections
  from rewire.steps.cluster import step_resources
  config = ml_collections.ConfigDict(dict(resources="CPU=1,GPU=2", pretrain_resources=""))
  assert step_resources(config) == ({"CPU": 1.0, "GPU": 2.0}, {"CPU": 1.0, "GPU": 2.0})
  config.pretrain_resources = "GPU=eight"
  with pytest.raises(UserError, match=r"pretrain_resources entry GPU='eight': the amount must be a number"):
    step_resources(config)
