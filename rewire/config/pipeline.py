"""The schema of the pipeline (`rewire.study.pipeline`): every stage, for a standard and a forgetting model.

The pipeline's groups are the stages' own schemas (`pretrain`, `adapt`, `finetune`, `evaluate`); its own
keys say which variants and languages to run and how the forgetting and weight-decay variants differ.
"""

from __future__ import annotations

import ml_collections

from rewire.config.engine import add_engine_keys
from rewire.config.evaluate import evaluate_defaults
from rewire.config.finetune import finetune_defaults
from rewire.config.pretrain import adapt_language_defaults, pretrain_defaults
from rewire.config.variants import DEFAULT_VARIANTS, WEIGHT_DECAY


def pipeline_defaults() -> ml_collections.ConfigDict:
  """Every stage, for a standard and a forgetting model: see `rewire/study/pipeline.py`."""
  c = ml_collections.ConfigDict()
  c.stage = "pipeline"
  c.seed = 0
  c.variants = DEFAULT_VARIANTS  # any of standard, forget, weight_decay (rewire.config.variants)
  c.languages = ("es",)
  c.forget_every = 1000          # K for the forgetting variant (the standard one uses 0)
  c.forget_clip_norm = 0.5
  c.forget_until = 0             # > 0: no resets after this update (the last episode runs to the end)
  c.weight_decay = WEIGHT_DECAY  # the weight_decay variant's AdamW weight decay (the others: pretrain.optim's)
  c.include_english = True       # also score the English task model on the English test split
  c.adapt_source = "prepared:data/cc100_{lang}"  # {lang} is replaced by each language
  c.pretrain = pretrain_defaults()
  c.adapt = adapt_language_defaults()
  c.finetune = finetune_defaults()
  c.evaluate = evaluate_defaults()
  return add_engine_keys(c)
