"""`python -m rewire.main`, run by the multi-host tests, recording what this process feeds to every step.

Every batch this process hands to the train step is appended to `$REWIRE_TEST_FED_LOG` (one JSON line per
step: the sha1 of each row, i.e. of each sequence fed; `{process}` in the path becomes this process's id),
so a test can check the processes' shares from what they actually fed. Arguments may start with
`-m rewire.main`, as the local launcher passes them to its Python. `$REWIRE_TEST_SIGNAL=STEP:SIGNAL` makes this process send itself SIGNAL (TERM or
KILL) once it has fed STEP batches: a preemption or a crash of one process only, at a known step.
`$REWIRE_TEST_FAIL_SAVE=STEP` makes this process's own writes of checkpoint STEP fail in the background,
as a full disk would on one host, while the other processes wait for it in that save's barrier.
"""

import hashlib
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402

from rewire import loop  # noqa: E402
from rewire import main as rewire_main  # noqa: E402

_run = loop.Loop.run


def _recorded(batches, log_path, signal_at):
  for step, batch in enumerate(batches, start=1):
    rows = batch if not isinstance(batch, dict) else batch["input_ids"]
    if log_path:
      with open(log_path, "a") as f:
        f.write(json.dumps([hashlib.sha1(row.tobytes()).hexdigest()[:16] for row in rows]) + "\n")
    if signal_at and step == signal_at[0]:
      os.kill(os.getpid(), signal_at[1])
    yield batch


def run(self, state, train_step, batches, place, **kwargs):
  at = os.environ.get("REWIRE_TEST_SIGNAL", "")
  signal_at = None
  if at:
    step, name = at.split(":")
    signal_at = (int(step) - kwargs.get("start", 0), getattr(signal, f"SIG{name}"))
  log_path = os.environ.get("REWIRE_TEST_FED_LOG", "").replace("{process}", os.environ.get("JAX_PROCESS_ID", "0"))
  return _run(self, state, train_step, _recorded(batches, log_path, signal_at), place, **kwargs)


loop.Loop.run = run


def _failing_save_of(step: str) -> None:
  import concurrent.futures
  import orbax.checkpoint as ocp
  real = ocp.StandardCheckpointHandler.async_save

  async def async_save(self, directory, *args, **kwargs):
    futures = await real(self, directory, *args, **kwargs)
    if f"{os.sep}{step}.orbax-checkpoint-tmp" not in str(getattr(directory, "path", directory)):
      return futures
    failed = concurrent.futures.Future()
    failed.set_exception(OSError(28, "No space left on device"))
    return [*(futures or []), failed]

  ocp.StandardCheckpointHandler.async_save = async_save


if os.environ.get("REWIRE_TEST_FAIL_SAVE"):
  _failing_save_of(os.environ["REWIRE_TEST_FAIL_SAVE"])

if __name__ == "__main__":
  if sys.argv[1:3] == ["-m", "rewire.main"]:
    del sys.argv[1:3]
  app.run(rewire_main.main, flags_parser=rewire_main.parse_flags)
