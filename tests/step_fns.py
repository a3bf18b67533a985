"""Step functions for the tests of `rewire.steps`: imported by the Ray workers (PYTHONPATH holds tests/)."""

import os
import signal
import time

from rewire.errors import UserError
from rewire.steps.step import Step, ref


def record(config, workdir):
  """Appends the step's name to `config["order"]`; fails if asked; blocks until killed while the file
  `config["block"]` exists, once it has said so through the fifo `config["fifo"]`."""
  with open(config["order"], "a") as f:
    f.write(config["name"] + "\n")
  if config.get("fail"):
    raise UserError(f"{config['name']} could not finish")
  if config.get("block") and os.path.exists(config["block"]):
    with open(config["fifo"], "w") as f:
      f.write("started\n")
    while True:  # a long step: Python runs between waits, so a cancel's KeyboardInterrupt reaches it
      time.sleep(0.05)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "inputs.txt"), "w") as f:
    f.write(repr(config.get("inputs")))
  return {"finished": True}


def diamond(tmp: str, **extra) -> list[Step]:
  """a -> (b, c) -> d, each a `record` step writing to tmp/order.txt; `extra[name]` adds config keys."""
  order = os.path.join(tmp, "order.txt")
  def step(name, *inputs):
    return Step(name, {"name": name, "order": order, "inputs": [ref(i) for i in inputs], **extra.get(name, {})},
                entry="step_fns:record", resources={"CPU": 0.5})
  return [step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")]


def pretrain_killed_once(config, workdir):
  """A pretraining step whose first attempt saves at update 10 and is then killed (SIGKILL to its own Ray
  worker, as `kill -9` would); the retry resumes from that checkpoint."""
  from rewire import stages  # here: the other step functions' workers need not import JAX
  marker = workdir + ".killed"
  if not os.path.exists(marker):
    stages.run(config, workdir, stop_after=10)
    open(marker, "w").close()
    os.kill(os.getpid(), signal.SIGKILL)
  return stages.run(config, workdir)


DRIVER = """
import sys
from step_fns import blocked_at, diamond
from rewire.steps.cluster import Settings
from rewire.steps.engine import run_graph
from rewire.steps.graph import Graph
tmp, step, address, lease_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
run_graph(Graph(diamond(tmp, **blocked_at(tmp, step)), tmp + "/root"),
          Settings(address=address, workers=1, lease_s=lease_s))
"""


def blocked_at(tmp: str, step: str) -> dict:
  """`diamond`'s extra config that makes `step` block (while tmp/block exists), saying so through tmp/fifo."""
  return {step: {"block": tmp + "/block", "fifo": tmp + "/fifo"}}


def start_driver_blocked_at(tmp: str, step: str, *, address: str = "", lease_s: float = 60.0, **popen):
  """Starts a driver of `diamond(tmp)` in a subprocess (Ray at `address`, or its own on this machine) and
  returns it once `step` runs and blocks (a bounded wait on a fifo, no polling)."""
  import select
  import subprocess
  import sys
  os.mkfifo(tmp + "/fifo")
  open(tmp + "/block", "w").close()
  proc = subprocess.Popen([sys.executable, "-c", DRIVER, tmp, step, address, str(lease_s)], **popen)
  fd = os.open(tmp + "/fifo", os.O_RDONLY | os.O_NONBLOCK)
  try:
    ready, _, _ = select.select([fd], [], [], 120)
    assert ready and os.read(fd, 64) == b"started\n", f"step {step} never started"
  finally:
    os.close(fd)
  return proc
