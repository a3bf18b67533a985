"""Step functions for the tests of `rewire.steps`: imported by the Ray workers (PYTHONPATH holds tests/)."""

import os
import signal
import time

from rewire import stages
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
  marker = workdir + ".killed"
  if not os.path.exists(marker):
    stages.run(config, workdir, stop_after=10)
    open(marker, "w").close()
    os.kill(os.getpid(), signal.SIGKILL)
  return stages.run(config, workdir)
