"""The config check every stage runs first: the stage's schema, unknown keys, and the stage's value checks.

`validate(config)` looks the stage up in `SCHEMAS`, compares every key of the config against the stage's
defaults (a misspelt key stops the run with an error naming it and the nearest known key, instead of being
silently ignored), then runs the stage's own value check, all before anything is read or written.
"""

from __future__ import annotations

import difflib
from typing import Callable, NamedTuple

import ml_collections

from rewire.config.evaluate import assemble_defaults, evaluate_defaults
from rewire.config.finetune import check_finetune, finetune_defaults
from rewire.config.pipeline import pipeline_defaults
from rewire.config.prepare import prepare_defaults
from rewire.config.pretrain import adapt_language_defaults, check_pretrain, pretrain_defaults
from rewire.config.probe import check_probe, probe_defaults
from rewire.config.study import check_study, study_defaults
from rewire.errors import UserError


class Schema(NamedTuple):
  defaults: Callable[[], ml_collections.ConfigDict]   # every key of the stage, with its default
  check: Callable[[ml_collections.ConfigDict], None]  # the stage's value check (UserError)


_no_check = lambda config: None  # noqa: E731
SCHEMAS: dict[str, Schema] = {
    "prepare": Schema(prepare_defaults, _no_check),
    "pretrain": Schema(pretrain_defaults, check_pretrain),
    "adapt_language": Schema(adapt_language_defaults, check_pretrain),
    "finetune": Schema(finetune_defaults, check_finetune),
    "assemble": Schema(assemble_defaults, _no_check),
    "evaluate": Schema(evaluate_defaults, _no_check),
    "probe": Schema(probe_defaults, check_probe),
    "study": Schema(study_defaults, check_study),
    "pipeline": Schema(pipeline_defaults, _no_check),
}


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises UserError for an unknown stage, any key its stage does not know, or a value it refuses."""
  stage = config.get("stage")
  if stage not in SCHEMAS:
    raise UserError(f"unknown config.stage {stage!r}; known stages: {sorted(SCHEMAS)}")
  check_keys(config, SCHEMAS[stage].defaults(), "config")
  SCHEMAS[stage].check(config)


def check_keys(cfg, ref, prefix: str) -> None:
  for key in cfg.keys():
    if key not in ref:
      near = difflib.get_close_matches(key, list(ref.keys()), n=1)
      hint = f" (did you mean {prefix}.{near[0]}?)" if near else ""
      raise UserError(f"unknown config key {prefix}.{key}{hint}")
    if isinstance(ref[key], ml_collections.ConfigDict):
      if not isinstance(cfg[key], (ml_collections.ConfigDict, dict)):
        raise UserError(f"config key {prefix}.{key} must be a group of keys, got {cfg[key]!r}")
      check_keys(cfg[key], ref[key], f"{prefix}.{key}")
