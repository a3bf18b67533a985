"""The keys of a graph's run on Ray (`rewire.steps`), shared by the study and the pipeline.

None of them enters a step's hash: they say where and how the steps run, not what they compute.
"""

from __future__ import annotations

import ml_collections

from rewire.errors import UserError


def add_engine_keys(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds the run keys to a study or pipeline config `c` (in place; returns it)."""
  c.ray_address = ""             # "": $RAY_ADDRESS, else Ray started on this machine; or "auto", HOST:6379,
                                 # ray://HOST:10001 (an existing cluster)
  c.workers = 0                  # the CPUs of the Ray started on this machine (0: every core); each step asks
                                 # for `resources`, so with CPU=1 this many run at once. Unused on a cluster
  c.resources = "CPU=1"          # what every step asks for, NAME=AMOUNT,...: CPU, GPU, or a node's custom resource
  c.pretrain_resources = ""      # what a pretraining step asks for on each of its hosts ("": `resources`)
  c.pretrain_hosts = 1           # hosts of a pretraining step: Ray tasks on distinct nodes, one JAX job
  c.tpu_slice = ""               # e.g. "v4-16": a pretraining step claims a whole TPU slice of this type
  c.step_env = ""                # NAME=VALUE,... set in every step's worker (e.g. XLA_FLAGS=...); a value
                                 # cannot hold a comma
  c.max_retries = 3              # retries of a step whose worker or node died (it resumes from its checkpoint)
  c.lease_s = 60.0               # a RUNNING step whose heartbeat is older than this is taken over
  c.schedule_timeout_s = 300.0   # a step that no node can take fails after this long, naming the resource
  c.rerun_failed = False         # rerun the steps that FAILED (otherwise the graph stops at them)
  c.dry_run = False              # print every step, its hash, its state and what a run would do; run nothing
  return c


def check_engine(config) -> None:
  if int(config.max_retries) < 0:
    raise UserError(f"max_retries must be at least 0, got {config.max_retries}")
  if int(config.pretrain_hosts) < 1:
    raise UserError(f"pretrain_hosts must be at least 1, got {config.pretrain_hosts}")
  if float(config.lease_s) <= 0 or float(config.schedule_timeout_s) <= 0:
    raise UserError("lease_s and schedule_timeout_s must be positive")
  if config.tpu_slice and int(config.pretrain_hosts) != 1:
    raise UserError("tpu_slice claims a whole slice (its host count comes from the slice); leave pretrain_hosts at 1")
