"""User-facing errors: bad configs, inputs or workdirs, reported as one line without a traceback; and the
noise that would bury that line kept off the output (orbax's logs of a failed save's threads)."""

import logging
import os
import sys


class UserError(Exception):
  """A problem with what the user asked for (config, data, workdir), not a bug in rewire.

  `rewire.main` prints these as a single `rewire: error: ...` line and exits with status 2.
  """


class QuietSaveFailures(logging.Filter):
  """Drops orbax's logs of a failed save's threads, each with its traceback (hundreds of lines for a full
  disk): the run reports the failure in its one line. It also notes the folder of every save whose
  background writes failed (`failed_saves`): in a job of several processes, orbax's finalize thread then
  waits at a barrier for the other processes, which wait for this one in another, so the failure must be
  seen without waiting for that thread (`rewire.checkpoint.Checkpointer._wait_for_saves`)."""

  def __init__(self):
    super().__init__()
    self.failed_saves: dict[str, str] = {}  # folder -> "Type: first line" of the error

  def filter(self, record: logging.LogRecord) -> bool:
    if not record.exc_info:
      return True
    message = record.getMessage()
    if "in background save thread, directory: " in message:
      error = record.exc_info[1]
      first = (str(error).strip().splitlines() or [""])[0][:160]
      self.failed_saves[os.path.abspath(message.split("directory: ", 1)[1].strip())] = f"{type(error).__name__}: {first}"
    if f"{os.sep}orbax{os.sep}" in record.pathname:
      return False
    # asyncio's "exception was never retrieved" of a write that orbax started and then abandoned
    tb = record.exc_info[2]
    while tb is not None:
      if f"{os.sep}orbax{os.sep}" in tb.tb_frame.f_code.co_filename:
        return False
      tb = tb.tb_next
    return True


_QUIET = QuietSaveFailures()


def _quiet_closed_loop_callbacks() -> None:
  """Wraps `sys.unraisablehook`: a failed save's remaining writes complete after orbax closed their event
  loop, and each completion's callback raises "Event loop is closed" where nothing can catch it. Those are
  dropped (the save's own error is reported); anything else goes to the hook that was there."""
  previous = sys.unraisablehook
  if getattr(previous, "rewire_quiet", False):
    return

  def hook(unraisable) -> None:
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
      return
    previous(unraisable)

  hook.rewire_quiet = True
  sys.unraisablehook = hook


def quiet_save_failures() -> QuietSaveFailures:
  """Installs (once) the filter on the loggers that orbax's failed saves write to, and the unraisable-hook
  wrapper; returns the filter, whose `failed_saves` a checkpointer reads."""
  for logger in ("absl", "asyncio"):  # a filter is added to a logger only once
    logging.getLogger(logger).addFilter(_QUIET)
  _quiet_closed_loop_callbacks()
  return _QUIET
