"""The stages: each a step of the method, run from one config by `rewire.main` (or a study's worker).

  pretrain.py        pretraining and language adaptation (one LM run, masked or next-token; resumes on its own)
  pretrain_setup.py  its model, optimizer (forgetting included), shardings and compiled steps
  resume.py          what a resumed run may change;  warm_start.py  starting from another run's params
  new_vocab.py       an adaptation's vocabulary: replaced or extended, how its rows start, which rows train
  finetune.py        task adaptation: body and task head on an English task, embeddings frozen
  assemble.py        new-language embeddings into a task model;  evaluate.py  zero-shot evaluation
  prepare.py         corpus preparation
  multihost.py       a stage run as one process of a multi-process job: joining it, stopping when a peer dies

`run(config, workdir)` validates a config and hands it to its stage's entry point, found in `ENTRY_POINTS`
by a "module:function" string, so that importing the dispatch imports no stage (a study's worker
processes, and `rewire.main`, start fast) and no stage needs to import the dispatch. The `probe` and
`study` and `pipeline` stages live in their own packages and are dispatched the same way.

May import: the core (modules directly in rewire/), rewire.config, rewire.data, rewire.tasks,
rewire.models, rewire.probe, rewire.vocab. Never rewire.study (the study runs stages, not the other way round).
"""

from __future__ import annotations

import importlib

from rewire import config as rconfig
from rewire.errors import UserError

ENTRY_POINTS = {
    "prepare": "rewire.stages.prepare:run",
    "pretrain": "rewire.stages.pretrain:train_and_evaluate",
    "adapt_language": "rewire.stages.pretrain:train_and_evaluate",
    "finetune": "rewire.stages.finetune:train_and_evaluate",
    "assemble": "rewire.stages.assemble:run",
    "evaluate": "rewire.stages.evaluate:run",
    "probe": "rewire.probe.stage:run",
    "study": "rewire.study.graph:run",
    "pipeline": "rewire.study.pipeline:run",
}


def entry_point(stage: str):
  """The function that runs `stage`: `fn(config, workdir) -> summary dict`."""
  if stage not in ENTRY_POINTS:
    raise UserError(f"stage {stage!r} is not implemented; known stages: {sorted(ENTRY_POINTS)}")
  module, _, name = ENTRY_POINTS[stage].partition(":")
  return getattr(importlib.import_module(module), name)


RESUMABLE_STAGES = ("pretrain", "adapt_language")  # the stages that resume, and so may stop early


def run(config, workdir: str, *, stop_after: int | None = None) -> dict:
  """Validates `config` and runs its stage in `workdir`; `stop_after` stops a resumable stage early."""
  rconfig.validate(config)
  if stop_after is None:
    return entry_point(config.stage)(config, workdir)
  if config.stage not in RESUMABLE_STAGES:
    raise UserError(f"--stop_after applies to {' and '.join(RESUMABLE_STAGES)} runs, not {config.stage}")
  return entry_point(config.stage)(config, workdir, stop_after=stop_after)
