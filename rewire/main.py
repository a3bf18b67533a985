"""Command-line entry point: `python -m rewire.main --config=configs/pretrain_forget.py --workdir=runs/forget`.

Kept short on purpose: it parses flags, checks the config and hands it to the stage's
`train_and_evaluate(config, workdir)`. Problems with the config, data or workdir print one
`rewire: error: ...` line and exit with status 2.
"""

from __future__ import annotations

import json
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from rewire import config as rconfig
from rewire.errors import UserError
from rewire.stages import multihost, run

# SIGTERM (a scheduler's preemption): the checkpoint is saved and the run exits with 128 + SIGTERM, what a
# process killed by SIGTERM reports, so Slurm/Kubernetes/TPU queued resources treat it as preempted and
# requeue or restart it rather than count it as done.
PREEMPTED_EXIT = 143
INTERRUPTED_EXIT = 130  # Ctrl-C: 128 + SIGINT, after saving a checkpoint

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file, optionally with a preset: configs/pretrain_forget.py:tiny", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>). An existing run "
                               "there is resumed from its newest checkpoint.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Multi-host: join a job of several processes with jax.distributed.initialize() ('auto': when the "
    "environment shows several processes, as on a TPU pod slice, under Slurm, or with "
    "JAX_COORDINATOR_ADDRESS set).")
_COORDINATOR = flags.DEFINE_string("coordinator", "", "host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS, "
                                   "or detected on TPU VMs and under Slurm)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "processes in the job (default: $JAX_NUM_PROCESSES, "
                                      "or detected)")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "this process's id (default: $JAX_PROCESS_ID, or detected)")
_JOIN_TIMEOUT = flags.DEFINE_integer("join_timeout", multihost.JOIN_TIMEOUT_S, "Multi-host: seconds to wait for "
                                     "every process of the job to join; a job that cannot form then stops with one line.")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout", multihost.HEARTBEAT_TIMEOUT_S, "Multi-host: seconds after which a process that stopped "
    "answering is taken for dead, and the most the others wait for themselves to stop after a peer's error.")
_STOP_AFTER = flags.DEFINE_integer("stop_after", 0, "Training stages: save a checkpoint and stop once this many "
                                   "updates are done, as a preemption would (0: run to the end); rerun to go on.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Check the config against the devices and print the run's shape "
                             "(mesh, parameters, memory and FLOPs per step) as JSON; read no data, write nothing. "
                             "A study or pipeline prints its graph: every step, its hash, its state and what a "
                             "run would do.")
flags.mark_flag_as_required("config")


def default_workdir(config_path: str) -> str:
  stem = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  return os.path.join("runs", stem)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a bad `--config.KEY=...` override reported as one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, UserError) as e:
    _fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    inner = e.args[0] if e.args else e
    msg = inner.args[0] if isinstance(inner, BaseException) and inner.args else str(inner)
    msg = str(msg).strip().split(" Other fields present:")[0]  # ml_collections lists every key after this
    _fail(f"bad --config override: {msg}".replace("\n", " "))


def _fail(message: str, exit_fn=sys.exit) -> None:
  print(f"rewire: error: {message}", file=sys.stderr, flush=True)
  exit_fn(2)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep orbax/absl INFO chatter out of the progress lines
  config_path = config_flags.get_config_filename(flags.FLAGS["config"])
  try:
    _CONFIG.value.get("stage")
  except OSError as e:  # ml_collections reports a config file it could not load only when it is read
    if not os.path.isfile(config_path):
      _fail(f"config file not found: {config_path}")
    last = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
    _fail(f"cannot load config file {config_path}: {last}")
  try:
    multihost.join_job(_DISTRIBUTED.value, coordinator=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                      process_id=_PROCESS_ID.value, join_timeout_s=_JOIN_TIMEOUT.value,
                      heartbeat_timeout_s=_HEARTBEAT_TIMEOUT.value)
  except UserError as e:
    _fail(str(e))
  workdir = _WORKDIR.value or default_workdir(config_path)
  try:
    if _DRY_RUN.value and "dry_run" in _CONFIG.value:  # a graph (study, pipeline) prints its steps
      _CONFIG.value.dry_run = True
    elif _DRY_RUN.value:
      from rewire.stages.pretrain import plan  # only a dry run needs the pretraining stage up front
      rconfig.validate(_CONFIG.value)
      print(json.dumps(plan(_CONFIG.value), indent=2))
      return
    with multihost.PeerWatch():
      summary = run(_CONFIG.value, workdir, stop_after=_STOP_AFTER.value or None)
  except UserError as e:
    _fail(str(e), exit_fn=multihost.leave_after_error)
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    multihost.lost_peer(str(e).strip().splitlines()[0][:300])  # a collective with the other processes failed
  except KeyboardInterrupt:  # outside the training loop (which saves and returns on a first Ctrl-C)
    print("rewire: interrupted", file=sys.stderr)
    sys.exit(INTERRUPTED_EXIT)
  if summary.get("preempted"):
    print(f"rewire: preempted at step {summary['step']}: checkpoint saved; run the same command to resume "
          f"(exit status {PREEMPTED_EXIT})", file=sys.stderr)
    sys.exit(PREEMPTED_EXIT)
  if summary.get("interrupted"):
    print(f"rewire: interrupted at step {summary['step']}: checkpoint saved; run the same command to resume",
          file=sys.stderr)
    sys.exit(INTERRUPTED_EXIT)
  if jax.process_index() != 0:
    return
  if summary.get("step") is not None and summary.get("finished") is False:
    print(f"stopped: {workdir}  step {summary['step']} (--stop_after): checkpoint saved; run the same command "
          "without --stop_after to go on")
    return
  line = closing_line(workdir, summary)
  if line:
    print(line)


def closing_line(workdir: str, summary: dict) -> str | None:
  """The line a finished stage ends with: its result, where the details are."""
  if "valid_loss" in summary:
    return (f"done: {workdir}  step {summary['step']}  valid loss {summary['valid_loss']:.3f}"
            + (f" (unigram baseline {summary['unigram_loss']:.3f})" if summary.get("unigram_loss") else ""))
  best = next((k for k in summary if k.startswith("best_dev_")), None)
  if best:  # fine-tuning
    return (f"done: {workdir}  best dev {best[len('best_dev_'):]} {summary[best]:.1f} at update "
            f"{summary['best_step']} of {summary['steps']} (the checkpoint kept)")
  if "assembled_from" in summary:
    src = summary["assembled_from"]
    return f"done: {workdir}  {summary['architecture']}: the body of {src['task']} with the embeddings of {src['embeddings']}"
  if "results" in summary and os.path.isfile(os.path.join(workdir, "results.md")):  # evaluation
    with open(os.path.join(workdir, "results.md")) as f:
      return f.read().rstrip() + f"\ndone: {workdir}/results.md, results.json"
  return None


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
