"""Config schemas: every stage's keys, defaults and value checks, the presets, and the one check of a config.

A config is an `ml_collections.ConfigDict` that a file in `configs/` builds with `get_config(preset)`.
Each stage's schema lives in one module, with its defaults and the check of its values:

  groups.py     the groups several stages share: data, model, optimizer, forgetting, mesh
  pretrain.py   pretraining and language adaptation
  finetune.py   task adaptation
  probe.py      the probe recipe, the probe stage, and probing during pretraining
  evaluate.py   assembly and zero-shot evaluation
  prepare.py    corpus preparation
  pipeline.py   every stage for both variants;  study.py  the plasticity study
  variants.py   the standard and forgetting variants, and the one recipe that tells them apart
  presets.py    the `tiny` and `base` presets
  schema.py     `validate`: the stage's schema, unknown keys ("did you mean"), its value check

May import: rewire.errors, rewire.models (the family registry: parameter paths), rewire.tasks.names,
rewire.vocab (the names of its methods).
"""

from rewire.config.evaluate import assemble_defaults, evaluate_defaults
from rewire.config.finetune import finetune_defaults
from rewire.config.groups import data_defaults
from rewire.config.pipeline import pipeline_defaults
from rewire.config.prepare import prepare_defaults
from rewire.config.presets import PRESETS, pipeline_preset, pretrain_preset, tiny_stage_config
from rewire.config.pretrain import adapt_language_defaults, pretrain_defaults
from rewire.config.probe import parse_pairs, probe_defaults, probe_during_pretraining
from rewire.config.schema import SCHEMAS, seat_family, validate
from rewire.config.study import study_defaults

__all__ = ["PRESETS", "SCHEMAS", "adapt_language_defaults", "assemble_defaults", "data_defaults",
           "evaluate_defaults", "finetune_defaults", "parse_pairs", "pipeline_defaults", "pipeline_preset",
           "prepare_defaults", "pretrain_defaults", "pretrain_preset", "probe_defaults",
           "probe_during_pretraining", "seat_family", "study_defaults", "tiny_stage_config", "validate"]
