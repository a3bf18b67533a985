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
from rewire.config.engine import check_engine
from rewire.config.pipeline import pipeline_defaults
from rewire.config.prepare import prepare_defaults
from rewire.config.pretrain import adapt_language_defaults, check_pretrain, pretrain_defaults
from rewire.config.probe import check_probe, probe_defaults
from rewire.config.study import check_study, study_defaults
from rewire.errors import UserError
from rewire.models import registry


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
    "pipeline": Schema(pipeline_defaults, check_engine),
}


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises UserError for an unknown stage, any key its stage does not know, or a value it refuses."""
  stage = config.get("stage")
  if stage not in SCHEMAS:
    raise UserError(f"unknown config.stage {stage!r}; known stages: {sorted(SCHEMAS)}")
  check_keys(config, reference(config), "config")
  SCHEMAS[stage].check(config)


def reference(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Every key `config`'s stage knows, with its default: a `model` group that builds a model holds the
  keys of the family it names (`model.family`), and no other family's. A group whose `family` was
  switched on the command line is re-seated first (`seat_family`)."""
  ref = SCHEMAS[config.stage].defaults()
  for group in _model_groups(ref):
    if _has(config, group):
      model = _get(config, group)
      seat_family(model)
      _set(ref, group, registry.family(model.get("family", registry.DEFAULT_FAMILY)).config_group())
  return ref


def seat_family(model: ml_collections.ConfigDict) -> None:
  """`--config.model.family=llama` on a preset built for another family: the group takes the named family's
  keys and defaults, keeping the values of shared keys that were changed from the old family's defaults
  (a group holding any key of neither family is left for `check_keys` to name)."""
  new = registry.family(model.get("family", registry.DEFAULT_FAMILY))
  keys = set(model.keys())
  if keys == set(new.config_group().keys()):
    return
  old = next((f for f in registry.FAMILIES.values() if keys == set(f.config_group().keys())), None)
  if old is None:
    return
  old_defaults, seated = old.config_group(), new.config_group()
  for key in seated.keys():
    if key != "family" and key in keys and model[key] != old_defaults[key]:
      seated[key] = model[key]
  with model.unlocked():
    for key in keys - set(seated.keys()):
      del model[key]
    for key in set(seated.keys()) - {"family"}:
      model[key] = seated[key]


def _model_groups(ref, prefix=()):
  """Paths of the `model` groups (with a `family` key) in a schema, nested stages' included."""
  for key in ref.keys():
    if isinstance(ref[key], ml_collections.ConfigDict):
      if key == "model" and "family" in ref[key]:
        yield prefix + (key,)
      else:
        yield from _model_groups(ref[key], prefix + (key,))


def _has(cfg, path) -> bool:
  for key in path:
    if not isinstance(cfg, (ml_collections.ConfigDict, dict)) or key not in cfg:
      return False
    cfg = cfg[key]
  return True


def _get(cfg, path):
  for key in path:
    cfg = cfg[key]
  return cfg


def _set(cfg, path, value) -> None:
  _get(cfg, path[:-1])[path[-1]] = value


def check_keys(cfg, ref, prefix: str) -> None:
  for key in cfg.keys():
    if key not in ref:
      near = difflib.get_close_matches(key, list(ref.keys()), n=1)
      hint = f" (did you mean {prefix}.{near[0]}?)" if near else ""
      if not near and "family" in ref:
        hint = f" (the {ref.family} family has no such key)"
      raise UserError(f"unknown config key {prefix}.{key}{hint}")
    if isinstance(ref[key], ml_collections.ConfigDict):
      if not isinstance(cfg[key], (ml_collections.ConfigDict, dict)):
        raise UserError(f"config key {prefix}.{key} must be a group of keys, got {cfg[key]!r}")
      check_keys(cfg[key], ref[key], f"{prefix}.{key}")
