"""A step: a name, an entry point, a config, and the steps it reads; its hash and its output directory.

A step reads another step's output through a reference in its config, `ref(name)` ("<<name>>", inside any
string value, e.g. `prepared:<<data/pretrain>>`), which the worker replaces with that step's directory. The
references are the step's inputs, so the graph cannot disagree with the configs, and the hash is taken
over the config as written (references, not paths): a study moved to another root keeps its hashes.

The hash covers the entry point, the config less `UNHASHED`, and the hashes of the inputs (so a change
reaches every dependent step). `UNHASHED` are the keys that cannot change a result: log, evaluation-free
checkpoint cadence and bookkeeping, data-preparation mechanics, and where and how the steps run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from typing import Any

HASH_CHARS = 8
STAGE_ENTRY = "rewire.stages:run"  # an ordinary stage run: `rewire.stages.run(config, workdir)`
# Dotted key suffixes left out of the hash: they cannot change what a step writes (its weights, metrics
# and summaries), only how often it reports or saves, and how data preparation is carried out.
UNHASHED = ("log_every", "checkpoint_every", "keep_checkpoints", "async_checkpoints", "peak_flops",
            "data.verify_shards", "data.workers", "data.runner", "data.beam_options")
_REF = re.compile(r"<<([^<>]+)>>")


def ref(name: str) -> str:
  """A reference to step `name`'s output directory, for use inside a config string."""
  return f"<<{name}>>"


def refs_in(value: Any) -> set[str]:
  """The step names referenced anywhere in `value` (nested dicts, lists, strings)."""
  if isinstance(value, str):
    return set(_REF.findall(value))
  if isinstance(value, dict):
    return set().union(*(refs_in(v) for v in value.values())) if value else set()
  if isinstance(value, (list, tuple)):
    return set().union(*(refs_in(v) for v in value)) if value else set()
  return set()


def resolve(value: Any, dirs: dict[str, str]) -> Any:
  """`value` with every reference replaced by the directory in `dirs`."""
  if isinstance(value, str):
    return _REF.sub(lambda m: dirs[m.group(1)], value)
  if isinstance(value, dict):
    return {k: resolve(v, dirs) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(resolve(v, dirs) for v in value)
  return value


def _plain(config) -> dict:
  return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def hashed_part(config: dict, prefix: str = "") -> dict:
  """`config` without the UNHASHED keys."""
  out = {}
  for k, v in config.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out[k] = hashed_part(v, key + ".")
    elif not any(key == u or key.endswith("." + u) for u in UNHASHED):
      out[k] = v
  return out


@dataclasses.dataclass
class Step:
  """One job of a graph. `kind`: steps of one kind take about as long (the ETA's unit; default: the
  name's last part); `hosts` > 1: a multi-host step (`rewire.steps.hosts`); `resumes`: a taken-over step
  keeps its directory (its stage resumes from a checkpoint), else the directory is emptied first."""
  name: str
  config: Any                          # a stage config (ml_collections) or a plain dict for `entry`
  entry: str = STAGE_ENTRY             # "module:function", called as function(config, workdir) -> summary
  after: tuple[str, ...] = ()          # further steps that must finish first (beyond the referenced ones)
  kind: str = ""
  resources: dict = dataclasses.field(default_factory=lambda: {"CPU": 1.0})
  hosts: int = 1
  resumes: bool = False
  env: dict = dataclasses.field(default_factory=dict)  # environment variables of its worker(s)

  def __post_init__(self):
    self.kind = self.kind or self.name.rsplit("/", 1)[-1]
    self.after = tuple(self.after)

  @property
  def plain_config(self) -> dict:
    return _plain(self.config)

  @functools.cached_property
  def inputs(self) -> tuple[str, ...]:
    """The steps this one reads or waits for, sorted (read once: the driver asks on every turn)."""
    return tuple(sorted(refs_in(self.plain_config) | set(self.after)))

  def hash(self, input_hashes: dict[str, str]) -> str:
    body = {"entry": self.entry, "config": hashed_part(self.plain_config),
            "inputs": {n: input_hashes[n] for n in self.inputs}}
    text = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def directory(root: str, name: str, digest: str) -> str:
  """A step's output directory: `<root>/<name>-<hash>` (its name's slashes are subdirectories)."""
  return os.path.join(root, f"{name}-{digest}")


def log_path(root: str, name: str, digest: str) -> str:
  """A step's log, under the root's logs/ (one file per step and hash)."""
  return os.path.join(root, "logs", f"{name.replace('/', '__')}-{digest}.log")
